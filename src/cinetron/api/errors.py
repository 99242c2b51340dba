"""Every failure becomes one gRPC status code with a message a caller can act on.

| cause | code |
|---|---|
| ``InvalidArgument`` (field out of range, malformed) | INVALID_ARGUMENT |
| admission queue full | RESOURCE_EXHAUSTED (+ ``retry-after-ms`` trailer) |
| Triton down / model not ready (``Unavailable``) | UNAVAILABLE |
| deadline passed (``Cancelled`` after the deadline) | DEADLINE_EXCEEDED |
| caller cancelled (``Cancelled``) | CANCELLED |
| unknown job id | NOT_FOUND |
| idempotency key reused with another request | ALREADY_EXISTS |
| missing or wrong bearer token | UNAUTHENTICATED |
| Triton rejected an accepted request (``ModelError``) | INTERNAL, with Triton's message |
| anything else | INTERNAL "unexpected error, request_id=…" (traceback only in the log) |
"""

from __future__ import annotations

import grpc

from cinetron.core.errors import Cancelled, InvalidArgument, ModelError, Unavailable

MAX_MESSAGE_CHARS = 1000


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut in the middle when longer than ``limit``: the status message travels
    in the grpc-message trailer, and echoing a huge field (a 10 000-character job id)
    made it big enough for clients to drop the response (gRPC's metadata size limits)."""
    if len(message) <= limit:
        return message
    keep = (limit - 40) // 2
    return f"{message[:keep]} …[{len(message) - 2 * keep} characters cut]… {message[-keep:]}"


class ApiError(Exception):
    """A status to send: code, message (at most ``MAX_MESSAGE_CHARS``) and trailers."""

    def __init__(
        self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        message = bounded(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = trailers


class QueueFull(ApiError):
    def __init__(self, waiting: int, capacity: int, retry_after_ms: int) -> None:
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the generation queue is full ({waiting} waiting, capacity {capacity}); "
            f"retry after {retry_after_ms} ms (trailing metadata retry-after-ms)",
            (("retry-after-ms", str(retry_after_ms)),),
        )
        self.retry_after_ms = retry_after_ms


class DeadlineExceeded(Cancelled):
    """The call's deadline passed; the loop stopped between steps."""


def not_found(job_id: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.NOT_FOUND, f"job_id: no job {job_id!r}; ListJobs shows the known jobs"
    )


def to_api_error(exc: BaseException, request_id: str) -> ApiError:
    """Map a pipeline / server exception onto its status. Unknown ones never leak details."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidArgument):
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, Unavailable):
        return ApiError(
            grpc.StatusCode.UNAVAILABLE, f"inference server unavailable: {exc}; retry later"
        )
    if isinstance(exc, DeadlineExceeded):
        return ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded: {exc}")
    if isinstance(exc, Cancelled):
        return ApiError(grpc.StatusCode.CANCELLED, f"cancelled: {exc}")
    if isinstance(exc, ModelError):
        return ApiError(
            grpc.StatusCode.INTERNAL,
            f"the inference server failed the request: {exc} (request_id={request_id})",
        )
    return ApiError(
        grpc.StatusCode.INTERNAL,
        f"unexpected server error (request_id={request_id}); the server log has the details",
    )
