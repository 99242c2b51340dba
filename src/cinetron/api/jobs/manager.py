"""Persistent jobs on top of the engine: submit, get, watch, cancel, list, delete.

The manager runs a job only after it claimed it in the store (``JobStore.claim*``), and
writes every step of the run fenced by that claim (owner + fence), so whichever store
backs it — SQLite for one process, PostgreSQL for many replicas — the rules are the same:

- SQLite (one process): a submitted job is claimed at once and admitted to the engine's
  FIFO, as it always was; after a restart the unfinished jobs are claimed again and re-run
  from their stored seed (``resume_unfinished``), or FAILED (``fail_unfinished``).
- PostgreSQL (shared): a replica claims a job when it has a free slot (the submitting
  replica first, else any replica's claim loop, woken by NOTIFY and every ``poll_s``),
  renews the leases of what it holds every ``lease_s / 3``, and takes over jobs whose
  owner's lease expired. Events reach watchers on other replicas through the store.

The video is stored (``VideoStore.put``) before the row says SUCCEEDED. Public methods
are synchronous and may be called from any thread (the gRPC handlers call them through
``asyncio.to_thread`` so the event loop never waits on the database); whatever touches the
engine is handed to the loop thread.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cinetron.api import convert
from cinetron.api.engine import Engine, Finished, Hub, Queued, Started, Ticket
from cinetron.api.errors import ApiError, not_found, to_api_error
from cinetron.api.jobs.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    UNFINISHED,
    DuplicateKey,
    JobEvents,
    JobRow,
    JobStore,
    StoreUnavailable,
)
from cinetron.api.jobs.videos import VideoMissing, VideoStore, VideoStoreError
from cinetron.api.logs import log
from cinetron.api.metrics import Metrics
from cinetron.api_client import pb
from cinetron.core.errors import Cancelled, Unavailable
from cinetron.core.pipeline import Progress
from cinetron.core.plan import Plan

S = pb.JobState
_PROGRESS_WRITE_INTERVAL_S = 0.5
# A stored request → its validated plan for the served model (Unavailable until ready).
Planner = Callable[[pb.GenerateRequest, str], Plan]
T = TypeVar("T")


class LeaseLost(Cancelled):
    """Another replica took the job over (this one stalled past its lease)."""


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def replica_name() -> str:
    """This process's id as an owner: host (the pod name on Kubernetes), pid, a nonce."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Flag:
    value: bool = False


@dataclass
class _Run:
    """A job this replica claimed and runs: its ticket, watchers' hub and its claim."""

    ticket: Ticket
    fence: int
    claimed_at: float = field(default_factory=time.monotonic)
    hub: Hub = field(default_factory=Hub)
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    user_cancelled: bool = False
    lost: bool = False
    finishing: bool = False


class JobManager:
    """Jobs on top of the engine and a job store (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        planner: Planner,
        resume: bool,
        max_attempts: int,
        *,
        videos: VideoStore,
        metrics: Metrics | None = None,
        lease_s: float = 30.0,
        poll_s: float = 1.0,
        max_queued_jobs: int = 1000,
        ttl_s: float = 0.0,
        video_url_ttl_s: int = 3600,
        health_interval_s: float = 2.0,
        is_ready: Callable[[], bool] = lambda: True,
        on_health: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.videos = videos
        self.engine = engine
        self._plan = planner  # raises Unavailable while the transport is not ready
        self.resume = resume
        self.max_attempts = max_attempts
        self.metrics = metrics if metrics is not None else engine.metrics
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.max_queued_jobs = max_queued_jobs
        self.ttl_s = ttl_s
        self.video_url_ttl_s = video_url_ttl_s
        self.health_interval_s = health_interval_s
        self._is_ready = is_ready
        self._on_health = on_health
        self.replica = replica_name()
        self.store_ok = True
        self.store_reason = ""
        self._runs: dict[str, _Run] = {}
        self._followers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._events: JobEvents | None = None
        self._closing = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop and start the background work the store needs."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        spawn = self._loop.create_task
        self._background.append(spawn(self._health_loop()))
        if self.store.shared:
            self._events = self.store.events(self._on_event_threadsafe)
            if self._events is not None:
                await asyncio.to_thread(self._events.start)
            self._background += [spawn(self._lease_loop()), spawn(self._claim_loop())]
        if self.ttl_s > 0:
            self._background.append(spawn(self._sweep_loop()))
        log(
            "job_store_open",
            store=self.store.describe,
            videos=self.videos.describe,
            replica=self.replica,
            shared=self.store.shared,
            lease_s=self.lease_s if self.store.shared else None,
        )

    async def close(self, timeout: float = 5.0) -> None:
        """After ``engine.close()``: let the drivers record what happened, then stop."""
        self._closing = True
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._events is not None:
            await asyncio.to_thread(self._events.close)

    # -- RPCs ----------------------------------------------------------------------------

    def submit(self, msg: pb.GenerateRequest, key: str, request_id: str) -> tuple[pb.Job, bool]:
        convert.check_idempotency_key(key)
        request = msg.SerializeToString(deterministic=True)
        if key:
            row = self.store.by_key(key)
            if row is not None:
                return self._replay(row, request, key), True
        seeded = convert.with_seed(msg)
        plan = self._plan(seeded, request_id)
        claim = self._admit()
        try:
            row = self.store.insert(
                request,
                seeded.seed,
                key or None,
                plan.total_steps,
                self.replica if claim else None,
                self.lease_s,
            )
        except DuplicateKey as d:  # the same key submitted at the same time elsewhere
            return self._replay(d.row, request, key), True
        if claim:
            self._on_loop(self._start, row, plan, request_id)
        else:
            self._publish({"k": "q"})
        log("job_submitted", request_id=request_id, job_id=row.job_id, claimed=claim)
        return self.get(row.job_id), False

    def get(self, job_id: str, include_video: bool = False) -> pb.Job:
        return self._message(self._existing(job_id), include_video)

    def cancel(self, job_id: str) -> pb.Job:
        row = self._existing(job_id)
        if row.state in UNFINISHED:
            if job_id in self._runs:
                self._on_loop(self._cancel_run, job_id)
            elif not self.store.shared:  # waiting for the transport after a restart
                self.store.end(job_id, CANCELLED, "CANCELLED", "cancelled by CancelJob")
                log("job_ended", job_id=job_id, state="CANCELLED", code="CANCELLED")
            else:
                after = self.store.request_cancel(job_id, "cancelled by CancelJob before it ran")
                ended = after is not None and after.state in TERMINAL
                self._publish({"k": "s" if ended else "c", "j": job_id})
        return self.get(job_id)

    def delete(self, job_id: str) -> pb.Job:
        """Remove a finished job and its video (returned as it was, without the video)."""
        row = self._existing(job_id)
        if row.state in UNFINISHED:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {job_id} is {S.Name(row.state)[10:]}; CancelJob it first, then DeleteJob",
            )
        deleted = self.store.delete(job_id)
        if deleted is None:
            raise not_found(job_id)
        self._delete_video(deleted)
        log("job_deleted", job_id=job_id)
        return self._message(deleted)

    def list_after(self, after: str, limit: int, ascending: bool) -> tuple[list[pb.Job], bool]:
        """Up to ``limit`` jobs after the job ``after`` (empty: from the first), oldest first
        when ``ascending`` else newest first, and whether more follow (cursor paging by id)."""
        after_seq = None if not after else self._existing(after).seq
        rows = self.store.page_after(limit, after_seq, ascending)
        return [self._message(r) for r in rows[:limit]], len(rows) > limit

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
            nxt = base64.urlsafe_b64encode(str(rows[-1].seq).encode()).decode()
        return [self._message(r) for r in rows], nxt

    async def watch(self, job_id: str) -> AsyncIterator[pb.GenerateEvent]:
        announced = False
        while True:
            run = self._runs.get(job_id)
            if run is not None:
                lost = False
                async for event in run.hub.events():
                    if isinstance(event, Finished) and isinstance(event.error, LeaseLost):
                        lost = True  # another replica runs it now: follow it there
                        break
                    message = await self._event_message(job_id, event)
                    if message is not None:
                        yield message
                if not lost:
                    return
                continue
            row = await asyncio.to_thread(self._existing, job_id)
            if row.state in TERMINAL:
                yield await self._final_message(row)
                return
            if self.store.shared:
                ended = _Flag()
                async for message in self._follow(job_id, ended):
                    yield message
                if ended.value:
                    return
                continue
            # Unfinished but not running: waiting for the backend after a restart.
            if not announced:
                yield pb.GenerateEvent(queued=pb.Queued(position=0, request_id=job_id))
                announced = True
            await asyncio.sleep(0.5)

    # -- recovery (one process per store) --------------------------------------------------

    def fail_unfinished(self) -> None:
        """Without resume: each job left by a previous process ends FAILED with the reason."""
        if self.store.shared:
            return  # other replicas run them; reclaimed ones fail in _take instead
        for row in self.store.unfinished():
            self._end_now(
                row.job_id,
                FAILED,
                "ABORTED",
                f"the API server restarted while the job was {S.Name(row.state)[10:]} "
                f"(step {row.step} of {row.total}) and resuming is off; submit it again",
            )

    def resume_unfinished(self) -> None:
        """With resume: claim and run each unfinished job again (SQLite: at once, since its
        previous owner is gone; shared stores: the claim loop takes expired leases)."""
        if self.store.shared:
            self._wake_claimer()
            return
        for row in self.store.unfinished():
            if row.job_id in self._runs:
                continue
            claimed = self.store.claim(row.job_id, self.replica, self.lease_s)
            if claimed is not None:
                self._take(claimed)

    # -- claiming ------------------------------------------------------------------------

    def _free_slot(self) -> bool:
        e = self.engine
        return not e.closed and not self._closing and e.running + e.queued < e.max_concurrency

    def _admit(self) -> bool:
        """Whether this replica takes a new job now (raises when none may be accepted)."""
        if not self.store.shared:
            self.engine.check_capacity()
            return True
        if self.engine.closed:
            raise Unavailable("the API server is shutting down")
        queued, _ = self.store.counts()
        if queued >= self.max_queued_jobs:
            self.metrics.rejected.inc()
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the shared job queue is full ({queued} queued, CINETRON_MAX_QUEUED_JOBS="
                f"{self.max_queued_jobs}); retry after 5000 ms (trailing metadata "
                "retry-after-ms)",
                (("retry-after-ms", "5000"),),
            )
        return self._free_slot() and self._is_ready()

    def _take(self, row: JobRow) -> None:
        """Run a job this replica just claimed, or end it when it must not run again."""
        job_id = row.job_id
        if row.previous_owner not in (None, self.replica):
            self.metrics.job_reclaims.inc()
            log("job_reclaimed", job_id=job_id, previous_owner=row.previous_owner,
                attempts=row.attempts, last_step=row.step)  # fmt: skip

        def end(state: int, code: str, reason: str) -> None:
            if self.store.end(job_id, state, code, reason, self.replica, row.fence):
                log("job_ended", job_id=job_id, state=S.Name(state), code=code, reason=reason)
                self._publish({"k": "s", "j": job_id})

        if row.cancel_requested:
            end(CANCELLED, "CANCELLED", "cancelled by CancelJob before it ran")
            return
        if row.attempts > 0 and row.previous_owner is not None and not self.resume:
            end(FAILED, "ABORTED", f"the API replica running it stopped (step {row.step} of "
                f"{row.total}) and resuming is off; submit it again")  # fmt: skip
            return
        if row.attempts >= self.max_attempts:
            end(FAILED, "ABORTED", f"the API server stopped during each of {row.attempts} "
                "attempts; giving up so a job that crashes the server cannot loop")  # fmt: skip
            return
        try:
            plan = self._plan(row.request_message(), job_id)
        except Unavailable:  # the backend went away between the check and the claim
            self.store.release(job_id, self.replica, row.fence, row.step)
            return
        except Exception as e:  # e.g. the served model changed and the request no longer fits
            err = to_api_error(e, job_id)
            end(FAILED, err.code.name, f"could not resume after a restart: {err.message}")
            return
        if row.attempts:
            log("job_resumed", job_id=job_id, attempts=row.attempts, last_step=row.step)
        self._on_loop(self._start, row, plan, job_id)

    def _claim_some(self) -> int:
        """Worker thread: claim jobs while this replica has free slots."""
        taken = 0
        while self._free_slot() and self._is_ready():
            row = self.store.claim_next(self.replica, self.lease_s)
            if row is None:
                break
            self._take(row)
            taken += 1
        return taken

    def _wake_claimer(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            try:
                await asyncio.to_thread(self._claim_some)
            except StoreUnavailable:
                pass  # the health loop reports it; claims resume when the store is back
            except Exception as e:  # never let the loop die
                log("job_claim_error", error=repr(e))

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not self._runs:
                continue
            asked = time.monotonic()
            try:
                held = await asyncio.to_thread(self.store.renew, self.replica, self.lease_s)
            except StoreUnavailable:
                continue
            self.metrics.lease_renewals.inc(len(held))
            for job_id, run in list(self._runs.items()):
                if run.finishing or run.lost or run.claimed_at > asked:
                    continue
                mine = held.get(job_id)
                if mine is None or mine[0] != run.fence:
                    self._lose(job_id, "its lease was taken over by another replica")
                elif mine[1] and not run.user_cancelled:
                    self._cancel_run(job_id)  # a CancelJob whose notification we missed

    # -- events between replicas -----------------------------------------------------------

    def _publish(self, payload: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.publish(payload)

    def _on_event_threadsafe(self, payload: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_event, payload)

    def _on_event(self, payload: dict[str, Any]) -> None:
        kind, job_id = payload.get("k"), payload.get("j")
        if kind in ("q", "resync"):
            self._wake_claimer()
        if kind == "c" and isinstance(job_id, str) and job_id in self._runs:
            self._cancel_run(job_id)
        targets = self._followers.values() if kind == "resync" else [
            self._followers.get(job_id, set()) if isinstance(job_id, str) else set()
        ]  # fmt: skip
        for queues in targets:
            for q in queues:
                q.put_nowait(payload)

    async def _follow(self, job_id: str, ended: _Flag) -> AsyncIterator[pb.GenerateEvent]:
        """A job another replica runs (or nobody yet), from the store's rows and events.
        Returns with ``ended.value`` set after the final event, or unset when the job became
        this replica's own (the caller then streams the local events)."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._followers.setdefault(job_id, set()).add(q)
        try:
            row: JobRow | None = await asyncio.to_thread(self.store.row, job_id)
            seen: tuple[int, int] = (0, 0)  # (fence, step) of the last progress sent
            queued_fence = -1
            while True:
                if row is None:
                    raise not_found(job_id)
                if row.state in TERMINAL:
                    yield await self._final_message(row)
                    ended.value = True
                    return
                if job_id in self._runs:
                    return
                if row.state == QUEUED and queued_fence != row.fence:
                    queued_fence = row.fence
                    ahead = await asyncio.to_thread(self.store.position, row.seq)
                    yield pb.GenerateEvent(queued=pb.Queued(position=ahead, request_id=job_id))
                elif row.state == RUNNING and row.step and (row.fence, row.step) > seen:
                    seen = (row.fence, row.step)
                    yield pb.GenerateEvent(progress=pb.Progress(
                        step=row.step, total=row.total, elapsed_seconds=row.elapsed))  # fmt: skip
                try:
                    event = await asyncio.wait_for(q.get(), self.poll_s)
                except TimeoutError:
                    row = await asyncio.to_thread(self.store.row, job_id)
                    continue
                if event.get("k") == "p":
                    mark = (int(event["f"]), int(event["s"]))
                    if mark > seen:
                        seen = mark
                        yield pb.GenerateEvent(progress=pb.Progress(
                            step=mark[1], total=int(event["t"]),
                            elapsed_seconds=float(event["e"])))  # fmt: skip
                    continue
                row = await asyncio.to_thread(self.store.row, job_id)
        finally:
            followers = self._followers.get(job_id)
            if followers is not None:
                followers.discard(q)
                if not followers:
                    del self._followers[job_id]

    # -- driving one job (loop thread) ---------------------------------------------------

    def _on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the event loop thread (directly when already there) and return."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            return fn(*args)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as e:
                future.set_exception(e)

        self._loop.call_soon_threadsafe(call)
        return future.result(timeout=30)

    def _start(self, row: JobRow, plan: Plan, request_id: str) -> None:
        run = _Run(Ticket(plan, request_id), row.fence, total=plan.total_steps)
        self._runs[row.job_id] = run
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._drive(row.job_id, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.engine.admit(run.ticket, force=True)

    def _cancel_run(self, job_id: str) -> None:
        run = self._runs.get(job_id)
        if run is not None and not run.finishing:
            run.user_cancelled = True
            self.engine.cancel(run.ticket)  # the driver stores CANCELLED when the loop stops

    def _lose(self, job_id: str, why: str) -> None:
        run = self._runs.get(job_id)
        if run is None or run.lost:
            return
        run.lost = True
        self.metrics.leases_lost.inc()
        log("job_lease_lost", job_id=job_id, fence=run.fence, reason=why)
        self.engine.cancel(run.ticket)

    async def _write(self, fn: Callable[..., bool], *args: Any) -> bool | None:
        """One fenced write: True done, False fenced out, None the store is unreachable."""
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreUnavailable as e:
            log("job_store_write_failed", error=e.message)
            return None

    async def _durably(self, fn: Callable[..., bool], *args: Any) -> bool | None:
        """A write that must land (the outcome of a run): retried while the store is away,
        for about three leases (a few seconds when shutting down). None: never landed."""
        limit = 3.0 if self.engine.closed else max(60.0, 3 * self.lease_s)
        deadline = time.monotonic() + limit
        pause = 0.25
        while True:
            done = await self._write(fn, *args)
            if done is not None or time.monotonic() > deadline:
                return done
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def _drive(self, job_id: str, run: _Run) -> None:
        last_write = 0.0
        me = self.replica
        try:
            async for event in run.ticket.events():
                if isinstance(event, Started):
                    if await self._write(self.store.started, job_id, me, run.fence) is False:
                        self._lose(job_id, "fenced out when it started")
                    self._publish({"k": "s", "j": job_id})
                elif isinstance(event, Progress):
                    run.step, run.total, run.elapsed = event.step, event.total, event.elapsed
                    self._publish({"k": "p", "j": job_id, "f": run.fence, "s": event.step,
                                   "t": event.total, "e": round(event.elapsed, 4)})  # fmt: skip
                    now = time.monotonic()
                    if now - last_write >= _PROGRESS_WRITE_INTERVAL_S or event.step == event.total:
                        last_write = now
                        written = await self._write(
                            self.store.progress, job_id, me, run.fence, *self._progress(run)
                        )
                        if written is False:
                            self._lose(job_id, "fenced out while writing progress")
                elif isinstance(event, Finished):
                    run.finishing = True
                    event = await self._finish(job_id, run, event)
                run.hub.publish(event)
        finally:
            self._runs.pop(job_id, None)
            self._wake_claimer()

    @staticmethod
    def _progress(run: _Run) -> tuple[int, int, float]:
        return run.step, run.total, run.elapsed

    async def _finish(self, job_id: str, run: _Run, event: Finished) -> Finished:
        """Store the outcome; returns the event watchers get (a failure if storing failed)."""
        me = self.replica
        if run.lost:
            return Finished(error=LeaseLost(f"job {job_id} is run by another replica now"))
        if event.result is not None:
            key = self.videos.key_for(job_id, run.fence)
            try:
                await asyncio.to_thread(self.videos.put, key, event.result.mp4)
            except VideoStoreError as e:
                # Full disk, an unwritable folder, unreachable object storage: the job ends
                # FAILED with the reason (an escaping exception would leave it RUNNING and
                # its watchers waiting). The store left no partial object behind.
                self.metrics.video_store_errors.labels("put").inc()
                await self._end(job_id, run, FAILED, e.code.name, e.message)
                return Finished(error=e)
            completed = convert.completed_message(event.result, include_video=False)
            stored = await self._durably(self.store.succeed, job_id, me, run.fence,
                                         completed.SerializeToString(), key, run.step)  # fmt: skip
            if not stored:
                # Fenced out (another replica took over) or the store never came back: this
                # run's object is nobody's. Remove it; the row names the winner's, if any.
                with contextlib.suppress(VideoStoreError, OSError):
                    await asyncio.to_thread(self.videos.delete, key)
                run.lost = True
                self.metrics.leases_lost.inc()
                log("job_lease_lost", job_id=job_id, fence=run.fence,
                    reason="fenced out when storing the result")  # fmt: skip
                return Finished(error=LeaseLost(f"job {job_id} is run by another replica now"))
            self._publish({"k": "s", "j": job_id})
            log("job_succeeded", job_id=job_id, video=key, attempt_fence=run.fence)
            if run.fence > 1:  # an owner that died after its upload left an object nobody names
                await asyncio.to_thread(self._delete_earlier_videos, job_id, run.fence)
            return event
        error = event.error
        assert error is not None
        if isinstance(error, Cancelled) and run.user_cancelled:
            await self._end(job_id, run, CANCELLED, "CANCELLED",
                            f"cancelled by CancelJob after step {run.step}")  # fmt: skip
        elif isinstance(error, Cancelled) and self.engine.closed:
            # Shutting down: leave it unfinished so the next start (or another replica) runs it.
            await self._durably(self.store.release, job_id, me, run.fence, run.step)
            self._publish({"k": "q"})
            log("job_interrupted", job_id=job_id, last_step=run.step)
        else:
            err = to_api_error(error, job_id)
            await self._end(job_id, run, FAILED, err.code.name, err.message)
        return event

    async def _end(self, job_id: str, run: _Run, state: int, code: str, reason: str) -> None:
        # The stored progress is the last step reached, the one the reason names.
        ended = await self._durably(
            self.store.end, job_id, state, code, reason, self.replica, run.fence, run.step
        )
        if ended:
            self._publish({"k": "s", "j": job_id})
            log("job_ended", job_id=job_id, state=S.Name(state), code=code, reason=reason)

    def _end_now(self, job_id: str, state: int, code: str, reason: str) -> None:
        if self.store.end(job_id, state, code, reason):
            log("job_ended", job_id=job_id, state=S.Name(state), code=code, reason=reason)

    # -- background ------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        """The store's reachability (readiness) and the shared queue's gauges."""
        while True:
            try:
                queued, running = await asyncio.to_thread(self.store.counts)
                self.metrics.jobs_queued.set(queued)
                self.metrics.jobs_running.set(running)
                ok, reason = True, ""
            except StoreUnavailable as e:
                ok, reason = False, e.message
            except Exception as e:  # any failure means "not ready"; the reason is logged
                ok, reason = False, repr(e)
            if ok != self.store_ok:
                self.store_ok, self.store_reason = ok, reason
                log("job_store_ready" if ok else "job_store_unreachable",
                    store=self.store.describe, reason=reason or None)  # fmt: skip
                if ok:
                    self._wake_claimer()
                if self._on_health is not None:
                    await self._on_health(ok)
            await asyncio.sleep(self.health_interval_s)

    async def _sweep_loop(self) -> None:
        """Retention: finished jobs older than the TTL go, with their videos."""
        while True:
            await asyncio.sleep(min(60.0, max(1.0, self.ttl_s / 4)))
            with contextlib.suppress(StoreUnavailable):
                for row in await asyncio.to_thread(self.store.expired, self.ttl_s, 100):
                    deleted = await asyncio.to_thread(self.store.delete, row.job_id)
                    if deleted is not None:
                        await asyncio.to_thread(self._delete_video, deleted)
                        self.metrics.jobs_expired.inc()
                        log("job_expired", job_id=row.job_id)

    # -- messages ------------------------------------------------------------------------

    def _existing(self, job_id: str) -> JobRow:
        row = self.store.row(job_id)
        if row is None:
            raise not_found(job_id)
        return row

    def _replay(self, row: JobRow, request: bytes, key: str) -> pb.Job:
        if row.request != request:
            raise ApiError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"idempotency_key: {key!r} was already used for job {row.job_id} "
                "with a different request; use a new key for a new job",
            )
        return self._message(row)

    def _delete_video(self, row: JobRow) -> None:
        if row.video_key:
            try:
                self.videos.delete(row.video_key)
            except (VideoStoreError, OSError) as e:  # the row is gone; the object is an orphan
                self.metrics.video_store_errors.labels("delete").inc()
                log("video_delete_failed", job_id=row.job_id, key=row.video_key, error=str(e))

    def _delete_earlier_videos(self, job_id: str, fence: int) -> None:
        for earlier in range(1, fence):
            with contextlib.suppress(VideoStoreError, OSError):
                self.videos.delete(self.videos.key_for(job_id, earlier))

    def _video(self, row: JobRow) -> bytes:
        """The MP4 of a SUCCEEDED job, or DATA_LOSS naming what is missing."""
        assert row.video_key is not None
        try:
            return self.videos.get(row.video_key)
        except VideoMissing as e:
            self.metrics.videos_missing.inc()
            log(
                "job_video_missing",
                job_id=row.job_id,
                key=row.video_key,
                store=self.videos.describe,
            )
            raise ApiError(
                grpc.StatusCode.DATA_LOSS,
                f"job {row.job_id} SUCCEEDED but its video is gone from the video store "
                f"({e}); it was removed outside Cinetron. Submit the same request again "
                f"(seed {row.seed}) to make the same video",
            ) from None

    def _message(self, row: JobRow, include_video: bool = False) -> pb.Job:
        job = pb.Job(
            job_id=row.job_id,
            state=row.state,  # type: ignore[arg-type]
            request=pb.GenerateRequest.FromString(row.request),
            idempotency_key=row.idempotency_key or "",
            create_time=_ts(row.created_at),
            update_time=_ts(row.updated_at),
            progress=pb.Progress(step=row.step, total=row.total, elapsed_seconds=row.elapsed),
            attempts=row.attempts,
            seed=row.seed,
        )
        if row.result is not None and row.state == SUCCEEDED:
            job.result.CopyFrom(pb.Completed.FromString(row.result))
            if include_video and row.video_key:
                job.result.video = self._video(row)
            if row.video_key and self.videos.has_urls:
                url = self.videos.url(row.video_key, self.video_url_ttl_s)
                if url:
                    job.video_url = url
                    job.video_url_expire_time.CopyFrom(_ts(time.time() + self.video_url_ttl_s))
        if row.error_code:
            job.error.CopyFrom(
                pb.JobEnded(state=row.state, code=row.error_code, reason=row.error_reason or "")  # type: ignore[arg-type]
            )
        if self.ttl_s > 0 and row.state in TERMINAL:
            job.expire_time.CopyFrom(_ts(row.updated_at + self.ttl_s))
        return job

    async def _event_message(self, job_id: str, event: object) -> pb.GenerateEvent | None:
        if isinstance(event, Queued):
            return pb.GenerateEvent(queued=pb.Queued(position=event.position, request_id=job_id))
        if isinstance(event, Progress):
            return pb.GenerateEvent(progress=convert.progress_message(event))
        if isinstance(event, Finished):
            if event.result is not None:
                return pb.GenerateEvent(completed=convert.completed_message(event.result))
            row = await asyncio.to_thread(self._existing, job_id)
            return await self._final_message(row)
        return None

    async def _final_message(self, row: JobRow) -> pb.GenerateEvent:
        job = await asyncio.to_thread(self._message, row, True)
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
