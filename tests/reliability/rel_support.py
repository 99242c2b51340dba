"""Real processes for the reliability suite: ``cinetron serve-api`` as a subprocess, its
Prometheus metrics and memory, and gRPC calls reduced to (status code, message).

Nothing here is a mock: every helper talks to a process over a socket or reads /proc.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cinetron.api_client import SERVICE_NAME, pb, pb_grpc
from cinetron.tools.tritonserver import SHM_DIR, SHM_REGION_PREFIX

SERVING = health_pb2.HealthCheckResponse.SERVING
MAX_RECEIVE = 64 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_outcome(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str, Any]:
    """Run one call (a unary call, or a stream read to its end): (code, details, result)."""
    try:
        result = fn()
        if isinstance(result, grpc.Call) or hasattr(result, "__next__"):
            result = list(result)
        return grpc.StatusCode.OK, "", result
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def process_state(pid: int) -> str:
    """One letter: R, S, T (stopped), Z (zombie)…; 'gone' when the process is reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


class ApiProcess:
    """``python -m cinetron serve-api`` on a free loopback port, its log in a file."""

    def __init__(
        self,
        data_dir: Path,
        log: Path,
        args: Iterable[str],
        env: dict[str, str] | None = None,
        metrics: bool = True,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port() if metrics else 0
        self.data_dir = data_dir
        self.log = log
        cmd = [sys.executable, "-m", "cinetron", "serve-api", "--address", self.address,
               "--data-dir", str(data_dir), "--metrics-port", str(self.metrics_port),
               "--shutdown-grace", "2", *args]  # fmt: skip
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
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
        """Until health says SERVING; returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.proc.poll() is None, f"serve-api exited:\n{self.log_tail()}"
            try:
                if self.health() == SERVING:
                    return time.monotonic() - start
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(f"serve-api not SERVING after {timeout}s:\n{self.log_tail()}")

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


def generate(stub: pb_grpc.VideoServiceStub, timeout: float = 120.0, **fields: Any) -> list[Any]:
    return list(stub.Generate(pb.GenerateRequest(**fields), timeout=timeout))


def good_request_succeeds(stub: pb_grpc.VideoServiceStub) -> bool:
    events = generate(stub, prompt="a red circle moving to the left", steps=1, seed=3)
    return events[-1].WhichOneof("event") == "completed" and len(events[-1].completed.video) > 0


def shm_regions() -> set[str]:
    return {p.name for p in SHM_DIR.glob(SHM_REGION_PREFIX + "*")} if SHM_DIR.is_dir() else set()


def remove_orphaned_shm(before: set[str]) -> int:
    """Unlink Python-backend shared-memory regions created since ``before`` that no live
    process maps: a tritonserver killed with SIGKILL cannot remove its own."""
    new = shm_regions() - before
    if not new:
        return 0
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue
        mapped |= {name for name in new if name in text}
    removed = 0
    for name in new - mapped:
        (SHM_DIR / name).unlink(missing_ok=True)
        removed += 1
    return removed
