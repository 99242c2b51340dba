"""Locust load test of the API: a custom gRPC user (``GenerateUser``, streams ``Generate``) or
an HTTP user (``VideosHttpUser``, OpenAI's ``/v1/videos``: create, poll, download), or a
gRPC jobs user (``JobsUser``: SubmitJob, WatchJob, GetJob; the HTTP user's path through the
job store, without HTTP), a ramp, a steady state.

Run it through ``python -m bench loadtest`` / ``make loadtest`` (they start the servers when
no address is given, check the address is loopback and read the report back). Settings
come from the environment, so the same file works under ``locust -f`` too:

| variable | meaning | default |
|---|---|---|
| ``CINETRON_LOADTEST_USERS`` | concurrent callers at the steady state | 8 |
| ``CINETRON_LOADTEST_RAMP_S`` | seconds to go linearly from 1 caller to all | 20 |
| ``CINETRON_LOADTEST_STEADY_S`` | seconds at full load | 60 |
| ``CINETRON_LOADTEST_MAX_REQUESTS`` | calls started in all, then callers stop | 400 |
| ``CINETRON_LOADTEST_STEPS`` | denoising steps per video | 20 |
| ``CINETRON_LOADTEST_TIMEOUT_S`` | deadline of one ``Generate`` call | 120 |
| ``CINETRON_LOADTEST_REPORT`` | where to write the JSON report | loadtest-report.json |
| ``CINETRON_LOADTEST_POLL_MS`` | HTTP: ms between polls; 0: ``openai-poll-after-ms`` | 0 |
| ``CINETRON_API_TOKEN`` | bearer token, when the API has auth on | (none) |

Each gRPC caller streams ``Generate`` with a fresh prompt and seed and waits for the
video (no think time: a closed loop); an HTTP caller does what an OpenAI client does:
``POST /v1/videos`` (multipart), ``GET /v1/videos/{id}`` until it is completed, then
``GET /v1/videos/{id}/content``. Locust records one sample per call (its latency, the MP4
size, a failure named after the gRPC status code or the HTTP error code) and one
``first progress`` sample (the first Progress event; over HTTP the first poll that saw a
step done). The JSON report splits completions into the ramp and the steady state and
gives throughput and errors for each.
"""

from __future__ import annotations

# gRPC must cooperate with gevent's event loop before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
from locust import HttpUser, LoadTestShape, User, constant, events, task  # noqa: E402

from bench.loadtest import phase_summary  # noqa: E402
from bench.throughput import workload_prompts  # noqa: E402
from cinetron.api_client import pb, pb_grpc  # noqa: E402


def _setting(name: str, default: float) -> float:
    return float(os.environ.get(f"CINETRON_LOADTEST_{name}", default))


USERS = int(_setting("USERS", 8))
RAMP_S = _setting("RAMP_S", 20)
STEADY_S = _setting("STEADY_S", 60)
MAX_REQUESTS = int(_setting("MAX_REQUESTS", 400))
STEPS = int(_setting("STEPS", 20))
TIMEOUT_S = _setting("TIMEOUT_S", 120)
POLL_MS = _setting("POLL_MS", 0)
REPORT = Path(os.environ.get("CINETRON_LOADTEST_REPORT", "loadtest-report.json"))
TOKEN = os.environ.get("CINETRON_API_TOKEN", "")

PROMPTS = workload_prompts()
_issued = 0  # calls started so far (gevent: greenlets switch only on I/O, so no lock)
_started_at = time.monotonic()
_load_ended_s: float | None = None  # when the shape stopped the load (time or budget)
RECORDS: list[dict[str, Any]] = []  # one per finished call, for the report


class RpcFailure(Exception):
    """A failed call, named after its gRPC status so Locust groups failures by code."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


_users = 0  # gRPC callers created so far: caller i talks to replica i mod n


def _next_call() -> int | None:
    """The number of the next call, or ``None`` once the request budget is spent."""
    global _issued
    if _issued >= MAX_REQUESTS:  # the budget is spent; the shape ends the test
        time.sleep(0.5)
        return None
    n, _issued = _issued, _issued + 1
    return n


def _record(latency: float, first: float | None, code: str) -> None:
    RECORDS.append({
        "end_s": time.monotonic() - _started_at,
        "latency_s": latency,
        "first_progress_s": first,
        "code": code,
    })  # fmt: skip


def _report(
    user: Any,
    request_type: str,
    name: str,
    first_name: str,
    latency: float,
    first: float | None,
    size: int,
    error: Exception | None,
    code: str,
) -> None:
    """One call's end, for Locust (the whole call and, when seen, its first progress) and
    for this file's records."""
    fire = user.environment.events.request.fire
    fire(request_type=request_type, name=name, context={},
         response_time=latency * 1e3, response_length=size, exception=error)  # fmt: skip
    if first is not None:
        fire(request_type=request_type, name=first_name, response_time=first * 1e3,
             response_length=0, exception=None, context={})  # fmt: skip
    _record(latency, first, code)


def _http_code(response: Any) -> str:
    try:
        return f"HTTP_{response.status_code}_{response.json()['error']['code']}"
    except Exception:
        return f"HTTP_{response.status_code}"


class _GrpcUser(User):
    """A gRPC caller's channel, stub and credentials (abstract: Locust runs its subclasses)."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        global _users
        options = [("grpc.max_receive_message_length", 64 << 20)]
        # ``--host`` may list API replicas, comma-separated: caller i talks to replica i mod n
        # for its whole life (as one client connection behind a load balancer would).
        replicas = [h.strip() for h in (self.host or "").split(",") if h.strip()]
        address, _users = replicas[_users % len(replicas)], _users + 1
        self.channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.VideoServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {TOKEN}")] if TOKEN else []

    def on_stop(self) -> None:
        self.channel.close()


class GenerateUser(_GrpcUser):
    """One caller: stream ``Generate`` and wait for the video, again and again."""

    @task
    def generate(self) -> None:
        n = _next_call()
        if n is None:
            return
        request = pb.GenerateRequest(prompt=PROMPTS[n % len(PROMPTS)], seed=n, steps=STEPS)
        metadata = [*self.metadata, ("x-request-id", f"loadtest-{n}")]
        start = time.perf_counter()
        first: float | None = None
        size, error = 0, None
        try:
            for event in self.stub.Generate(request, metadata=metadata, timeout=TIMEOUT_S):
                kind = event.WhichOneof("event")
                if kind == "progress" and first is None:
                    first = time.perf_counter() - start
                elif kind == "completed":
                    size = len(event.completed.video)
            if size == 0:
                error = RpcFailure("NO_VIDEO", "the stream ended without a video")
        except grpc.RpcError as e:
            error = RpcFailure(e.code().name, e.details() or "")
        latency = time.perf_counter() - start
        code = "OK" if error is None else error.code
        _report(self, "grpc", "Generate", "Generate: first progress",
                latency, first, size, error, code)  # fmt: skip


class JobsUser(_GrpcUser):
    """One caller of persistent jobs: ``SubmitJob``, then ``WatchJob`` until it ends, then
    ``GetJob`` with the video: the HTTP user's path through the job store, over gRPC."""

    @task
    def generate(self) -> None:
        n = _next_call()
        if n is None:
            return
        request = pb.GenerateRequest(prompt=PROMPTS[n % len(PROMPTS)], seed=n, steps=STEPS)
        metadata = [*self.metadata, ("x-request-id", f"loadtest-job-{n}")]
        start = time.perf_counter()
        first: float | None = None
        size, error = 0, None
        try:
            job = self.stub.SubmitJob(
                pb.SubmitJobRequest(request=request), metadata=metadata, timeout=TIMEOUT_S
            ).job
            watch = pb.WatchJobRequest(job_id=job.job_id)
            for event in self.stub.WatchJob(watch, metadata=metadata, timeout=TIMEOUT_S):
                kind = event.WhichOneof("event")
                if kind == "progress" and first is None:
                    first = time.perf_counter() - start
                elif kind == "job_ended":
                    raise RpcFailure(event.job_ended.code, event.job_ended.reason)
            got = pb.GetJobRequest(job_id=job.job_id, include_video=True)
            size = len(self.stub.GetJob(got, metadata=metadata, timeout=TIMEOUT_S).job.result.video)
            if size == 0:
                error = RpcFailure("NO_VIDEO", "the job ended without a video")
        except grpc.RpcError as e:
            error = RpcFailure(e.code().name, e.details() or "")
        except RpcFailure as e:
            error = e
        latency = time.perf_counter() - start
        code = "OK" if error is None else error.code
        _report(self, "grpc", "SubmitJob + WatchJob + GetJob", "job: first progress",
                latency, first, size, error, code)  # fmt: skip


class VideosHttpUser(HttpUser):
    """One OpenAI-style caller: create a video, poll it until done, download the MP4."""

    wait_time = constant(0)

    def on_start(self) -> None:
        if TOKEN:
            self.client.headers["Authorization"] = f"Bearer {TOKEN}"

    @task
    def video(self) -> None:
        n = _next_call()
        if n is None:
            return
        form = {"prompt": PROMPTS[n % len(PROMPTS)], "seed": str(n), "steps": str(STEPS)}
        start = time.perf_counter()
        first: float | None = None
        size, code = 0, "OK"
        headers = {"x-request-id": f"loadtest-http-{n}"}
        try:
            created = self.client.post(
                "/v1/videos", files={k: (None, v) for k, v in form.items()}, headers=headers,
                name="POST /v1/videos", timeout=TIMEOUT_S,
            )  # fmt: skip
            if created.status_code != 200:
                raise RpcFailure(_http_code(created), created.text[:200])
            video = created.json()
            while video["status"] in ("queued", "in_progress"):
                if time.perf_counter() - start > TIMEOUT_S:
                    raise RpcFailure("TIMEOUT", f"not done after {TIMEOUT_S:.0f} s")
                wait_ms = POLL_MS or float(created.headers.get("openai-poll-after-ms", 1000))
                time.sleep(wait_ms / 1000)
                created = self.client.get(f"/v1/videos/{video['id']}", name="GET /v1/videos/:id")
                if created.status_code != 200:
                    raise RpcFailure(_http_code(created), created.text[:200])
                video = created.json()
                if first is None and video.get("step", 0) > 0:
                    first = time.perf_counter() - start
            if video["status"] != "completed":
                raise RpcFailure(str(video["error"]["code"]).upper(), video["error"]["message"])
            content = self.client.get(
                f"/v1/videos/{video['id']}/content", name="GET /v1/videos/:id/content"
            )
            if content.status_code != 200:
                raise RpcFailure(_http_code(content), content.text[:200])
            size = len(content.content)
            error: Exception | None = None
        except RpcFailure as e:
            error, code = e, e.code
        except Exception as e:  # a connection error: named by its type
            error, code = e, type(e).__name__
        latency = time.perf_counter() - start
        _report(self, "http", "video (create, poll, content)", "video: first progress",
                latency, first, size, error, code)  # fmt: skip


class RampThenSteady(LoadTestShape):
    """1 → ``USERS`` callers linearly over ``RAMP_S``, then ``USERS`` for ``STEADY_S``."""

    def tick(self) -> tuple[int, float] | None:
        global _load_ended_s
        t = self.get_run_time()
        if _issued >= MAX_REQUESTS or t >= RAMP_S + STEADY_S:
            if _load_ended_s is None:
                _load_ended_s = time.monotonic() - _started_at
            return None
        if t < RAMP_S:
            return max(1, math.ceil(USERS * t / RAMP_S)), float(USERS)
        return USERS, float(USERS)


@events.test_start.add_listener
def _on_start(environment: Any, **_: Any) -> None:
    global _started_at
    _started_at = time.monotonic()
    RECORDS.clear()


@events.quitting.add_listener
def _on_quit(environment: Any, **_: Any) -> None:
    load_end = _load_ended_s if _load_ended_s is not None else RAMP_S + STEADY_S
    steady_end = max(RAMP_S, min(RAMP_S + STEADY_S, load_end))
    end = max([steady_end, *(r["end_s"] for r in RECORDS)])
    total = phase_summary(RECORDS, 0.0, end + 1e-6)
    report = {
        "settings": {
            "users": USERS,
            "ramp_s": RAMP_S,
            "steady_s": STEADY_S,
            "max_requests": MAX_REQUESTS,
            "steps": STEPS,
            "timeout_s": TIMEOUT_S,
            "host": environment.host,
            "auth": bool(TOKEN),
            "protocol": os.environ.get("CINETRON_LOADTEST_PROTOCOL", "grpc"),
            "replicas": len((environment.host or "").split(",")),
            "poll_ms": POLL_MS or "openai-poll-after-ms",
        },
        "calls_started": _issued,
        "stopped_by": "request budget" if _issued >= MAX_REQUESTS else "time",
        "ramp": phase_summary(RECORDS, 0.0, RAMP_S),
        "steady": phase_summary(RECORDS, RAMP_S, steady_end),
        # Calls in flight when the load stopped, let finish (--stop-timeout).
        "drain": phase_summary(RECORDS, steady_end, end + 1e-6),
        "total": total,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    if total["errors"]:
        environment.process_exit_code = 1
