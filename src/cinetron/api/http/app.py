"""The HTTP side's ASGI app (Starlette) and its server (uvicorn on the gRPC server's loop).

One pure-ASGI middleware, ``Edge``, wraps every request before routing: it assigns the
request id (the caller's ``x-request-id`` or a fresh one) and echoes it on every response,
checks the bearer token on ``/v1/*`` (the page and its assets are public: they hold no
data), bounds the request body, and logs and counts each request. Everything the routes
raise becomes OpenAI's error shape (``errors.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cinetron.api.auth import TokenSet
from cinetron.api.backend import Backend
from cinetron.api.errors import ApiError
from cinetron.api.http.errors import HttpError, to_http_error
from cinetron.api.http.videos import VideosApi
from cinetron.api.logs import log
from cinetron.api.metrics import Metrics
from cinetron.api.service import new_request_id, valid_request_id
from cinetron.core.errors import CinetronError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATIC = Path(str(files("cinetron.api.http") / "static"))
# A body over the limit is still read (and dropped) up to this much, so the caller gets
# the 413 instead of a connection reset mid-upload; beyond it the connection is closed.
DRAIN_LIMIT_BYTES = 32 << 20
_PAGE_HEADERS = {
    # Everything the page needs comes from this server: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "Cache-Control": "no-cache",
}


class BodyTooLarge(HttpError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes ({limit >> 10} KiB), the limit "
            "of this server (the same as a gRPC message); send a smaller input_reference",
            "request_too_large",
        )


def _route_label(path: str) -> str:
    """A bounded label for the metrics: the route, never the raw path (ids, junk)."""
    if path.startswith("/v1/videos/"):
        rest = path[len("/v1/videos/") :].split("/")
        return "/v1/videos/:id" + ("/" + rest[1] if len(rest) > 1 and rest[1] else "")
    if path in ("/", "/v1/videos", "/v1/models", "/healthz", "/readyz"):
        return path
    if path.startswith("/static/"):
        return "/static"
    return "other"


def _error_response(err: HttpError, request_id: str) -> Response:
    """(``Edge`` adds the ``x-request-id`` header to every response, this one too.)"""
    headers = dict(err.headers)
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="cinetron"'
    return JSONResponse(err.body(), err.status, headers=headers)


class Edge:
    """Request id, auth, body limit, access log and metrics for every request."""

    def __init__(
        self, app: ASGIApp, tokens: TokenSet | None, max_body: int, metrics: Metrics
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if valid_request_id(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = [0]
        path = scope.get("path", "")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                ]
            await send(message)

        try:
            await self._checked(scope, receive, send_with_id, headers, request_id)
        except Exception as e:
            # Starlette answered it (a 500 in OpenAI's shape, traceback logged by
            # _on_unexpected) and re-raises; the log has it, uvicorn need not print it again.
            if status[0] == 0:
                err = to_http_error(e, request_id)
                await _error_response(err, request_id)(scope, receive, send_with_id)
        finally:
            route = _route_label(path)
            self.metrics.http_requests.labels(route, str(status[0])).inc()
            log(
                "http",
                logging.WARNING if status[0] >= 500 else logging.INFO,
                method=scope.get("method"),
                route=route,
                status=status[0],
                request_id=request_id,
                duration_s=time.perf_counter() - started,
            )

    async def _checked(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], rid: str
    ) -> None:
        path = scope.get("path", "")
        if self.tokens is not None and path.startswith("/v1/"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not self.tokens.accepts(token.strip()):
                log("unauthenticated", route=_route_label(path), request_id=rid)
                err = HttpError(
                    401,
                    "missing or invalid bearer token: send the header 'Authorization: Bearer "
                    "<token>' with a token from the server's tokens file",
                    "invalid_api_key",
                )
                await _error_response(err, rid)(scope, receive, send)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await _drain(receive, DRAIN_LIMIT_BYTES)
            await _error_response(BodyTooLarge(self.max_body), rid)(scope, receive, send)
            return
        await self.app(scope, _bounded(receive, self.max_body), send)


async def _drain(receive: Receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` (after draining) once the body passes ``limit``:
    a chunked upload has no Content-Length to check up front."""
    seen = [0]

    async def wrapped() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_LIMIT_BYTES)
                raise BodyTooLarge(limit)
        return message

    return wrapped


async def _on_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    rid = request.state.request_id
    if exc.status_code == 404:
        err = HttpError(
            404,
            f"no route {request.url.path!r}; the API is under /v1/videos and /v1/models, "
            "the preview page at /",
            "not_found",
        )
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        err = HttpError(
            405,
            f"{request.method} is not allowed on {request.url.path}; use {allowed}",
            "method_not_allowed",
            headers=exc.headers,
        )
    else:
        err = HttpError(exc.status_code, str(exc.detail), "invalid_request")
    return _error_response(err, rid)


async def _on_known_error(request: Request, exc: Exception) -> Response:
    """Errors with a status of their own (api/errors.py, core/errors.py, HttpError)."""
    rid = request.state.request_id
    err = to_http_error(exc, rid)
    if err.status >= 500:
        log("http_error", logging.WARNING, request_id=rid, status=err.status, error=err.message)
    return _error_response(err, rid)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: 500 with the request id; the traceback only in the log."""
    rid = request.state.request_id
    log("http_error", logging.ERROR, request_id=rid, error=repr(exc))
    logging.getLogger("cinetron.api").error("traceback", exc_info=exc)
    return _error_response(to_http_error(exc, rid), rid)


Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint for one path with a handler per method (405 names all of them)."""
    allowed = ", ".join(sorted(handlers))

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        handler = handlers.get(method)
        if handler is None:
            raise HttpError(
                405,
                f"{request.method} is not allowed on {request.url.path}; use {allowed}",
                "method_not_allowed",
                headers={"Allow": allowed},
            )
        return await handler(request)

    return endpoint


def create_app(
    videos: VideosApi,
    backend: Backend,
    tokens: TokenSet | None,
    max_body: int,
    metrics: Metrics,
) -> ASGIApp:
    """The ASGI app: OpenAI's ``/v1/videos``, ``/v1/models``, health, and the preview page."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if backend.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse(
            {"status": "not ready", "reason": backend.reason},
            503,
            headers={"Retry-After": "2"},
        )

    routes = [
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/v1/models", videos.models, methods=["GET"]),
        Route(
            "/v1/videos", by_method(GET=videos.list, POST=videos.create), methods=["GET", "POST"]
        ),
        Route(
            "/v1/videos/{video_id}",
            by_method(GET=videos.retrieve, DELETE=videos.delete),
            methods=["GET", "DELETE"],
        ),
        Route("/v1/videos/{video_id}/content", videos.content, methods=["GET"]),
        Route("/v1/videos/{video_id}/cancel", videos.cancel, methods=["POST"]),
        Route("/v1/videos/{video_id}/events", videos.events, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            HttpError: _on_known_error,
            ApiError: _on_known_error,
            CinetronError: _on_known_error,
            HTTPException: _on_starlette_error,
            Exception: _on_unexpected,
        },
    )
    return Edge(app, tokens, max_body, metrics)


class _Server(uvicorn.Server):
    """uvicorn on a loop it does not own: the API process handles SIGTERM/SIGINT itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a taken port fails the start in words."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a restarted server take its port while old connections sit in TIME_WAIT;
        # on Linux it does not let two servers listen on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise SystemExit(
            f"cannot listen for HTTP on {host}:{port}: {e.strerror or e}; choose another "
            "--http-address (CINETRON_HTTP_ADDRESS), or 0 to turn the HTTP API off"
        ) from None
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn serving ``app`` on ``sock`` as a task of the running loop."""

    def __init__(
        self,
        app: ASGIApp,
        sock: socket.socket,
        grace_s: float,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.port = int(port)
        scheme = "https" if tls_cert else "http"
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{self.port}/"
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,  # Edge logs one structured line per request
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=max(1, int(grace_s)),
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self.sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it stopped
                raise SystemExit(f"the HTTP server on {self.url} stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
