"""``cinetron serve-api``: the grpc.aio server, its health, reflection, metrics and shutdown,
and the HTTP side (``api/http``: OpenAI's /v1/videos and the preview page) served by uvicorn
on the same event loop, over the same engine, jobs and tokens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from cinetron.api import backend as backends
from cinetron.api import convert
from cinetron.api.auth import BearerAuth, TokenSet
from cinetron.api.config import ServerConfig, from_args
from cinetron.api.decoding import RejectMalformed
from cinetron.api.engine import Engine
from cinetron.api.http.app import HttpServer, bind, create_app
from cinetron.api.http.videos import VideosApi
from cinetron.api.jobs import JobManager, open_job_store, open_video_store
from cinetron.api.logs import log, setup_logging
from cinetron.api.metrics import Metrics
from cinetron.api.service import VideoService
from cinetron.api_client import SERVICE_NAME, pb, pb_grpc
from cinetron.core.plan import Plan
from cinetron.core.transport import Transport

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _readable(path: Path | None, what: str) -> Path | None:
    """A settings file that must exist: a clear exit instead of a traceback."""
    if path is not None and not path.is_file():
        raise SystemExit(f"the {what} file {path} does not exist or is not a file; fix the path")
    return path


class ApiServer:
    """One API server. ``start`` binds and returns; the backend becomes ready in the background.

    ``transport``/``probe`` override how the networks are reached (tests, ``--local``);
    by default they come from the config (Triton gRPC at ``triton_url``).
    """

    def __init__(
        self,
        config: ServerConfig,
        transport: Callable[[], Transport] | None = None,
        probe: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._owns_transport = transport is None  # an injected transport is the caller's
        if transport is None:
            if config.local:
                transport = lambda: backends.local_transport(config.local, config.model_repository)  # noqa: E731
            else:
                transport = lambda: backends.triton_transport(config.triton_url)  # noqa: E731
                probe = backends.triton_probe(config.triton_url)
        self.metrics = Metrics()
        self.health = health_aio.HealthServicer()
        self.backend = backends.Backend(
            transport, probe, config.readiness_interval_s, self._on_ready_change
        )
        self.engine = Engine(
            self.backend.transport, config.max_concurrency, config.max_queue, self.metrics
        )
        self.store = open_job_store(config.database_url, config.data_dir)
        self.videos = open_video_store(config.video_url, config.data_dir)
        self.videos.check()
        if self.store.shared and not config.video_url:
            log(
                "videos_not_shared",
                logging.WARNING,
                reason="jobs are in PostgreSQL but videos in the local folder "
                f"{config.data_dir / 'videos'}: every replica must mount the same folder, "
                "or set CINETRON_VIDEO_URL=s3://bucket/prefix",
            )
        self.jobs = JobManager(
            self.store,
            self.engine,
            self.plan,
            config.resume_jobs,
            config.max_job_attempts,
            videos=self.videos,
            metrics=self.metrics,
            lease_s=config.job_lease_s,
            poll_s=config.job_poll_s,
            max_queued_jobs=config.max_queued_jobs,
            ttl_s=config.job_ttl_s,
            video_url_ttl_s=config.video_url_ttl_s,
            health_interval_s=config.readiness_interval_s,
            is_ready=lambda: self.backend.ready,
            on_health=self._on_store_health,
        )
        self.port = 0
        self.http: HttpServer | None = None
        self._http_closing = asyncio.Event()  # ends the HTTP event streams on stop
        self._server: grpc.aio.Server | None = None
        self._backend_task: asyncio.Task[None] | None = None
        self._resumed = False

    def plan(self, msg: pb.GenerateRequest, request_id: str) -> Plan:
        """``msg``'s one validated plan for the served model (``Unavailable`` until ready)."""
        manifest = self.backend.manifest()
        return convert.to_plan(msg, request_id, manifest, self.backend.can_encode_video)

    async def _set_health(self) -> None:
        """SERVING only while both the inference backend and the job store answer."""
        status = _SERVING if self.backend.ready and self.jobs.store_ok else _NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def _on_store_health(self, ok: bool) -> None:
        await self._set_health()

    async def _on_ready_change(self, ready: bool) -> None:
        await self._set_health()
        if ready and not self._resumed and self.config.resume_jobs:
            self._resumed = True
            self.jobs.resume_unfinished()

    def _count_rejected(self, method: str) -> None:
        self.metrics.requests.labels(method.rsplit("/", 1)[-1], "UNAUTHENTICATED").inc()

    async def start(self) -> int:
        c = self.config
        await self.jobs.start()
        if not c.resume_jobs:
            self.jobs.fail_unfinished()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, _NOT_SERVING)
        interceptors: list[grpc.aio.ServerInterceptor] = []
        tokens = None
        if c.auth_enabled:
            path = _readable(c.auth_tokens_file, "auth tokens")
            try:
                tokens = TokenSet(path, c.auth_tokens)
            except (OSError, ValueError) as e:
                raise SystemExit(
                    f"the auth tokens file {path} cannot be read ({e}); it must be UTF-8 "
                    "text, one token per line"
                ) from None
            interceptors.append(BearerAuth(tokens, on_reject=self._count_rejected))
        # Inside auth: an unauthenticated caller hears UNAUTHENTICATED whatever it sent.
        interceptors.append(RejectMalformed())
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", c.max_receive_bytes),
                ("grpc.max_send_message_length", c.max_send_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port fails loudly
            ],
        )
        servicer = VideoService(c, self.engine, self.jobs, self.backend, self.metrics, self.plan)
        pb_grpc.add_VideoServiceServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        if c.tls_cert is not None and c.tls_key is not None:
            key = _readable(c.tls_key, "TLS key").read_bytes()  # type: ignore[union-attr]
            cert = _readable(c.tls_cert, "TLS certificate").read_bytes()  # type: ignore[union-attr]
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = server.add_secure_port(c.address, creds)
        else:
            self.port = server.add_insecure_port(c.address)
        if self.port == 0:
            raise SystemExit(f"cannot listen on {c.address}: address in use or invalid")
        http_bind = c.http_host_port
        if http_bind is not None:  # bound before either server starts: a taken port stops both
            videos = VideosApi(
                self.jobs, self.engine, self.backend, c.max_receive_bytes, self._http_closing
            )
            app = create_app(videos, self.backend, tokens, c.max_receive_bytes, self.metrics)
            self.http = HttpServer(app, bind(*http_bind), c.shutdown_grace_s, c.tls_cert, c.tls_key)
        await server.start()
        self._server = server
        if self.http is not None:
            await self.http.start()
        if c.metrics_port:
            self.metrics.serve(c.metrics_port, c.host)
        log(
            "api_listening",
            address=c.address,
            port=self.port,
            tls=c.tls_cert is not None,
            auth=c.auth_enabled,
            data_dir=c.data_dir,
            jobs=self.store.describe,
            videos=self.videos.describe,
            backend=c.local or f"triton:{c.triton_url}",
            metrics_port=c.metrics_port or None,
            http=self.http.url if self.http else "off",
        )
        if self.http is not None:
            # Where to point a browser or an OpenAI client (base_url = <url>v1).
            log("http_listening", url=self.http.url, api=f"{self.http.url}v1/videos")
        self._backend_task = asyncio.get_running_loop().create_task(self.backend.run())
        return self.port

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, let running ones finish for ``grace`` seconds, then stop the
        rest. Interrupted jobs stay unfinished in the store and resume on the next start."""
        for service in ("", SERVICE_NAME):
            await self.health.set(service, _NOT_SERVING)
        self._http_closing.set()
        grace = self.config.shutdown_grace_s if grace is None else grace
        stopping = []
        if self._server is not None:
            stopping.append(self._server.stop(grace))
        if self.http is not None:
            stopping.append(self.http.stop())
        await asyncio.gather(*stopping)
        self.engine.close()
        await self.jobs.close()  # job drivers record the interruption (released for others)
        if self._backend_task is not None:
            self._backend_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._backend_task
        if self._owns_transport:
            self.backend.close()
        self.store.close()
        log("api_stopped")


async def serve(config: ServerConfig) -> None:
    server = ApiServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("api_stopping")
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    config = from_args(argv)
    setup_logging(config.log_level)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
