"""The generated ``cinetron.v1`` stubs, with a clear message when they were never built."""

from __future__ import annotations

try:
    from cinetron.api_client._proto import video_pb2 as pb
    from cinetron.api_client._proto import video_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - depends on how the package was installed
    raise ImportError(
        "the cinetron.v1 gRPC stubs are missing: they are generated from proto/ at install "
        "time. Run `pip install -e .` (or `python src/cinetron/api_client/protogen.py`) in the "
        "repository."
    ) from e

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["VideoService"].full_name

__all__ = ["SERVICE_NAME", "pb", "pb_grpc"]
