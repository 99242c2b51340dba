"""The embedded job store: one SQLite file under the data dir, used by one API process.

Layout: ``<data_dir>/jobs.sqlite3`` (WAL, synchronous=FULL: a SUCCEEDED row survives a
power cut). One process owns the file, so a claim takes a job whatever its previous owner
(a process that is gone) and leases are not needed; the columns are the same as in
PostgreSQL so the manager drives both the same way.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from cinetron.api.jobs.store import (
    CANCELLED,
    COLUMNS,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    UNFINISHED,
    DuplicateKey,
    JobRow,
    JobStore,
    StoreUnavailable,
    migrations,
    page_after_query,
    page_query,
)

_SELECT = (
    "SELECT seq, job_id, idempotency_key, request, seed, state, created_at, updated_at, step, "
    "total, elapsed, attempts, result, video_key, error_code, error_reason, owner, fence, "
    "cancel_requested FROM jobs"
)
_FINISHED = f"state IN ({', '.join(str(s) for s in TERMINAL)})"
_OPEN = f"state IN ({', '.join(str(s) for s in UNFINISHED)})"


def _row(r: sqlite3.Row | None) -> JobRow | None:
    if r is None:
        return None
    values: dict[str, Any] = dict(zip(COLUMNS, tuple(r), strict=True))
    values["cancel_requested"] = bool(values["cancel_requested"])
    return JobRow(**values)


class SqliteJobStore(JobStore):
    shared = False

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "jobs.sqlite3"
        self.describe = f"sqlite:{self.path}"
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except (OSError, sqlite3.Error) as e:  # a clear exit instead of a traceback
            raise SystemExit(
                f"the data dir {data_dir} cannot hold the jobs database and videos ({e}); "
                "point --data-dir / CINETRON_DATA_DIR at a writable folder"
            ) from None
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        for version, _name, sql in migrations("sqlite"):
            if version > current:
                self._db.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[list[Any], int]:
        """(rows, rowcount) of one statement, fetched under the lock."""
        try:
            with self._lock:
                cursor = self._db.execute(sql, args)
                return cursor.fetchall(), cursor.rowcount
        except sqlite3.OperationalError as e:  # locked beyond busy_timeout, disk I/O error
            raise StoreUnavailable(self.describe, e) from e

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[JobRow]:
        return [r for r in map(_row, self._exec(sql, args)[0]) if r is not None]

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> JobRow | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def _changed(self, sql: str, args: tuple[Any, ...]) -> bool:
        return self._exec(sql, args)[1] > 0

    def insert(
        self,
        request: bytes,
        seed: int,
        key: str | None,
        total: int,
        owner: str | None,
        lease_s: float = 0.0,
    ) -> JobRow:
        job_id = uuid.uuid4().hex
        now = time.time()
        try:
            self._exec(
                "INSERT INTO jobs (job_id, idempotency_key, request, seed, state, created_at, "
                "updated_at, total, owner, fence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    key,
                    request,
                    seed,
                    QUEUED,
                    now,
                    now,
                    total,
                    owner,
                    int(owner is not None),
                ),
            )
        except sqlite3.IntegrityError:
            existing = self.by_key(key) if key else None
            if existing is None:
                raise
            raise DuplicateKey(existing) from None
        row = self.row(job_id)
        assert row is not None
        return row

    def row(self, job_id: str) -> JobRow | None:
        return self._one(f"{_SELECT} WHERE job_id = ?", (job_id,))

    def by_key(self, key: str) -> JobRow | None:
        return self._one(f"{_SELECT} WHERE idempotency_key = ?", (key,))

    def page(self, size: int, before_seq: int | None, state: int) -> list[JobRow]:
        return self._rows(*page_query(_SELECT, "?", size, before_seq, state))

    def page_after(self, size: int, after_seq: int | None, ascending: bool) -> list[JobRow]:
        return self._rows(*page_after_query(_SELECT, "?", size, after_seq, ascending))

    def unfinished(self) -> list[JobRow]:
        return self._rows(f"{_SELECT} WHERE {_OPEN} ORDER BY seq")

    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRow | None:
        # One process per file: whoever owned it before is gone.
        before = self.row(job_id)
        self._exec(
            f"UPDATE jobs SET owner = ?, fence = fence + 1, state = ?, updated_at = ? "
            f"WHERE job_id = ? AND {_OPEN}",
            (owner, QUEUED, time.time(), job_id),
        )
        row = self.row(job_id)
        if row is None or row.owner != owner or row.state != QUEUED or before is None:
            return None
        return replace(row, previous_owner=before.owner)

    def claim_next(self, owner: str, lease_s: float) -> JobRow | None:
        nxt = self._one(
            f"{_SELECT} WHERE state = ? AND owner IS NULL ORDER BY seq LIMIT 1", (QUEUED,)
        )
        return None if nxt is None else self.claim(nxt.job_id, owner, lease_s)

    def renew(self, owner: str, lease_s: float) -> dict[str, tuple[int, bool]]:
        rows, _ = self._exec(
            f"SELECT job_id, fence, cancel_requested FROM jobs WHERE owner = ? AND {_OPEN}",
            (owner,),
        )
        return {r[0]: (int(r[1]), bool(r[2])) for r in rows}

    def _fenced(
        self, sets: str, args: tuple[Any, ...], job_id: str, owner: str, fence: int
    ) -> bool:
        return self._changed(
            f"UPDATE jobs SET {sets}, updated_at = ? "
            f"WHERE job_id = ? AND owner = ? AND fence = ? AND {_OPEN}",
            (*args, time.time(), job_id, owner, fence),
        )

    def started(self, job_id: str, owner: str, fence: int) -> bool:
        # A new attempt starts from step 0: the stored progress is this run's.
        return self._fenced(
            "state = ?, attempts = attempts + 1, step = 0, elapsed = 0",
            (RUNNING,),
            job_id,
            owner,
            fence,
        )

    def progress(
        self, job_id: str, owner: str, fence: int, step: int, total: int, elapsed: float
    ) -> bool:
        return self._fenced(
            "step = ?, total = ?, elapsed = ?", (step, total, elapsed), job_id, owner, fence
        )

    def succeed(
        self, job_id: str, owner: str, fence: int, result: bytes, video_key: str, step: int
    ) -> bool:
        return self._fenced(
            "state = ?, result = ?, video_key = ?, step = ?",
            (SUCCEEDED, result, video_key, step),
            job_id,
            owner,
            fence,
        )

    def end(
        self,
        job_id: str,
        state: int,
        code: str,
        reason: str,
        owner: str | None = None,
        fence: int | None = None,
        step: int | None = None,
    ) -> bool:
        sets = "state = ?, error_code = ?, error_reason = ?, step = COALESCE(?, step)"
        args = (state, code, reason, step)
        if fence is not None and owner is not None:
            return self._fenced(sets, args, job_id, owner, fence)
        return self._changed(
            f"UPDATE jobs SET {sets}, updated_at = ? WHERE job_id = ? AND {_OPEN}",
            (*args, time.time(), job_id),
        )

    def release(self, job_id: str, owner: str, fence: int, step: int) -> bool:
        return self._fenced(
            "state = ?, owner = NULL, step = ?", (QUEUED, step), job_id, owner, fence
        )

    def request_cancel(self, job_id: str, reason: str) -> JobRow | None:
        self._exec(
            f"UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ? AND {_OPEN}",
            (time.time(), job_id),
        )
        self._exec(
            "UPDATE jobs SET state = ?, error_code = 'CANCELLED', error_reason = ?, updated_at = ? "
            "WHERE job_id = ? AND state = ? AND owner IS NULL",
            (CANCELLED, reason, time.time(), job_id, QUEUED),
        )
        return self.row(job_id)

    def delete(self, job_id: str) -> JobRow | None:
        row = self.row(job_id)
        if row is None or row.state not in TERMINAL:
            return None
        if not self._changed(f"DELETE FROM jobs WHERE job_id = ? AND {_FINISHED}", (job_id,)):
            return None
        return row

    def expired(self, ttl_s: float, limit: int) -> list[JobRow]:
        return self._rows(
            f"{_SELECT} WHERE {_FINISHED} AND updated_at < ? ORDER BY updated_at LIMIT ?",
            (time.time() - ttl_s, limit),
        )

    def counts(self) -> tuple[int, int]:
        rows, _ = self._exec(  # the state index: finished jobs are not scanned
            "SELECT state, COUNT(*) FROM jobs WHERE state IN (?, ?) GROUP BY state",
            (QUEUED, RUNNING),
        )
        by_state = {int(state): int(n) for state, n in rows}
        return by_state.get(QUEUED, 0), by_state.get(RUNNING, 0)

    def position(self, seq: int) -> int:
        rows, _ = self._exec("SELECT COUNT(*) FROM jobs WHERE state = ? AND seq < ?", (QUEUED, seq))
        return int(rows[0][0])

    def ping(self) -> None:
        self._exec("SELECT 1")
