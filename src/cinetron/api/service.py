"""``cinetron.v1.VideoService``: RPC handlers over the engine, the jobs and the backend.

Every handler runs inside ``_rpc``/``_stream``: they assign the request id (the
caller's ``x-request-id`` or a fresh one), echo it in the initial metadata, count the
RPC by status code, log one line per call and turn exceptions into status codes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import grpc

from cinetron.api import convert
from cinetron.api.backend import Backend
from cinetron.api.config import ServerConfig
from cinetron.api.engine import Engine, Finished, Queued, Ticket
from cinetron.api.errors import to_api_error
from cinetron.api.jobs import JobManager, Planner
from cinetron.api.logs import log
from cinetron.api.metrics import Metrics
from cinetron.api_client import SERVICE_NAME, pb, pb_grpc
from cinetron.contract.manifest import ModelManifest
from cinetron.core.pipeline import Progress

Req = TypeVar("Req")
Resp = TypeVar("Resp")
_MAX_REQUEST_ID = 128


def valid_request_id(text: str) -> bool:
    """A caller's ``x-request-id`` is kept when it is 1-128 printable ASCII characters
    without spaces (gRPC metadata and HTTP headers alike); otherwise one is made."""
    return 0 < len(text) <= _MAX_REQUEST_ID and all(" " < c <= "~" for c in text)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            text = value.decode() if isinstance(value, bytes) else value
            if valid_request_id(text):
                return text
    return new_request_id()


def _server_version() -> str:
    try:
        return version("cinetron")
    except PackageNotFoundError:
        return "0+unknown"


class _Call:
    """Bookkeeping of one RPC: id, status code, timing, metrics and the log line."""

    def __init__(self, service: VideoService, rpc: str, context: grpc.aio.ServicerContext):
        self.service, self.rpc, self.context = service, rpc, context
        self.request_id = request_id_of(context)
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    async def begin(self) -> None:
        await self.context.send_initial_metadata((("x-request-id", self.request_id),))

    async def fail(self, exc: BaseException) -> None:
        err = to_api_error(exc, self.request_id)
        self.code = err.code
        if err.code == grpc.StatusCode.INTERNAL:
            log(
                "rpc_error",
                logging.ERROR,
                rpc=self.rpc,
                request_id=self.request_id,
                error=repr(exc),
            )
            logging.getLogger("cinetron.api").error("traceback", exc_info=exc)
        if err.trailers:
            self.context.set_trailing_metadata(err.trailers)
        await self.context.abort(err.code, err.message)

    def cancelled(self) -> None:
        remaining = self.context.time_remaining()
        expired = remaining is not None and remaining <= 0
        self.code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED

    def end(self) -> None:
        self.service.metrics.requests.labels(self.rpc, self.code.name).inc()
        log(
            "rpc",
            rpc=self.rpc,
            request_id=self.request_id,
            code=self.code.name,
            duration_s=time.perf_counter() - self.started,
        )


def _rpc(
    fn: Callable[[Any, Req, _Call], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def handler(self: VideoService, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        call = _Call(self, fn.__name__, context)
        try:
            await call.begin()
            return await fn(self, request, call)
        except asyncio.CancelledError:
            call.cancelled()
            raise
        except Exception as e:
            await call.fail(e)
            raise  # unreachable: abort raises
        finally:
            call.end()

    return handler


def _stream(
    fn: Callable[[Any, Req, _Call], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    @functools.wraps(fn)
    async def handler(
        self: VideoService, request: Req, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        call = _Call(self, fn.__name__, context)
        try:
            await call.begin()
            async for item in fn(self, request, call):
                yield item
        except asyncio.CancelledError:
            call.cancelled()
            raise
        except Exception as e:
            await call.fail(e)
        finally:
            call.end()

    return handler


class VideoService(pb_grpc.VideoServiceServicer):
    def __init__(
        self,
        config: ServerConfig,
        engine: Engine,
        jobs: JobManager,
        backend: Backend,
        metrics: Metrics,
        planner: Planner,
    ) -> None:
        self.config = config
        self.engine = engine
        self.jobs = jobs
        self.backend = backend
        self.metrics = metrics
        self.planner = planner

    @_stream
    async def Generate(
        self, request: pb.GenerateRequest, call: _Call
    ) -> AsyncIterator[pb.GenerateEvent]:
        # Decoding an image or video takes CPU: never on the event loop (health waits).
        plan = await asyncio.to_thread(self.planner, convert.with_seed(request), call.request_id)
        remaining = call.context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        ticket = Ticket(plan, call.request_id, deadline)
        subscription = ticket.subscribe()  # before admission, so Queued is never missed
        self.engine.admit(ticket)
        log("generation_admitted", request_id=call.request_id, queued=self.engine.queued)
        try:
            async for event in ticket.events(subscription):
                if isinstance(event, Queued):
                    yield pb.GenerateEvent(
                        queued=pb.Queued(position=event.position, request_id=call.request_id)
                    )
                elif isinstance(event, Progress):
                    yield pb.GenerateEvent(progress=convert.progress_message(event))
                elif isinstance(event, Finished):
                    if event.error is not None:
                        raise event.error
                    assert event.result is not None
                    yield pb.GenerateEvent(completed=convert.completed_message(event.result))
        finally:
            if ticket.finished is None:  # caller left, deadline passed or the stream failed
                self.engine.cancel(ticket)

    @_rpc
    async def SubmitJob(self, request: pb.SubmitJobRequest, call: _Call) -> pb.SubmitJobResponse:
        # Job calls run in a thread: the job store may be a database across the network.
        job, replayed = await asyncio.to_thread(
            self.jobs.submit, request.request, request.idempotency_key, call.request_id
        )
        return pb.SubmitJobResponse(job=job, replayed=replayed)

    @_rpc
    async def GetJob(self, request: pb.GetJobRequest, call: _Call) -> pb.GetJobResponse:
        job = await asyncio.to_thread(self.jobs.get, request.job_id, request.include_video)
        return pb.GetJobResponse(job=job)

    @_stream
    async def WatchJob(
        self, request: pb.WatchJobRequest, call: _Call
    ) -> AsyncIterator[pb.GenerateEvent]:
        async for event in self.jobs.watch(request.job_id):
            yield event

    @_rpc
    async def CancelJob(self, request: pb.CancelJobRequest, call: _Call) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(job=await asyncio.to_thread(self.jobs.cancel, request.job_id))

    @_rpc
    async def DeleteJob(self, request: pb.DeleteJobRequest, call: _Call) -> pb.DeleteJobResponse:
        return pb.DeleteJobResponse(job=await asyncio.to_thread(self.jobs.delete, request.job_id))

    @_rpc
    async def ListJobs(self, request: pb.ListJobsRequest, call: _Call) -> pb.ListJobsResponse:
        jobs, token = await asyncio.to_thread(
            self.jobs.list, request.page_size, request.page_token, request.state
        )
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    @_rpc
    async def ListModels(self, request: pb.ListModelsRequest, call: _Call) -> pb.ListModelsResponse:
        # What was last served, even while Triton is slow or restarting (GetInfo says ready).
        manifest = self.backend.manifest_or_none()
        if manifest is None:
            manifest = self.backend.manifest()  # never connected: UNAVAILABLE with the reason
        return pb.ListModelsResponse(models=[self._model_message(manifest)])

    def _model_message(self, manifest: ModelManifest) -> pb.Model:
        return convert.model_message(manifest, self.backend.can_encode_video)

    @_rpc
    async def GetInfo(self, request: pb.GetInfoRequest, call: _Call) -> pb.GetInfoResponse:
        manifest = self.backend.manifest_or_none()
        c = self.config
        return pb.GetInfoResponse(
            server_version=_server_version(),
            api_version=SERVICE_NAME.rsplit(".", 1)[0],
            limits=convert.limits_message(
                manifest, c.max_queue, c.max_concurrency, c.max_receive_bytes, c.max_send_bytes
            ),
            schedulers=convert.scheduler_names(),
            samplers=convert.sampler_messages(manifest),
            models=[self._model_message(manifest)] if manifest else [],
            load=pb.Load(queued=self.engine.queued, running=self.engine.running),
            ready=self.backend.ready,
        )
