"""What the test suites (and the benchmarks) share: free loopback ports, the API as a real
process, and the session's exported repository served by a real tritonserver.

Nothing here is a mock: every helper starts a process or talks to one over a socket.
``tests/conftest.py`` exposes the fixtures; ``bench/`` imports ``ApiProcess`` from here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cinetron.api_client import SERVICE_NAME, pb_grpc
from cinetron.tools.tritonserver import TritonServer, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
MAX_RECEIVE = 64 << 20

__all__ = ["SERVING", "ApiProcess", "free_port"]


class ApiProcess:
    """``python -m cinetron serve-api`` on free loopback ports (gRPC, HTTP unless ``http`` is
    off, metrics), its log in a file. ``http_url`` is the HTTP side's base
    (``http://127.0.0.1:PORT``; the OpenAI SDK's ``base_url`` is ``http_url + "/v1"``)."""

    def __init__(
        self,
        data_dir: Path,
        log: Path,
        args: Iterable[str],
        env: dict[str, str] | None = None,
        metrics: bool = True,
        log_level: str = "info",
        http: bool = True,
        http_port: int | None = None,  # e.g. the port of the process this one replaces
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port() if metrics else 0
        self.http_port = (http_port or free_port()) if http else 0
        self.http_url = f"http://127.0.0.1:{self.http_port}" if http else ""
        self.data_dir = data_dir
        self.log = log
        http_address = f"127.0.0.1:{self.http_port}" if http else "0"
        cmd = [sys.executable, "-m", "cinetron", "serve-api", "--address", self.address,
               "--http-address", http_address,
               "--data-dir", str(data_dir), "--metrics-port", str(self.metrics_port),
               "--shutdown-grace", "2", "--log-level", log_level, *args]  # fmt: skip
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CINETRON_")}
        full_env = {**inherited, "OMP_NUM_THREADS": "1", **(env or {})}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        self.channel = self.open_channel()
        self.stub = pb_grpc.VideoServiceStub(self.channel)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def open_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.address, options=[("grpc.max_receive_message_length", MAX_RECEIVE)]
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def health(self, timeout: float = 2.0) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout)
        return int(reply.status)

    def wait_serving(self, timeout: float = 120.0) -> float:
        """Until health says SERVING (and the HTTP side answers); returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.proc.poll() is None, f"serve-api exited:\n{self.log_tail()}"
            try:
                if self.health() == SERVING and self.http_ready():
                    return time.monotonic() - start
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(f"serve-api not SERVING after {timeout}s:\n{self.log_tail()}")

    def http_ready(self) -> bool:
        """The HTTP side's /readyz says ready (True when the HTTP side is off)."""
        if not self.http_url:
            return True
        try:
            with urllib.request.urlopen(f"{self.http_url}/readyz", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:  # not listening yet, or 503 (urllib's HTTPError is an OSError)
            return False

    def wait_not_serving(self, timeout: float = 30.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if self.health() != SERVING:
                    return time.monotonic() - start
            except grpc.RpcError:
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"serve-api still SERVING after {timeout}s")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{labels}`` → value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        samples = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
            if m:
                samples[m.group(1)] = float(m.group(2))
        return samples

    def load(self) -> tuple[int, int]:
        """(queued, running) from the metrics endpoint."""
        m = self.metrics()
        return int(m["cinetron_api_queue_depth"]), int(m["cinetron_api_running"])

    def wait_idle(self, timeout: float = 30.0) -> float:
        """Until no generation runs or waits, per /metrics; returns the seconds it took."""
        start = time.monotonic()
        while self.load() != (0, 0):
            assert time.monotonic() - start < timeout, f"slots never freed: {self.load()}"
            time.sleep(0.05)
        return time.monotonic() - start

    def outcome(self, name: str) -> float:
        return self.metrics().get(f'cinetron_api_generations_total{{outcome="{name}"}}', 0.0)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.channel.close()
        return self.proc.returncode


# --- fixtures (exposed by tests/conftest.py) -------------------------------------------------


@pytest.fixture(scope="session")
def exported_repository(tmp_path_factory: pytest.TempPathFactory):  # -> ExportReport
    """The cpu-flavour repository exported from the default weights, with its parity report."""
    from cinetron.export.configs import RepositoryOptions
    from cinetron.export.families.shapes import write_repository
    from cinetron.models.loading import DEFAULT_WEIGHTS

    if not (DEFAULT_WEIGHTS / "model.json").exists():
        pytest.fail(
            f"no trained weights at {DEFAULT_WEIGHTS} (model.json missing): commit the "
            "weights from `make train`, or point CINETRON_WEIGHTS at a weights folder"
        )
    out = tmp_path_factory.mktemp("model_repository")
    return write_repository(out, DEFAULT_WEIGHTS, RepositoryOptions(flavour="cpu"), log=print)


@pytest.fixture(scope="session")
def model_repository(exported_repository) -> Path:  # type: ignore[no-untyped-def]
    """Path of the cpu-flavour model repository (exported once per session)."""
    return Path(exported_repository.out)


@pytest.fixture(scope="session")
def triton_server(model_repository: Path) -> Iterator[TritonServer]:
    """A running tritonserver on free loopback ports, serving ``model_repository``."""
    server = TritonServer(model_repository, ready_timeout=180)
    server.start()
    print(f"tritonserver ready in {server.startup_seconds:.1f} s (pid {server.pid})")
    try:
        yield server
    finally:
        server.stop()
