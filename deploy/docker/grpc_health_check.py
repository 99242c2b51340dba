"""Docker HEALTHCHECK for the API image: ask the local server's grpc.health.v1 service.

Exit 0 when the overall status ("" service) is SERVING, 1 otherwise. Reads the port from
CINETRON_API_ADDRESS like the server does, and always dials loopback. Plaintext only, like
Kubernetes' own gRPC probe.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    address = os.environ.get("CINETRON_API_ADDRESS", "127.0.0.1:50051")
    port = address.rsplit(":", 1)[-1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        except grpc.RpcError as error:
            print(f"health check failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"grpc health: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
