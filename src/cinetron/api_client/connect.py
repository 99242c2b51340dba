"""``connect``: a ``cinetron.v1`` stub with the options every caller needs.

    from cinetron.api_client import connect, pb
    stub = connect("127.0.0.1:50051", token=os.environ.get("CINETRON_TOKEN"))
    for event in stub.Generate(pb.GenerateRequest(prompt="a red circle"), timeout=300): ...

The channel accepts a whole MP4 in one message (64 MiB), sends ``authorization: Bearer``
when a token is given, and an ``x-request-id`` on every call that has none (the server
echoes it and logs it end to end). Needs only grpcio and protobuf.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from cinetron.api_client._proto import video_pb2_grpc as pb_grpc

MAX_RECEIVE_BYTES = 64 << 20  # a Completed event carries the MP4
Next = Callable[..., Any]  # grpc's continuation: (call details, request) → call


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the bearer token and a request id to every call."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if not any(k == "x-request-id" for k, _ in metadata):
            metadata.append(("x-request-id", uuid.uuid4().hex[:16]))
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        return details._replace(metadata=metadata)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)


def connect(
    address: str, token: str | None = None, tls_ca: Path | bytes | None = None
) -> pb_grpc.VideoServiceStub:
    """A ``VideoService`` stub for ``address`` (``host:port``); TLS when ``tls_ca`` (PEM)
    is given, verifying the server against it."""
    options = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
    if tls_ca is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        pem = tls_ca.read_bytes() if isinstance(tls_ca, Path) else tls_ca
        creds = grpc.ssl_channel_credentials(root_certificates=pem)
        channel = grpc.secure_channel(address, creds, options=options)
    return pb_grpc.VideoServiceStub(grpc.intercept_channel(channel, _Metadata(token)))
