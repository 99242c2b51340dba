"""Admission and execution: a bounded FIFO queue in front of a fixed pool of worker threads.

The ``Pipeline`` is synchronous (tritonclient's blocking gRPC), so each generation runs
in a worker thread. Everything else — the queue, the tickets, the events — lives on the
asyncio loop thread; workers hand progress back with ``call_soon_threadsafe``. A
cancelled or expired ticket sets its stop flag, which the sampling loop checks before
every step, so the loop stops within one step and its slot goes to the next ticket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeAlias

from cinetron.api.errors import DeadlineExceeded, QueueFull
from cinetron.api.logs import log
from cinetron.api.metrics import Metrics
from cinetron.core.errors import Cancelled, Unavailable
from cinetron.core.pipeline import Pipeline, Progress
from cinetron.core.plan import Plan
from cinetron.core.transport import Transport
from cinetron.core.video import encode_mp4


@dataclass(frozen=True)
class Queued:
    position: int  # tickets ahead of this one


@dataclass(frozen=True)
class Started:
    """Internal: the ticket got a slot (jobs record it; Generate streams ignore it)."""


@dataclass(frozen=True)
class Result:
    mp4: bytes
    width: int
    height: int
    frames: int
    fps: int
    seed: int
    prompt_tokens: int
    prompt_truncated: bool
    model_version: str
    last_step: int
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finished:
    result: Result | None = None
    error: BaseException | None = None


Event: TypeAlias = Queued | Started | Progress | Finished


class Hub:
    """Fan-out of one stream of events to any number of subscribers (loop thread only).

    A subscriber gets the latest event at once (so a late WatchJob sees where things
    are), then every later event, ending with ``Finished``.
    """

    def __init__(self) -> None:
        self.last: Event | None = None
        self.finished: Finished | None = None
        self._subscribers: list[asyncio.Queue[Event]] = []

    def publish(self, event: Event) -> None:
        if self.finished is not None:
            return
        if isinstance(event, Finished):
            self.finished = event
        else:
            self.last = event
        for q in self._subscribers:
            q.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[Event]:
        """Register now (so nothing published from here on is missed); read with ``events``."""
        q: asyncio.Queue[Event] = asyncio.Queue()
        if self.finished is not None:
            q.put_nowait(self.finished)
        elif self.last is not None:
            q.put_nowait(self.last)
        self._subscribers.append(q)
        return q

    async def events(self, q: asyncio.Queue[Event] | None = None) -> AsyncIterator[Event]:
        q = self.subscribe() if q is None else q
        try:
            while True:
                event = await q.get()
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            if q in self._subscribers:
                self._subscribers.remove(q)


class Ticket(Hub):
    """One admitted generation: its plan, deadline, stop flag and events."""

    def __init__(self, plan: Plan, request_id: str, deadline: float | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.request_id = request_id
        self.deadline = deadline  # time.monotonic() value
        self.stop = threading.Event()
        self.admitted_at = time.monotonic()
        self.started_at: float | None = None
        self.last_step = 0

    def should_stop(self) -> bool:
        """Read by the worker thread before every step."""
        if self.stop.is_set():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def stop_reason(self) -> Cancelled:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return DeadlineExceeded(f"stopped after step {self.last_step}: the deadline passed")
        return Cancelled(f"stopped after step {self.last_step}: the caller cancelled")


class Engine:
    """``max_concurrency`` generations run; up to ``max_queue`` more wait, FIFO."""

    def __init__(
        self,
        transport: Callable[[], Transport],
        max_concurrency: int,
        max_queue: int,
        metrics: Metrics,
    ) -> None:
        self._transport = transport  # raises Unavailable while the transport is not ready
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="cinetron-gen")
        self._waiting: deque[Ticket] = deque()
        self._running: set[Ticket] = set()
        self._local = threading.local()
        self._avg_seconds = 1.0  # running average generation time, for the retry hint
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def retry_after_ms(self) -> int:
        """About when a slot frees: the queue ahead, spread over the slots."""
        ahead = len(self._waiting) + 1
        seconds = self._avg_seconds * ahead / self.max_concurrency
        return int(min(max(seconds, 0.1), 60.0) * 1000)

    def check_capacity(self) -> None:
        """Raise ``QueueFull`` if ``admit`` would refuse a ticket now."""
        if self.closed:
            raise Unavailable("the API server is shutting down")
        if len(self._running) < self.max_concurrency and not self._waiting:
            return
        if len(self._waiting) < self.max_queue:
            return
        self.metrics.rejected.inc()
        raise QueueFull(len(self._waiting), self.max_queue, self.retry_after_ms())

    def admit(self, ticket: Ticket, force: bool = False) -> None:
        """Queue ``ticket`` (loop thread). ``force`` skips the capacity check: jobs
        resumed after a restart were admitted before and must not be refused."""
        self._loop = asyncio.get_running_loop()
        if not force:
            self.check_capacity()
        self._waiting.append(ticket)
        ticket.publish(Queued(len(self._waiting) - 1))
        self._dispatch()

    def cancel(self, ticket: Ticket) -> None:
        """Stop ``ticket``: dropped from the queue at once, or stopped before its next step."""
        ticket.stop.set()
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            self._record_outcome(ticket, Finished(error=ticket.stop_reason()))
            ticket.publish(Finished(error=ticket.stop_reason()))
            self._announce_positions()

    def _dispatch(self) -> None:
        while self._waiting and len(self._running) < self.max_concurrency:
            ticket = self._waiting.popleft()
            if ticket.should_stop():  # its caller left or its deadline passed while queued
                ticket.publish(Finished(error=ticket.stop_reason()))
                self._record_outcome(ticket, Finished(error=ticket.stop_reason()))
                continue
            self._running.add(ticket)
            ticket.started_at = time.monotonic()
            ticket.publish(Started())
            assert self._loop is not None
            future = self._loop.run_in_executor(self._executor, self._run, ticket)
            future.add_done_callback(partial(self._done, ticket))
        self._announce_positions()

    def _announce_positions(self) -> None:
        for i, ticket in enumerate(self._waiting):
            if ticket.last != Queued(i):
                ticket.publish(Queued(i))
        self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.running.set(len(self._running))

    def _done(self, ticket: Ticket, future: asyncio.Future[Result]) -> None:
        self._running.discard(ticket)
        error = ticket.stop_reason() if future.cancelled() else future.exception()
        finished = Finished(result=None if error else future.result(), error=error)
        if isinstance(error, Cancelled) and ticket.should_stop():
            finished = Finished(error=ticket.stop_reason())
        self._record_outcome(ticket, finished)
        ticket.publish(finished)
        self._dispatch()

    def _record_outcome(self, ticket: Ticket, finished: Finished) -> None:
        error = finished.error
        if error is None:
            outcome = "completed"
            seconds = time.monotonic() - ticket.admitted_at
            self.metrics.videos.inc()
            self.metrics.generation_seconds.observe(seconds)
            if ticket.started_at is not None:
                run = time.monotonic() - ticket.started_at
                self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * run
        elif isinstance(error, DeadlineExceeded):
            outcome = "deadline_exceeded"
        elif isinstance(error, Cancelled):
            outcome = "cancelled"
        elif isinstance(error, Unavailable):
            outcome = "unavailable"
        else:
            outcome = "failed"
        self.metrics.outcomes.labels(outcome).inc()
        log(
            "generation_end",
            request_id=ticket.request_id,
            outcome=outcome,
            last_step=ticket.last_step,
            error=None if error is None else str(error),
        )

    # -- worker thread -------------------------------------------------------------------

    def _pipeline(self) -> Pipeline:
        """One Pipeline per worker thread over the shared transport: the prompt cache
        is not thread-safe, the transport is."""
        transport = self._transport()
        cached: Pipeline | None = getattr(self._local, "pipeline", None)
        if cached is None or cached.transport is not transport:
            cached = Pipeline(transport)
            self._local.pipeline = cached
        return cached

    def _run(self, ticket: Ticket) -> Result:
        assert self._loop is not None
        loop = self._loop
        if ticket.should_stop():
            raise ticket.stop_reason()
        pipeline = self._pipeline()
        last = [time.perf_counter()]

        def on_progress(p: Progress) -> None:
            now = time.perf_counter()
            self.metrics.step_seconds.observe(now - last[0])
            if p.step == 1:
                self.metrics.first_progress_seconds.observe(time.monotonic() - ticket.admitted_at)
            last[0] = now
            ticket.last_step = p.step
            loop.call_soon_threadsafe(ticket.publish, p)

        video = pipeline.run(ticket.plan, on_progress, ticket.should_stop)
        t0 = time.perf_counter()
        mp4 = encode_mp4(video.frames, video.fps)
        timings = dict(video.timings)
        timings["mp4_s"] = time.perf_counter() - t0
        timings["queue_s"] = (ticket.started_at or ticket.admitted_at) - ticket.admitted_at
        timings["total_s"] = time.monotonic() - ticket.admitted_at
        frames, height, width = video.frames.shape[:3]
        return Result(
            mp4=mp4,
            width=int(width),
            height=int(height),
            frames=int(frames),
            fps=int(video.fps),
            seed=video.request.seed,
            prompt_tokens=video.prompt_tokens,
            prompt_truncated=video.prompt_truncated,
            model_version=pipeline.manifest.version,
            last_step=ticket.last_step,
            timings=timings,
            warnings=ticket.plan.warnings,
        )

    def close(self) -> None:
        """Refuse new tickets and stop every queued and running one."""
        self.closed = True
        for ticket in list(self._waiting) + list(self._running):
            self.cancel(ticket)
        self._executor.shutdown(wait=False, cancel_futures=True)
