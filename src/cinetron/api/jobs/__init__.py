"""Persistent jobs: the job-store interface and its two stores, the video-store interface
and its two stores, and the ``JobManager`` the RPCs call (docs/scale-out.md).

| setting | store |
|---|---|
| ``CINETRON_DATABASE_URL`` unset | ``SqliteJobStore``: ``<data_dir>/jobs.sqlite3``, one process |
| ``CINETRON_DATABASE_URL=postgresql://…`` | ``PostgresJobStore``: any number of replicas |
| ``CINETRON_VIDEO_URL`` unset | ``LocalVideoStore``: ``<data_dir>/videos/`` |
| ``CINETRON_VIDEO_URL=s3://bucket/prefix`` | ``S3VideoStore`` (``AWS_ENDPOINT_URL`` etc.) |
"""

from __future__ import annotations

from pathlib import Path

from cinetron.api.jobs.manager import JobManager, LeaseLost, Planner
from cinetron.api.jobs.store import JobRow, JobStore, StoreUnavailable
from cinetron.api.jobs.videos import VideoStore, open_video_store

__all__ = [
    "JobManager",
    "JobRow",
    "JobStore",
    "LeaseLost",
    "Planner",
    "StoreUnavailable",
    "VideoStore",
    "open_job_store",
    "open_video_store",
]


def open_job_store(database_url: str, data_dir: Path) -> JobStore:
    """``postgresql://…`` → PostgreSQL; empty → SQLite under ``data_dir``."""
    if not database_url:
        from cinetron.api.jobs.sqlite import SqliteJobStore

        return SqliteJobStore(data_dir)
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise SystemExit(
            "--database-url must be a postgresql://USER:PASSWORD@HOST:PORT/DB URL (or empty "
            f"for the embedded SQLite store), got {database_url.split('://')[0]}://…"
        )
    from cinetron.api.jobs.postgres import PostgresJobStore

    return PostgresJobStore(database_url)
