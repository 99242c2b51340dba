"""Request bytes that are not a valid protobuf message get INVALID_ARGUMENT, not UNKNOWN.

grpc.aio deserializes a request before any handler runs; when ``FromString`` raises,
the caller sees UNKNOWN "Unexpected <class 'DecodeError'>". This interceptor swaps in
a deserializer that returns a marker instead, and a handler that answers the marker
with INVALID_ARGUMENT naming the message type (tests/reliability: the raw-bytes corpus).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from cinetron.api.logs import log


class Malformed:
    """What the wrapped deserializer returns for bytes it cannot parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _message(method: str, marker: Malformed) -> str:
    return (
        f"the request to {method} is not a valid protobuf message of the method's request "
        f"type ({marker.error}); send a message built from proto/cinetron/v1/video.proto"
    )


def _safe(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # DecodeError, or anything else a parser raises on bad bytes
            return Malformed(e)

    return parse


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    kw = {
        "request_deserializer": _safe(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }

    async def refuse(request: Malformed, context: grpc.aio.ServicerContext) -> None:
        log("malformed_request", rpc=method, error=str(request.error))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))

    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await refuse(request, context)
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, **kw)
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await refuse(request, context)
            async for item in inner_stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream, **kw)
    return handler  # client-streaming methods: none in cinetron.v1


class RejectMalformed(grpc.aio.ServerInterceptor):
    """Applies to methods whose name starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = prefixes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method or ""
        if handler is None or handler.request_deserializer is None:
            return handler
        if not method.startswith(self.prefixes):
            return handler
        return _wrap(handler, method)
