"""Fault injection with real processes: tritonserver killed (SIGKILL) or frozen (SIGSTOP)
mid-generation, the API server killed mid-job, a client killed mid-stream, and a data
dir that cannot take the video (a file where the folder should be; a full tmpfs).

Every request the API accepted is accounted for: it finishes, or ends with a status or a
job state and a reason. ``lost`` counts the ones that did neither within their bound.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from rel_support import SERVING, ApiProcess, good_request_succeeds, process_state, rpc_outcome

from cinetron.api_client import pb
from cinetron.core.video import decode_mp4
from cinetron.tools.tritonserver import SHM_DIR, TritonServer, _stubs_of

C = grpc.StatusCode
S = pb.JobState
LONG = 200  # steps: ~10 s or more on this machine, far longer than any fault below
TERMINAL = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)


class Stream:
    """A Generate call read to its end on a thread: its status, events and end time."""

    def __init__(self, api: ApiProcess, timeout: float, **fields: Any) -> None:
        self.started = time.monotonic()
        self.timeout = timeout
        self.call = api.stub.Generate(pb.GenerateRequest(**fields), timeout=timeout)
        self.events: list[str] = []
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.ended: float | None = None
        self.progressed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.append(event.WhichOneof("event"))
                if self.events[-1] == "progress":
                    self.progressed.set()
            self.code = C.OK
        except grpc.RpcError as e:
            self.code, self.details = e.code(), e.details() or ""
        self.ended = time.monotonic() - self.started
        self.progressed.set()

    def join(self) -> bool:
        """Wait until the deadline (+5 s of slack); True when the call ended by then."""
        self._thread.join(self.timeout + 5)
        return self.ended is not None


def wait_job(api: ApiProcess, job_id: str, timeout: float) -> pb.Job:
    end = time.monotonic() + timeout
    while True:
        job = api.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=5).job
        if job.state in TERMINAL or time.monotonic() > end:
            return job
        time.sleep(0.2)


def retry_until_ok(fn: Callable[[], bool], timeout: float) -> float:
    """Call ``fn`` (retrying UNAVAILABLE, as a client should) until it works; seconds taken."""
    start = time.monotonic()
    while True:
        code, details, ok = rpc_outcome(fn)
        if code == C.OK and ok:
            return time.monotonic() - start
        assert code == C.UNAVAILABLE, f"{code.name}: {details}"
        assert time.monotonic() - start < timeout, f"still UNAVAILABLE after {timeout}s"
        time.sleep(0.5)


def submit(api: ApiProcess, steps: int, seed: int = 1, key: str = "") -> str:
    request = pb.GenerateRequest(prompt="a yellow square moving up", steps=steps, seed=seed)
    return api.stub.SubmitJob(pb.SubmitJobRequest(request=request, idempotency_key=key)).job.job_id


def test_triton_killed_mid_generation_fails_fast_and_recovers(
    triton_factory: Callable[..., TritonServer], spawn_api, ledger
) -> None:
    entry = ledger("fault", name="kill -9 tritonserver mid-generation", accepted=0, lost=0)
    triton = triton_factory()
    api = spawn_api("--triton-url", triton.grpc_url, "--max-concurrency", "2")
    streams = [Stream(api, 30, prompt="a red circle", steps=LONG, seed=i) for i in range(2)]
    for s in streams:  # both slots busy...
        assert s.progressed.wait(30) and "progress" in s.events, s.details
    job_id = submit(api, LONG)  # ...so the job waits in the queue
    entry["accepted"] = 3

    os.kill(triton.pid, signal.SIGKILL)
    for s in streams:
        ended = s.join()
        entry["lost"] += int(not ended)
        assert ended, "a Generate call hung after Triton died"
        assert s.code == C.UNAVAILABLE and "inference server unavailable" in s.details, s.details
        # well within its deadline: no hang until it expires
        assert s.ended is not None and s.ended < s.timeout
    job = wait_job(api, job_id, 30)
    entry["lost"] += int(job.state not in TERMINAL)
    assert job.state == S.JOB_STATE_FAILED and job.error.code == "UNAVAILABLE", job
    assert "inference server unavailable" in job.error.reason
    api.wait_not_serving()
    code, details, _ = rpc_outcome(lambda: api.stub.Generate(pb.GenerateRequest(prompt="a")))
    assert code == C.UNAVAILABLE and "not ready" in details

    # The stub that was mid-request outlives a SIGKILLed server (it waits on its IPC for
    # ever, holding its session and a /dev/shm region); stop() reaps it and the region.
    stubs = _stubs_of(triton.pid)
    triton.stop()
    assert _stubs_of(triton.pid) == []
    assert not any((SHM_DIR / region).exists() for _, _, region in stubs), stubs

    triton_factory(ports=dict(triton.ports))  # "the same" Triton comes back
    api.wait_serving(60)
    entry["recovery_s"] = round(retry_until_ok(lambda: good_request_succeeds(api.stub), 60), 2)
    assert api.load() == (0, 0) and api.proc.poll() is None


@pytest.mark.slow
def test_triton_frozen_mid_generation_deadlines_are_honoured(
    triton_factory: Callable[..., TritonServer], spawn_api, ledger
) -> None:
    """SIGSTOP makes Triton slow for real: it accepts bytes and answers nothing."""
    entry = ledger("fault", name="SIGSTOP tritonserver (slow backend)", accepted=0, lost=0)
    triton = triton_factory()
    api = spawn_api("--triton-url", triton.grpc_url, "--max-concurrency", "2")
    running = Stream(api, 6, prompt="a green circle", steps=LONG)
    assert running.progressed.wait(30), running.details
    os.kill(triton.pid, signal.SIGSTOP)
    try:
        for _ in range(100):  # the signal is delivered asynchronously
            if process_state(triton.pid) == "T":
                break
            time.sleep(0.02)
        assert process_state(triton.pid) == "T"
        late = Stream(api, 3, prompt="a green circle", steps=2)  # admitted, or refused
        entry["accepted"] = 2
        for s in (running, late):
            ended = s.join()
            entry["lost"] += int(not ended)
            assert ended, "a call outlived its deadline while Triton was frozen"
            assert s.code in (C.DEADLINE_EXCEEDED, C.UNAVAILABLE), (s.code, s.details)
            assert s.ended is not None and s.ended < s.timeout + 2
        api.wait_not_serving(15)  # the readiness probe times out and says so
    finally:
        os.kill(triton.pid, signal.SIGCONT)
    # Workers blocked inside a Triton call return, see their deadline and free the slots.
    entry["slot_free_s"] = round(api.wait_idle(150), 2)
    api.wait_serving(60)
    retry_until_ok(lambda: good_request_succeeds(api.stub), 60)


def test_informational_rpcs_answer_at_once_while_triton_is_frozen(
    triton_factory: Callable[..., TritonServer], spawn_api, ledger
) -> None:
    """GetInfo once waited 5 s on a frozen Triton and then said supports_image_input=false.
    Informational RPCs read cached state: they answer at once (the deadline below is a
    tenth of that old wait), and a slow Triton does not change what the model can do."""
    ledger("fault", name="SIGSTOP tritonserver: GetInfo/ListModels", accepted=0, lost=0)
    triton = triton_factory()
    api = spawn_api("--triton-url", triton.grpc_url)
    assert api.stub.GetInfo(pb.GetInfoRequest(), timeout=5).models[0].supports_image_input
    os.kill(triton.pid, signal.SIGSTOP)
    try:
        for _ in range(100):
            if process_state(triton.pid) == "T":
                break
            time.sleep(0.02)
        for _ in range(3):  # before and after the readiness probe notices
            info = api.stub.GetInfo(pb.GetInfoRequest(), timeout=0.5)
            assert info.models and info.models[0].supports_image_input
            models = api.stub.ListModels(pb.ListModelsRequest(), timeout=0.5).models
            assert models and models[0].supports_image_input
            time.sleep(1.5)
        assert not api.stub.GetInfo(pb.GetInfoRequest(), timeout=0.5).ready
    finally:
        os.kill(triton.pid, signal.SIGCONT)
    api.wait_serving(60)


@pytest.mark.slow
def test_api_killed_mid_job_loses_no_job(triton_server: TritonServer, spawn_api, ledger) -> None:
    entry = ledger("fault", name="kill -9 serve-api mid-job", accepted=0, lost=0)
    args = ("--triton-url", triton_server.grpc_url, "--max-concurrency", "1", "--max-queue", "8")
    first = spawn_api(*args)
    done_id = submit(first, 2, seed=5, key="done-before-crash")
    assert wait_job(first, done_id, 60).state == S.JOB_STATE_SUCCEEDED
    video = first.stub.GetJob(pb.GetJobRequest(job_id=done_id, include_video=True)).job
    running_id = submit(first, LONG, seed=6, key="running")
    queued_ids = [submit(first, 3, seed=7 + i) for i in range(3)]
    watch = first.stub.WatchJob(pb.WatchJobRequest(job_id=running_id), timeout=60)
    assert any(e.WhichOneof("event") == "progress" for e in watch)  # reads until progress
    watch.cancel()
    ids = [done_id, running_id, *queued_ids]
    entry["accepted"] = len(ids)

    first.stop(signal.SIGKILL)
    second = spawn_api(*args)
    listed = {j.job_id for j in second.stub.ListJobs(pb.ListJobsRequest(page_size=50)).jobs}
    assert set(ids) <= listed
    for job_id in ids:
        job = wait_job(second, job_id, 120)
        entry["lost"] += int(job.state != S.JOB_STATE_SUCCEEDED)
        assert job.state == S.JOB_STATE_SUCCEEDED, (job_id, job.state, job.error.reason)
    resumed = second.stub.GetJob(pb.GetJobRequest(job_id=running_id, include_video=True)).job
    assert resumed.attempts == 2 and resumed.result.seed == 6
    assert decode_mp4(resumed.result.video).shape[0] == resumed.result.frames
    again = second.stub.GetJob(pb.GetJobRequest(job_id=done_id, include_video=True)).job
    assert again.attempts == 1 and again.result.video == video.result.video  # untouched
    assert not list((second.data_dir / "videos").glob("*.part"))


CLIENT = """
import sys, grpc
from cinetron.api_client import pb, pb_grpc
stub = pb_grpc.VideoServiceStub(grpc.insecure_channel(sys.argv[1]))
# Held in a name: a call object that is garbage-collected cancels its stream, which would
# free the slot before the test looks at it.
call = stub.Generate(pb.GenerateRequest(prompt="a white square", steps=200))
for event in call:
    if event.WhichOneof("event") == "progress":
        print("progress", flush=True)
        break
sys.stdin.read()  # hold the stream open until killed
"""


def test_client_killed_mid_stream_stops_the_work_and_frees_the_slot(
    api: ApiProcess, ledger
) -> None:
    entry = ledger("fault", name="client kill -9 mid-stream", accepted=0, lost=0)
    api.wait_idle()
    cancelled, completed = api.outcome("cancelled"), api.outcome("completed")
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, api.address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "progress"
        entry["accepted"] = 1
        assert api.load()[1] == 1
    finally:
        client.kill()
        client.wait()
    entry["slot_free_s"] = round(api.wait_idle(30), 2)
    assert api.outcome("cancelled") == cancelled + 1  # stopped, not run to the end
    assert api.outcome("completed") == completed
    assert good_request_succeeds(api.stub)


def _no_video_files(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.suffix == ".mp4" or p.name.endswith(".part")]
    assert not leftovers, leftovers


def test_videos_dir_replaced_by_a_file_fails_the_job_with_a_reason(
    triton_server: TritonServer, spawn_api, ledger
) -> None:
    """As root, chmod does not stop writes; a file where the folder should be does."""
    entry = ledger("fault", name="unwritable videos dir", accepted=0, lost=0)
    api = spawn_api("--triton-url", triton_server.grpc_url)
    videos = api.data_dir / "videos"
    videos.rmdir()
    videos.write_text("not a folder")
    job_id = submit(api, 1)
    entry["accepted"] = 1
    events = list(api.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=60))
    assert events[-1].WhichOneof("event") == "job_ended", events[-1]
    job = api.stub.GetJob(pb.GetJobRequest(job_id=job_id)).job
    entry["lost"] = int(job.state not in TERMINAL)
    assert job.state == S.JOB_STATE_FAILED and job.error.code == "INTERNAL"
    assert "could not be stored" in job.error.reason and "data dir writable" in job.error.reason
    assert events[-1].job_ended.reason == job.error.reason
    _no_video_files(api.data_dir)
    videos.unlink()
    videos.mkdir()  # fixed: the next job stores its video
    ok = submit(api, 1, seed=2)
    assert wait_job(api, ok, 60).state == S.JOB_STATE_SUCCEEDED
    assert (videos / f"{ok}.mp4").stat().st_size > 0


def test_data_dir_that_is_a_file_stops_start_with_a_clear_message(tmp_path: Path, ledger) -> None:
    ledger("fault", name="data dir is a file at start")
    blocker = tmp_path / "data"
    blocker.write_text("a file")
    done = subprocess.run(
        [sys.executable, "-m", "cinetron", "serve-api", "--address", "127.0.0.1:0",
         "--metrics-port", "0", "--data-dir", str(blocker / "sub")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot hold the jobs database" in done.stderr and "--data-dir" in done.stderr


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full (ENOSPC), to its last block."""
    with path.open("wb", buffering=0) as f:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


@pytest.mark.slow
def test_full_disk_fails_the_job_with_resource_exhausted_and_no_partial_mp4(
    triton_server: TritonServer, spawn_api, ledger
) -> None:
    entry = ledger("fault", name="disk full (a tmpfs filled to the last byte)", accepted=0, lost=0)
    api = spawn_api("--triton-url", triton_server.grpc_url)
    videos = api.data_dir / "videos"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(videos)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        fill(videos / "filler")  # whatever the MP4's size, not one byte of it fits
        job_id = submit(api, 1)
        entry["accepted"] = 1
        job = wait_job(api, job_id, 60)
        entry["lost"] = int(job.state not in TERMINAL)
        assert job.state == S.JOB_STATE_FAILED and job.error.code == "RESOURCE_EXHAUSTED", job
        assert "No space left on device" in job.error.reason
        _no_video_files(videos)
        assert api.health() == SERVING and good_request_succeeds(api.stub)
    finally:
        subprocess.run(["umount", str(videos)], check=False)
