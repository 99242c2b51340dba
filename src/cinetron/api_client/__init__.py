"""What a backend service imports to call Cinetron: the generated ``cinetron.v1`` stubs
(``pb``, ``pb_grpc``) and ``connect``, a stub with the right channel options."""

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

from cinetron.api_client.connect import connect

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["VideoService"].full_name

__all__ = ["SERVICE_NAME", "connect", "pb", "pb_grpc"]
