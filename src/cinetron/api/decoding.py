"""Every request message is checked before any handler runs, on every service.

grpc.aio deserializes a request before the handler; when ``FromString`` raises, the
caller sees UNKNOWN "Unexpected <class 'DecodeError'>". This interceptor, installed for
the whole server (``cinetron.v1``, ``grpc.health.v1``, reflection), swaps in a
deserializer that returns a marker instead, and a handler that answers the marker with
INVALID_ARGUMENT naming the message type. Protobuf enums are open (an unknown number
parses fine), so the same deserializer also refuses enum values the schema does not
define, naming the field (``shots[0].transition: unknown ShotTransition 99``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cinetron.api.logs import log


class Malformed:
    """What the wrapped deserializer returns for a message it refuses."""

    def __init__(self, error: Exception | str) -> None:
        self.error = error


def _is_repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf ≥ 6 deprecates ``label``
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def unknown_enums(message: Message, prefix: str = "") -> list[str]:
    """``field: unknown EnumName N; expected one of …`` for every enum value (at any depth,
    in repeated fields too) that the enum does not define."""
    problems = []
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        repeated = _is_repeated(field)
        values = list(value) if repeated else [value]
        if field.type == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            for i, v in enumerate(values):
                if v not in enum.values_by_number:
                    where = f"{name}[{i}]" if repeated else name
                    known = ", ".join(f"{e.name} ({e.number})" for e in enum.values)
                    problems.append(f"{where}: unknown {enum.name} {v}; expected one of {known}")
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.message_type.GetOptions().map_entry
        ):
            for i, v in enumerate(values):
                problems += unknown_enums(v, f"{name}[{i}]." if repeated else f"{name}.")
    return problems


def _message(method: str, marker: Malformed) -> str:
    if isinstance(marker.error, str):
        return marker.error
    return (
        f"the request to {method} is not a valid protobuf message of the method's request "
        f"type ({marker.error}); send a message built from its .proto definition"
    )


def _safe(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            message = deserialize(data)
        except Exception as e:  # DecodeError, or anything else a parser raises on bad bytes
            return Malformed(e)
        if isinstance(message, Message) and (problems := unknown_enums(message)):
            return Malformed("; ".join(problems))
        return message

    return parse


async def _refuse(request: Malformed, context: grpc.aio.ServicerContext, method: str) -> None:
    log("malformed_request", rpc=method, error=str(request.error))
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    kw = {
        "request_deserializer": _safe(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await _refuse(request, context, method)
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, **kw)
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await _refuse(request, context, method)
            async for item in inner_stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream, **kw)
    if handler.stream_stream is not None:  # server reflection
        inner_bidi = handler.stream_stream

        async def bidi(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, Malformed):
                        await _refuse(request, context, method)
                    yield request

            async for item in inner_bidi(checked(), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(bidi, **kw)
    return handler  # client-streaming methods: none are served


class RejectMalformed(grpc.aio.ServerInterceptor):
    """Applies to every method of the server."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return _wrap(handler, details.method or "")
