"""Locust load test of the ``cinetron.v1`` gRPC API: a custom gRPC user, a ramp, a steady state.

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
| ``CINETRON_API_TOKEN`` | bearer token, when the API has auth on | (none) |
| ``CINETRON_LOADTEST_MODE`` | ``generate`` (stream) or ``jobs`` (Submit + WatchJob) | generate |

``--host`` may list several API replicas, comma-separated: caller ``i`` talks to replica
``i mod n`` for its whole life (as one client connection behind a load balancer would).
In ``jobs`` mode a caller submits on its replica and watches there until the video (or the
job's end) arrives; which replica runs the job is the store's business.

Each caller streams ``Generate`` with a fresh prompt and seed and waits for the video
(no think time: a closed loop). Locust records one ``Generate`` sample per call (its
latency, the MP4 size, a failure named after the gRPC status code) and one
``first progress`` sample (time to the first Progress event). The JSON report splits
completions into the ramp and the steady state and gives throughput and errors for each.
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
from locust import LoadTestShape, User, constant, events, task  # noqa: E402

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
REPORT = Path(os.environ.get("CINETRON_LOADTEST_REPORT", "loadtest-report.json"))
TOKEN = os.environ.get("CINETRON_API_TOKEN", "")
MODE = os.environ.get("CINETRON_LOADTEST_MODE", "generate")

PROMPTS = workload_prompts()
_issued = 0  # calls started so far (gevent: greenlets switch only on I/O, so no lock)
_started_at = time.monotonic()
_load_ended_s: float | None = None  # when the shape stopped the load (time or budget)
RECORDS: list[dict[str, Any]] = []  # one per finished call, for the report
_users = 0  # callers created so far: caller i talks to replica i mod n


class RpcFailure(Exception):
    """A failed call, named after its gRPC status so Locust groups failures by code."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code


class GenerateUser(User):
    """One caller: stream ``Generate`` and wait for the video, again and again."""

    wait_time = constant(0)

    def on_start(self) -> None:
        global _users
        options = [("grpc.max_receive_message_length", 64 << 20)]
        replicas = [h.strip() for h in (self.host or "").split(",") if h.strip()]
        address, _users = replicas[_users % len(replicas)], _users + 1
        self.channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.VideoServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {TOKEN}")] if TOKEN else []

    def on_stop(self) -> None:
        self.channel.close()

    def _events(self, request: pb.GenerateRequest, metadata: list[tuple[str, str]]) -> Any:
        if MODE == "generate":
            return self.stub.Generate(request, metadata=metadata, timeout=TIMEOUT_S)
        job = self.stub.SubmitJob(pb.SubmitJobRequest(request=request), metadata=metadata,
                                  timeout=TIMEOUT_S).job  # fmt: skip
        watch = pb.WatchJobRequest(job_id=job.job_id)
        return self.stub.WatchJob(watch, metadata=metadata, timeout=TIMEOUT_S)

    @task
    def generate(self) -> None:
        global _issued
        if _issued >= MAX_REQUESTS:  # the budget is spent; the shape ends the test
            time.sleep(0.5)
            return
        n, _issued = _issued, _issued + 1
        request = pb.GenerateRequest(prompt=PROMPTS[n % len(PROMPTS)], seed=n, steps=STEPS)
        metadata = [*self.metadata, ("x-request-id", f"loadtest-{n}")]
        start = time.perf_counter()
        first: float | None = None
        size, error = 0, None
        try:
            for event in self._events(request, metadata):
                kind = event.WhichOneof("event")
                if kind == "progress" and first is None:
                    first = time.perf_counter() - start
                elif kind == "completed":
                    size = len(event.completed.video)
                elif kind == "job_ended":
                    raise RpcFailure(event.job_ended.code or "JOB_ENDED", event.job_ended.reason)
            if size == 0:
                error = RpcFailure("NO_VIDEO", "the stream ended without a video")
        except grpc.RpcError as e:
            error = RpcFailure(e.code().name, e.details() or "")
        except RpcFailure as e:
            error = e
        latency = time.perf_counter() - start
        fire = self.environment.events.request.fire
        fire(request_type="grpc", name="Generate", response_time=latency * 1e3,
             response_length=size, exception=error, context={})  # fmt: skip
        if first is not None:
            fire(request_type="grpc", name="Generate: first progress", response_time=first * 1e3,
                 response_length=0, exception=None, context={})  # fmt: skip
        RECORDS.append({
            "end_s": time.monotonic() - _started_at,
            "latency_s": latency,
            "first_progress_s": first,
            "code": "OK" if error is None else error.code,
        })  # fmt: skip


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
            "mode": MODE,
            "auth": bool(TOKEN),
        },
        "calls_started": _issued,
        "replicas": len((environment.host or "").split(",")),
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
