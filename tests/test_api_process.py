"""The API server as a real process (``cinetron serve-api``): jobs survive a restart, and
the example client works against it. The backend is the session's tritonserver when
the ``triton_server`` fixture exists, otherwise ``--local torch``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cinetron.api_client import SERVICE_NAME, pb, pb_grpc
from cinetron.core.video import decode_mp4

ROOT = Path(__file__).resolve().parent.parent
LONG_STEPS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def backend_args(request: pytest.FixtureRequest) -> list[str]:
    try:
        triton = request.getfixturevalue("triton_server")
    except pytest.FixtureLookupError:
        return ["--local", "torch"]
    return ["--triton-url", triton.grpc_url]


class ApiProcess:
    def __init__(self, data_dir: Path, log: Path, args: list[str]) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "cinetron", "serve-api", "--address", self.address,
               "--data-dir", str(data_dir), "--metrics-port", "0", *args]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.channel = grpc.insecure_channel(
            self.address, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.stub = pb_grpc.VideoServiceStub(self.channel)

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def wait_serving(self, timeout: float = 120.0) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"serve-api exited:\n{self.log_tail()}"
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.2)
        raise AssertionError(f"serve-api not SERVING after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.channel.close()


@pytest.fixture
def spawn(tmp_path: Path, backend_args: list[str]) -> Iterator[Callable[..., ApiProcess]]:
    procs: list[ApiProcess] = []

    def start(*extra: str) -> ApiProcess:
        p = ApiProcess(tmp_path / "data", tmp_path / "serve-api.log", [*backend_args, *extra])
        procs.append(p)
        p.wait_serving()
        return p

    yield start
    for p in procs:
        p.stop(signal.SIGKILL)


def submit_and_wait_running(api: ApiProcess) -> str:
    request = pb.GenerateRequest(prompt="a purple triangle moving up", steps=LONG_STEPS, seed=7)
    job = api.stub.SubmitJob(pb.SubmitJobRequest(request=request, idempotency_key="k1")).job
    watch = api.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=60)
    for event in watch:
        if event.WhichOneof("event") == "progress":
            break
    watch.cancel()
    return job.job_id


def test_job_resumes_after_the_api_server_is_killed_mid_generation(spawn):
    first = spawn()
    job_id = submit_and_wait_running(first)
    first.stop(signal.SIGKILL)  # a crash: nothing gets to record anything

    second = spawn()
    events = list(second.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=120))
    assert events[-1].WhichOneof("event") == "completed", second.log_tail()
    job = second.stub.GetJob(pb.GetJobRequest(job_id=job_id, include_video=True)).job
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.attempts == 2
    assert job.result.seed == 7 and job.progress.step == LONG_STEPS
    frames = decode_mp4(job.result.video)
    assert frames.shape[0] == job.result.frames
    # The idempotency key still maps to the same job after the restart.
    again = second.stub.SubmitJob(pb.SubmitJobRequest(request=job.request, idempotency_key="k1"))
    assert again.replayed and again.job.job_id == job_id


def test_without_resume_an_interrupted_job_fails_with_a_reason(spawn):
    first = spawn()
    job_id = submit_and_wait_running(first)
    first.stop(signal.SIGTERM)  # graceful: the job is left unfinished for the next start

    second = spawn("--no-resume-jobs")
    job = second.stub.GetJob(pb.GetJobRequest(job_id=job_id)).job
    assert job.state == pb.JOB_STATE_FAILED
    assert "restarted" in job.error.reason and job.error.code == "ABORTED"
    events = list(second.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=10))
    assert [e.WhichOneof("event") for e in events] == ["job_ended"]
    assert events[0].job_ended.reason == job.error.reason


def test_example_client_writes_a_video(spawn, tmp_path):
    api = spawn()
    out = tmp_path / "video.mp4"
    for mode in ([], ["--job"]):
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples/python_client.py"), "a white circle",
             "--address", api.address, "--steps", "2", "--out", str(out), *mode],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "step 2/2" in done.stderr
        assert decode_mp4(out).shape[0] > 1
        out.unlink()
