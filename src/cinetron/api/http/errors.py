"""OpenAI's error shape for the HTTP side, and the HTTP status of every failure.

Every failure first becomes the gRPC status the gRPC side would send (``api/errors.py``:
same code, same message), then that status becomes an HTTP one here, so both protocols
refuse the same things with the same words:

| gRPC code (api/errors.py) | HTTP | OpenAI ``type`` | ``code`` |
|---|---|---|---|
| INVALID_ARGUMENT | 400 | invalid_request_error | invalid_value |
| UNAUTHENTICATED | 401 + WWW-Authenticate | authentication_error | invalid_api_key |
| NOT_FOUND | 404 | invalid_request_error | video_not_found |
| ALREADY_EXISTS (key reused) | 409 | invalid_request_error | idempotency_key_reused |
| FAILED_PRECONDITION (unfinished) | 409 | invalid_request_error | video_not_finished |
| RESOURCE_EXHAUSTED (queue full) | 429 + Retry-After(-ms) | rate_limit_error | queue_full |
| UNAVAILABLE (Triton down) | 503 + Retry-After | server_error | backend_unavailable |
| DEADLINE_EXCEEDED | 504 | server_error | deadline_exceeded |
| INTERNAL | 500 | server_error | server_error |

HTTP-only refusals (malformed JSON, a body over the limit: 413, a wrong content type:
415, an unknown path or method: 404/405) are raised as ``HttpError`` directly. ``param``
names the request field as an HTTP caller spells it (``seconds``, not the plan's
``duration``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import grpc

from cinetron.api.errors import QueueFull, bounded, to_api_error
from cinetron.core.errors import InvalidArgument

# The plan's field names → the names an HTTP caller used.
HTTP_FIELDS = {
    "duration": "seconds",
    "image": "input_reference",
    "width": "size",
    "height": "size",
    "idempotency_key": "Idempotency-Key",
}

_BY_CODE: dict[grpc.StatusCode, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_value"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error", "invalid_api_key"),
    grpc.StatusCode.NOT_FOUND: (404, "invalid_request_error", "video_not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error", "idempotency_key_reused"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "invalid_request_error", "video_not_finished"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "queue_full"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error", "backend_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "server_error", "deadline_exceeded"),
    grpc.StatusCode.CANCELLED: (409, "invalid_request_error", "cancelled"),
}
_TYPE_BY_STATUS = {401: "authentication_error", 429: "rate_limit_error"}
# Seconds a caller should wait before retrying while the backend is not ready: the
# readiness poll's interval (api/backend.py), so a retry sees a fresh check.
UNAVAILABLE_RETRY_S = 2


class HttpError(Exception):
    """One error response: status, OpenAI's error fields and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        type_: str | None = None,
    ) -> None:
        message = bounded(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        if type_ is None:
            type_ = _TYPE_BY_STATUS.get(status) or (
                "server_error" if status >= 500 else "invalid_request_error"
            )
        self.type = type_
        if status >= 400 and status < 500 and status != 429:
            # The openai SDK retries 409 by default; a reused key or an unfinished video
            # does not change by retrying, so tell it not to.
            self.headers.setdefault("x-should-retry", "false")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _renamed(exc: InvalidArgument) -> tuple[str, str]:
    """(param, message) with the plan's field name replaced by the HTTP caller's."""
    message = str(exc)
    param = HTTP_FIELDS.get(exc.field, exc.field)
    if param != exc.field and message.startswith(f"{exc.field}: "):
        message = f"{param}: {message[len(exc.field) + 2 :]}"
    return param, message


def to_http_error(exc: BaseException, request_id: str) -> HttpError:
    """The HTTP error for any exception (unknown ones never leak details: api/errors.py)."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, InvalidArgument):
        field, text = _renamed(exc)
        return HttpError(400, text, "invalid_value", field)
    err = to_api_error(exc, request_id)
    status, type_, code = _BY_CODE.get(err.code, (500, "server_error", "server_error"))
    headers: dict[str, str] = {}
    if isinstance(err, QueueFull):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_ms / 1000)))
        headers["retry-after-ms"] = str(err.retry_after_ms)
    elif err.code == grpc.StatusCode.UNAVAILABLE:
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_S)
    param: str | None = None
    message = err.message
    field = message.split(": ", 1)[0]
    if field in HTTP_FIELDS:  # e.g. "idempotency_key: 'k' was already used ..."
        param = HTTP_FIELDS[field]
        message = f"{param}: {message[len(field) + 2 :]}"
    return HttpError(status, message, code, param, headers, type_)
