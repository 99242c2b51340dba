"""The API server as a real process (``cinetron serve-api``): jobs survive a restart, and
the example client works against it. The backend is the session's tritonserver when
the ``triton_server`` fixture exists, otherwise ``--local torch``."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import ApiProcess

from cinetron.api_client import pb
from cinetron.core.video import decode_mp4

ROOT = Path(__file__).resolve().parent.parent
LONG_STEPS = 200


@pytest.fixture(scope="module")
def backend_args(request: pytest.FixtureRequest) -> list[str]:
    try:
        triton = request.getfixturevalue("triton_server")
    except pytest.FixtureLookupError:
        return ["--local", "torch"]
    return ["--triton-url", triton.grpc_url]


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
