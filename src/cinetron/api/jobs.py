"""Persistent jobs: SQLite for state, one MP4 file per finished job, under the data dir.

Layout: ``<data_dir>/jobs.sqlite3`` and ``<data_dir>/videos/<job_id>.mp4``. The video
is written atomically *before* the row says SUCCEEDED, so a SUCCEEDED job always has
its file. On start, jobs left QUEUED or RUNNING by a previous process are run again
(the seed is stored, so the video is the same) or marked FAILED with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cinetron.api import convert
from cinetron.api.engine import Engine, Finished, Hub, Queued, Started, Ticket
from cinetron.api.errors import ApiError, not_found, to_api_error
from cinetron.api.logs import log
from cinetron.api_client import pb
from cinetron.core.errors import Cancelled
from cinetron.core.files import write_bytes_atomic
from cinetron.core.pipeline import Progress
from cinetron.core.plan import Plan

S = pb.JobState
UNFINISHED = (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING)
TERMINAL = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
_PROGRESS_WRITE_INTERVAL_S = 0.5
# A stored request → its validated plan for the served model (Unavailable until ready).
Planner = Callable[[pb.GenerateRequest, str], Plan]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    request BLOB NOT NULL,          -- cinetron.v1.GenerateRequest as submitted
    seed INTEGER NOT NULL,          -- the seed used (chosen at submit time when unset)
    state INTEGER NOT NULL,         -- cinetron.v1.JobState
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    elapsed REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    result BLOB,                    -- cinetron.v1.Completed without the video bytes
    video_path TEXT,
    error_code TEXT,
    error_reason TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class JobStore:
    """The SQLite side. Called from the loop thread; statements are short."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.videos = data_dir / "videos"
        try:
            self.videos.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(data_dir / "jobs.sqlite3", check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a SUCCEEDED row survives a power cut
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:  # a clear exit instead of a traceback
            raise SystemExit(
                f"the data dir {data_dir} cannot hold the jobs database and videos ({e}); "
                "point --data-dir / CINETRON_DATA_DIR at a writable folder"
            ) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        with self._lock, self._db:
            return self._db.execute(sql, args)

    def insert(self, request: pb.GenerateRequest, seed: int, key: str | None, total: int) -> str:
        job_id = uuid.uuid4().hex
        now = time.time()
        self._exec(
            "INSERT INTO jobs (job_id, idempotency_key, request, seed, state, created_at, "
            "updated_at, total) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                key,
                request.SerializeToString(deterministic=True),
                seed,
                S.JOB_STATE_QUEUED,
                now,
                now,
                total,
            ),
        )
        return job_id

    def row(self, job_id: str) -> sqlite3.Row | None:
        return self._exec("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()

    def by_key(self, key: str) -> sqlite3.Row | None:
        return self._exec("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()

    def update(self, job_id: str, **fields: object) -> None:
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._exec(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*fields.values(), job_id))

    def unfinished(self) -> list[sqlite3.Row]:
        return self._exec(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY seq", UNFINISHED
        ).fetchall()

    def page(self, size: int, before_seq: int | None, state: int) -> list[sqlite3.Row]:
        where, args = [], []
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        if state:
            where.append("state = ?")
            args.append(state)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        return self._exec(sql + " ORDER BY seq DESC LIMIT ?", (*args, size + 1)).fetchall()

    def page_after(self, size: int, after_seq: int | None, ascending: bool) -> list[sqlite3.Row]:
        """Up to ``size + 1`` rows after ``after_seq`` in creation order or newest first."""
        op, order = (">", "ASC") if ascending else ("<", "DESC")
        where, args = ("", ()) if after_seq is None else (f" WHERE seq {op} ?", (after_seq,))
        sql = f"SELECT * FROM jobs{where} ORDER BY seq {order} LIMIT ?"
        return self._exec(sql, (*args, size + 1)).fetchall()

    def delete(self, job_id: str) -> None:
        """The row first, then the file: a crash in between leaves an orphan file, never a
        SUCCEEDED row without its video."""
        row = self.row(job_id)
        self._exec("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        if row is not None and row["video_path"]:
            Path(row["video_path"]).unlink(missing_ok=True)

    @staticmethod
    def request_of(row: sqlite3.Row) -> pb.GenerateRequest:
        msg = pb.GenerateRequest.FromString(row["request"])
        msg.seed = row["seed"]
        return msg

    def to_message(self, row: sqlite3.Row, include_video: bool = False) -> pb.Job:
        job = pb.Job(
            job_id=row["job_id"],
            state=row["state"],
            request=pb.GenerateRequest.FromString(row["request"]),
            idempotency_key=row["idempotency_key"] or "",
            create_time=_ts(row["created_at"]),
            update_time=_ts(row["updated_at"]),
            progress=pb.Progress(
                step=row["step"], total=row["total"], elapsed_seconds=row["elapsed"]
            ),
            attempts=row["attempts"],
            seed=row["seed"],
        )
        if row["result"] is not None:
            job.result.CopyFrom(pb.Completed.FromString(row["result"]))
            if include_video and row["video_path"]:
                job.result.video = Path(row["video_path"]).read_bytes()
        if row["error_code"]:
            job.error.CopyFrom(
                pb.JobEnded(state=row["state"], code=row["error_code"], reason=row["error_reason"])
            )
        return job


class JobManager:
    """Jobs on top of the engine: submit, watch, cancel, list, and recovery after restart."""

    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        planner: Planner,
        resume: bool,
        max_attempts: int,
    ) -> None:
        self.store = store
        self.engine = engine
        self._plan = planner  # raises Unavailable while the transport is not ready
        self.resume = resume
        self.max_attempts = max_attempts
        self._live: dict[str, Ticket] = {}
        self._hubs: dict[str, Hub] = {}  # job events, re-published after they are stored
        self._user_cancelled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- RPCs ----------------------------------------------------------------------------

    def submit(self, msg: pb.GenerateRequest, key: str, request_id: str) -> tuple[pb.Job, bool]:
        convert.check_idempotency_key(key)
        if key:
            row = self.store.by_key(key)
            if row is not None:
                if row["request"] != msg.SerializeToString(deterministic=True):
                    raise ApiError(
                        grpc.StatusCode.ALREADY_EXISTS,
                        f"idempotency_key: {key!r} was already used for job {row['job_id']} "
                        "with a different request; use a new key for a new job",
                    )
                return self.store.to_message(row), True
        seeded = convert.with_seed(msg)
        plan = self._plan(seeded, request_id)
        self.engine.check_capacity()
        job_id = self.store.insert(msg, seeded.seed, key or None, plan.total_steps)
        self._start(job_id, plan, request_id, force=True)
        log("job_submitted", request_id=request_id, job_id=job_id)
        return self.get(job_id), False

    def get(self, job_id: str, include_video: bool = False) -> pb.Job:
        row = self.store.row(job_id)
        if row is None:
            raise not_found(job_id)
        return self.store.to_message(row, include_video)

    def cancel(self, job_id: str) -> pb.Job:
        row = self.store.row(job_id)
        if row is None:
            raise not_found(job_id)
        if row["state"] in UNFINISHED:
            ticket = self._live.get(job_id)
            if ticket is not None:
                self._user_cancelled.add(job_id)
                self.engine.cancel(ticket)  # the driver stores CANCELLED when the loop stops
            else:  # waiting for the transport after a restart
                self._end(job_id, S.JOB_STATE_CANCELLED, "CANCELLED", "cancelled by CancelJob")
        return self.get(job_id)

    def list_after(self, after: str, limit: int, ascending: bool) -> tuple[list[pb.Job], bool]:
        """Up to ``limit`` jobs after the job ``after`` (empty: from the first), oldest first
        when ``ascending`` else newest first, and whether more follow (cursor paging by id)."""
        after_seq = None
        if after:
            row = self.store.row(after)
            if row is None:
                raise not_found(after)
            after_seq = row["seq"]
        rows = self.store.page_after(limit, after_seq, ascending)
        return [self.store.to_message(r) for r in rows[:limit]], len(rows) > limit

    def list(self, size: int, token: str, state: int) -> tuple[list[pb.Job], str]:
        size = convert.page_size(size)
        if state not in S.values():  # proto3 enums are open: an unknown number arrives as is
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"state: unknown JobState {state}; expected one of "
                f"{', '.join(f'{S.Name(v)} ({v})' for v in S.values())}",
            )
        before = None
        if token:
            try:
                before = int(base64.urlsafe_b64decode(token.encode()).decode())
                if not 0 < before < 2**63:  # SQLite INTEGER range; seq starts at 1
                    raise ValueError(before)
            except (ValueError, UnicodeDecodeError):
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "page_token: not a token from ListJobsResponse.next_page_token; "
                    "leave it empty for the first page",
                ) from None
        rows = self.store.page(size, before, state)
        nxt = ""
        if len(rows) > size:
            rows = rows[:size]
            nxt = base64.urlsafe_b64encode(str(rows[-1]["seq"]).encode()).decode()
        return [self.store.to_message(r) for r in rows], nxt

    def delete(self, job_id: str) -> None:
        """Forget a finished job and its video. An unfinished job must be cancelled first,
        so a running generation never writes a video for a row that is gone."""
        row = self.store.row(job_id)
        if row is None:
            raise not_found(job_id)
        if row["state"] in UNFINISHED:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {job_id} is {S.Name(row['state'])[10:]}; cancel it first and delete "
                "it once it has ended",
            )
        self.store.delete(job_id)
        log("job_deleted", job_id=job_id)

    async def watch(self, job_id: str) -> AsyncIterator[pb.GenerateEvent]:
        announced = False
        while True:
            hub = self._hubs.get(job_id)
            if hub is not None:
                async for event in hub.events():
                    message = self._event_message(job_id, event)
                    if message is not None:
                        yield message
                return
            row = self.store.row(job_id)
            if row is None:
                raise not_found(job_id)
            if row["state"] in TERMINAL:
                yield self._final_message(row)
                return
            # Unfinished but not running: waiting for the backend after a restart.
            if not announced:
                yield pb.GenerateEvent(queued=pb.Queued(position=0, request_id=job_id))
                announced = True
            await asyncio.sleep(0.5)

    # -- recovery ------------------------------------------------------------------------

    def fail_unfinished(self) -> None:
        """Without resume: each job left by a previous process ends FAILED with the reason."""
        for row in self.store.unfinished():
            self._end(
                row["job_id"],
                S.JOB_STATE_FAILED,
                "ABORTED",
                f"the API server restarted while the job was {S.Name(row['state'])[10:]} "
                f"(step {row['step']} of {row['total']}) and resuming is off; submit it again",
            )

    def resume_unfinished(self) -> None:
        """With resume: run each unfinished job again, unless it was tried too often."""
        for row in self.store.unfinished():
            job_id = row["job_id"]
            if job_id in self._live:
                continue
            if row["attempts"] >= self.max_attempts:
                self._end(
                    job_id,
                    S.JOB_STATE_FAILED,
                    "ABORTED",
                    f"the API server stopped during each of {row['attempts']} attempts; "
                    "giving up so a job that crashes the server cannot loop",
                )
                continue
            try:
                plan = self._plan(JobStore.request_of(row), job_id)
            except Exception as e:  # e.g. the served model changed and the request no longer fits
                err = to_api_error(e, job_id)
                self._end(
                    job_id,
                    S.JOB_STATE_FAILED,
                    err.code.name,
                    f"could not resume after a restart: {err.message}",
                )
                continue
            log("job_resumed", job_id=job_id, attempts=row["attempts"], last_step=row["step"])
            self._start(job_id, plan, job_id, force=True)

    # -- driving one job -----------------------------------------------------------------

    def _start(self, job_id: str, plan: Plan, request_id: str, force: bool) -> None:
        ticket = Ticket(plan, request_id)
        self._live[job_id] = ticket
        self._hubs[job_id] = Hub()
        task = asyncio.get_running_loop().create_task(self._drive(job_id, ticket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.engine.admit(ticket, force=force)

    async def _drive(self, job_id: str, ticket: Ticket) -> None:
        hub = self._hubs[job_id]
        last_write = 0.0
        try:
            async for event in ticket.events():
                if isinstance(event, Started):
                    row = self.store.row(job_id)
                    attempts = (row["attempts"] if row else 0) + 1
                    self.store.update(job_id, state=S.JOB_STATE_RUNNING, attempts=attempts)
                elif isinstance(event, Progress):
                    now = time.monotonic()
                    if now - last_write >= _PROGRESS_WRITE_INTERVAL_S or event.step == event.total:
                        self.store.update(
                            job_id, step=event.step, total=event.total, elapsed=event.elapsed
                        )
                        last_write = now
                elif isinstance(event, Finished):
                    event = await self._finish(job_id, ticket, event)
                hub.publish(event)
        finally:
            self._live.pop(job_id, None)
            self._hubs.pop(job_id, None)
            self._user_cancelled.discard(job_id)

    async def _finish(self, job_id: str, ticket: Ticket, event: Finished) -> Finished:
        """Store the outcome; returns the event watchers get (a failure if storing failed)."""
        if event.result is not None:
            path = self.store.videos / f"{job_id}.mp4"
            try:
                await asyncio.to_thread(write_bytes_atomic, path, event.result.mp4)
            except OSError as e:
                # Disk full or an unwritable data dir: the job ends FAILED with the reason
                # (an escaping exception would leave it RUNNING and its watchers waiting).
                # write_bytes_atomic removed its temporary file, so no partial MP4 is left.
                code = "RESOURCE_EXHAUSTED" if e.errno == errno.ENOSPC else "INTERNAL"
                self._end(
                    job_id,
                    S.JOB_STATE_FAILED,
                    code,
                    f"the video was generated but could not be stored at {path}: "
                    f"{e.strerror or e}; free disk space or make the data dir writable, "
                    "then submit the job again",
                )
                return Finished(error=e)
            completed = convert.completed_message(event.result, include_video=False)
            self.store.update(
                job_id,
                state=S.JOB_STATE_SUCCEEDED,
                result=completed.SerializeToString(),
                video_path=str(path),
                step=event.result.last_step,
            )
            log("job_succeeded", job_id=job_id, path=path)
            return event
        error = event.error
        assert error is not None
        if isinstance(error, Cancelled) and job_id in self._user_cancelled:
            self._end(
                job_id,
                S.JOB_STATE_CANCELLED,
                "CANCELLED",
                f"cancelled by CancelJob after step {ticket.last_step}",
            )
        elif isinstance(error, Cancelled) and self.engine.closed:
            # Shutting down: leave it unfinished so the next start resumes it.
            self.store.update(job_id, state=S.JOB_STATE_QUEUED)
            log("job_interrupted", job_id=job_id, last_step=ticket.last_step)
        else:
            err = to_api_error(error, job_id)
            self._end(job_id, S.JOB_STATE_FAILED, err.code.name, err.message)
        return event

    def _end(self, job_id: str, state: int, code: str, reason: str) -> None:
        self.store.update(job_id, state=state, error_code=code, error_reason=reason)
        log("job_ended", job_id=job_id, state=S.Name(state), code=code, reason=reason)

    # -- messages ------------------------------------------------------------------------

    def _event_message(self, job_id: str, event: object) -> pb.GenerateEvent | None:
        if isinstance(event, Queued):
            return pb.GenerateEvent(queued=pb.Queued(position=event.position, request_id=job_id))
        if isinstance(event, Progress):
            return pb.GenerateEvent(progress=convert.progress_message(event))
        if isinstance(event, Finished):
            row = self.store.row(job_id)
            assert row is not None
            if event.result is not None:
                return pb.GenerateEvent(completed=convert.completed_message(event.result))
            return self._final_message(row)
        return None

    def _final_message(self, row: object) -> pb.GenerateEvent:
        job = self.store.to_message(row, include_video=True)  # type: ignore[arg-type]
        if job.state == S.JOB_STATE_SUCCEEDED:
            return pb.GenerateEvent(completed=job.result)
        if job.state in UNFINISHED:  # interrupted by shutdown; resumed on the next start
            return pb.GenerateEvent(
                job_ended=pb.JobEnded(
                    state=job.state,
                    code="UNAVAILABLE",
                    reason="the API server is shutting down; watch again later",
                )
            )
        return pb.GenerateEvent(job_ended=job.error)
