"""The job-store interface: what ``JobManager`` needs from a database, and nothing more.

Two implementations: ``SqliteJobStore`` (the embedded default: one file under the data dir,
one API process) and ``PostgresJobStore`` (any number of replicas share one database). Both
apply their versioned migrations (``migrations/<dialect>/NNNN_*.sql``) at start.

Ownership and fencing. A replica *claims* a job before it runs it: the claim sets ``owner``
(the replica id), a ``lease_until`` the owner keeps renewing, and increments ``fence``.
Every later write of the run (started, progress, succeeded, ended, released) carries
``(owner, fence)`` and changes nothing unless both still match, so a replica that lost
its lease (it stalled, another replica reclaimed the job) cannot overwrite the new run:
its write returns False and it abandons the job. That is what makes "a job runs to
SUCCEEDED at most once" hold without any clock agreement between replicas: lease times
are the database's own clock.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import grpc

from cinetron.api.errors import ApiError
from cinetron.api_client import pb

S = pb.JobState
QUEUED, RUNNING = S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING
SUCCEEDED, FAILED, CANCELLED = S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED
UNFINISHED = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class JobRow:
    """One row of the ``jobs`` table, the same in every store."""

    seq: int
    job_id: str
    idempotency_key: str | None
    request: bytes  # cinetron.v1.GenerateRequest as submitted (deterministic serialization)
    seed: int
    state: int  # cinetron.v1.JobState
    created_at: float  # seconds since the epoch
    updated_at: float
    step: int
    total: int
    elapsed: float
    attempts: int  # times the job was started
    result: bytes | None  # cinetron.v1.Completed without the video bytes
    video_key: str | None  # where the video store keeps the MP4
    error_code: str | None
    error_reason: str | None
    owner: str | None  # the replica that claimed it
    fence: int  # incremented by every claim
    cancel_requested: bool
    #: Set by a claim only: who held the job before (None: nobody, a fresh or released job).
    previous_owner: str | None = None

    def request_message(self) -> pb.GenerateRequest:
        """The stored request with the seed that was chosen for it."""
        msg = pb.GenerateRequest.FromString(self.request)
        msg.seed = self.seed
        return msg


COLUMNS = tuple(f for f in JobRow.__dataclass_fields__ if f != "previous_owner")


class DuplicateKey(Exception):
    """``insert`` lost a race on the idempotency key: ``row`` is the job that won."""

    def __init__(self, row: JobRow) -> None:
        super().__init__(row.job_id)
        self.row = row


class StoreUnavailable(ApiError):
    """The job database cannot be reached; every job RPC answers UNAVAILABLE meanwhile."""

    def __init__(self, what: str, error: BaseException | str) -> None:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            f"the job store ({what}) is unreachable: {detail}; "
            "accepted jobs are kept, retry in a few seconds",
        )


class JobStore(ABC):
    """Rows of jobs. Methods are blocking and thread-safe; the manager calls them from
    worker threads (``asyncio.to_thread``) so the event loop never waits on the database.
    Every method may raise ``StoreUnavailable``."""

    #: True when several API processes share the store (claims, leases and events matter).
    shared: bool = False
    #: A short description for logs and error messages ("sqlite:/path", "postgresql://host/db").
    describe: str = ""

    @abstractmethod
    def insert(
        self,
        request: bytes,
        seed: int,
        key: str | None,
        total: int,
        owner: str | None,
        lease_s: float = 0.0,
    ) -> JobRow:
        """A new QUEUED job, claimed by ``owner`` when given. Raises ``DuplicateKey``."""

    @abstractmethod
    def row(self, job_id: str) -> JobRow | None: ...

    @abstractmethod
    def by_key(self, key: str) -> JobRow | None: ...

    @abstractmethod
    def page(self, size: int, before_seq: int | None, state: int) -> list[JobRow]:
        """Up to ``size + 1`` jobs, newest first (``seq`` descending)."""

    @abstractmethod
    def page_after(self, size: int, after_seq: int | None, ascending: bool) -> list[JobRow]:
        """Up to ``size + 1`` jobs after ``after_seq``, oldest first when ``ascending``,
        else newest first (cursor paging: the OpenAI-style list)."""

    @abstractmethod
    def unfinished(self) -> list[JobRow]: ...

    @abstractmethod
    def claim(self, job_id: str, owner: str, lease_s: float) -> JobRow | None:
        """Take ``job_id`` if it is unfinished and unowned or its lease expired (or, in a
        store with one process, whatever its owner). The returned row carries the new fence."""

    @abstractmethod
    def claim_next(self, owner: str, lease_s: float) -> JobRow | None:
        """Atomically take the oldest claimable job (``FOR UPDATE SKIP LOCKED``), or None."""

    @abstractmethod
    def renew(self, owner: str, lease_s: float) -> dict[str, tuple[int, bool]]:
        """Extend every lease ``owner`` holds; job id → (fence, cancel requested)."""

    @abstractmethod
    def started(self, job_id: str, owner: str, fence: int) -> bool:
        """RUNNING, attempts + 1. False: the job is no longer this run's (fenced out)."""

    @abstractmethod
    def progress(
        self, job_id: str, owner: str, fence: int, step: int, total: int, elapsed: float
    ) -> bool: ...

    @abstractmethod
    def succeed(
        self, job_id: str, owner: str, fence: int, result: bytes, video_key: str, step: int
    ) -> bool:
        """SUCCEEDED with its video. Called only after the video store holds the object."""

    @abstractmethod
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
        """FAILED or CANCELLED with the reason. With ``fence`` the write is fenced; without,
        it applies to any unfinished job (a job nobody runs)."""

    @abstractmethod
    def release(self, job_id: str, owner: str, fence: int, step: int) -> bool:
        """Back to QUEUED without an owner (this replica is shutting down)."""

    @abstractmethod
    def request_cancel(self, job_id: str, reason: str) -> JobRow | None:
        """Mark ``job_id`` for cancellation. A job nobody runs (queued and unclaimed, or
        its lease expired) ends CANCELLED here and now; a running one is stopped by its
        owner. Returns the row after the change (None: no such job)."""

    @abstractmethod
    def delete(self, job_id: str) -> JobRow | None:
        """Remove a finished job; returns the removed row (None: none was removed)."""

    @abstractmethod
    def expired(self, ttl_s: float, limit: int) -> list[JobRow]:
        """Finished jobs last updated more than ``ttl_s`` ago, oldest first."""

    @abstractmethod
    def counts(self) -> tuple[int, int]:
        """(queued, running) over the whole store."""

    @abstractmethod
    def position(self, seq: int) -> int:
        """Queued jobs ahead of the job with ``seq``."""

    @abstractmethod
    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""

    @abstractmethod
    def close(self) -> None: ...

    def events(self, on_event: Callable[[dict[str, Any]], None]) -> JobEvents | None:
        """The store's cross-replica event channel (None: one process, local events do)."""
        return None


class JobEvents(Protocol):
    """Small JSON payloads between replicas: ``{"k": kind, "j": job_id, …}``."""

    def start(self) -> None: ...
    def publish(self, payload: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def page_query(
    select: str, mark: str, size: int, before_seq: int | None, state: int
) -> tuple[str, tuple[Any, ...]]:
    """``JobStore.page`` as SQL for a dialect whose parameter mark is ``mark``: ``size + 1``
    rows, newest first, before ``before_seq``, in ``state`` (0: any)."""
    where: list[str] = []
    args: list[Any] = []
    if before_seq is not None:
        where.append(f"seq < {mark}")
        args.append(before_seq)
    if state:
        where.append(f"state = {mark}")
        args.append(state)
    sql = select + (" WHERE " + " AND ".join(where) if where else "")
    return sql + f" ORDER BY seq DESC LIMIT {mark}", (*args, size + 1)


def page_after_query(
    select: str, mark: str, size: int, after_seq: int | None, ascending: bool
) -> tuple[str, tuple[Any, ...]]:
    """``JobStore.page_after`` as SQL (see ``page_query``)."""
    op, order = (">", "ASC") if ascending else ("<", "DESC")
    where, args = ("", ()) if after_seq is None else (f" WHERE seq {op} {mark}", (after_seq,))
    return select + where + f" ORDER BY seq {order} LIMIT {mark}", (*args, size + 1)


_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, SQL) of ``migrations/<dialect>/NNNN_name.sql``, in version order."""
    folder = resources.files("cinetron.api.jobs") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations must be numbered 1..N without gaps: {versions}")
    return found
