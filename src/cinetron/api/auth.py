"""Bearer-token auth for every RPC except grpc.health.v1 (probes carry no credentials).

Tokens come from CINETRON_AUTH_TOKENS_FILE (one per line, ``#`` comments; re-read when
the file changes, so tokens rotate without a restart) and/or CINETRON_AUTH_TOKENS.
Comparison is constant time over SHA-256 digests, against every token, so neither the
length nor the position of a match leaks. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from cinetron.api.logs import log

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
_MESSAGE = (
    "missing or invalid bearer token: send metadata 'authorization: Bearer <token>' "
    "with a token from the server's tokens file"
)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenSet:
    def __init__(self, path: Path | None, extra: tuple[str, ...] = ()) -> None:
        self.path = path
        self._extra = [_digest(t) for t in extra]
        self._mtime: float | None = None
        self._digests: list[bytes] = list(self._extra)
        self._failed: tuple[float | None, str] | None = None
        self.reload()

    def reload(self) -> None:
        """Re-read the file if it changed. Raises ``OSError`` (unreadable) or ``ValueError``
        (not UTF-8 text); the set in use stays as it was."""
        if self.path is None:
            return
        mtime = self.path.stat().st_mtime  # a missing file is a startup error, not "no auth"
        if mtime == self._mtime:
            return
        lines = self.path.read_bytes().decode("utf-8").splitlines()
        tokens = [s for line in lines if (s := line.strip()) and not s.startswith("#")]
        self._digests = self._extra + [_digest(t) for t in tokens]
        self._mtime = mtime
        log("auth_tokens_loaded", count=len(self._digests))

    def _stamp(self) -> float | None:
        try:
            return self.path.stat().st_mtime if self.path is not None else None
        except OSError:
            return None

    def accepts(self, token: str) -> bool:
        try:
            self.reload()
        except (OSError, ValueError) as e:  # keep the last good set; say why in the log
            if self._failed != (self._stamp(), str(e)):  # once per bad version of the file
                self._failed = (self._stamp(), str(e))
                log(
                    "auth_tokens_reload_failed",
                    logging.WARNING,
                    path=self.path,
                    error=str(e),
                    kept=len(self._digests),
                )
        given = _digest(token)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(given, digest)
        return ok and bool(self._digests)


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)
        yield  # pragma: no cover - makes this an async generator

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(abort_stream, **kw)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(abort_stream, **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    return grpc.unary_unary_rpc_method_handler(abort, **kw)


class BearerAuth(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenSet, on_reject: Callable[[str], None] | None = None) -> None:
        self.tokens = tokens
        self._on_reject = on_reject  # e.g. count the refusal in the request metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method or ""
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        if self.tokens.accepts(bearer_token(details.invocation_metadata)):  # type: ignore[arg-type]
            return handler
        log("unauthenticated", rpc=method)
        if self._on_reject is not None:
            self._on_reject(method)
        return _deny(handler)
