"""Overload: bursts of 10× the admission capacity at a real serve-api process.

Capacity = generations running + requests allowed to wait (CINETRON_MAX_CONCURRENCY +
CINETRON_MAX_QUEUE). The excess must be refused at once with RESOURCE_EXHAUSTED and a
retry hint, every admitted request must finish, no call may wait past its deadline,
and the API process's memory (RSS, from /proc) must not grow with each burst.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from rel_support import ApiProcess, good_request_succeeds, rss_bytes

from cinetron.api_client import pb
from cinetron.tools.tritonserver import TritonServer

C = grpc.StatusCode
CONCURRENCY, QUEUE = 1, 2
CAPACITY = CONCURRENCY + QUEUE
BURST = 10 * CAPACITY
BURSTS = 3
DEADLINE_S = 120.0
RSS_GROWTH_LIMIT = 64 << 20  # bytes over all bursts; a leak per request would exceed it


def one_request(api: ApiProcess, i: int, start: threading.Barrier) -> dict[str, Any]:
    """A Generate stream (even i) or a job (odd i), both 3 steps; its outcome and timing."""
    request = pb.GenerateRequest(prompt=f"a cyan triangle {i}", steps=3, seed=i)
    start.wait()
    t0 = time.monotonic()
    try:
        if i % 2 == 0:
            events = list(api.stub.Generate(request, timeout=DEADLINE_S))
            done = events[-1].WhichOneof("event") == "completed"
            return {"code": C.OK, "kind": "stream", "done": done, "s": time.monotonic() - t0}
        job = api.stub.SubmitJob(pb.SubmitJobRequest(request=request), timeout=DEADLINE_S).job
        watched = list(api.stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=60))
        done = watched[-1].WhichOneof("event") == "completed"
        return {"code": C.OK, "kind": "job", "done": done, "s": time.monotonic() - t0}
    except grpc.RpcError as e:
        trailers = dict(e.trailing_metadata() or ())
        retry_ms = trailers.get("retry-after-ms")
        return {"code": e.code(), "details": e.details(), "retry_ms": retry_ms,
                "s": time.monotonic() - t0}  # fmt: skip


@pytest.mark.slow
def test_burst_of_ten_times_capacity_refuses_the_excess_and_finishes_the_rest(
    triton_server: TritonServer, spawn_api, ledger
) -> None:
    entry = ledger("overload", name=f"{BURSTS} bursts of {BURST} (capacity {CAPACITY})",
                   count=BURSTS * BURST, accepted=0, lost=0, refused=0)  # fmt: skip
    api = spawn_api("--triton-url", triton_server.grpc_url, "--max-concurrency", str(CONCURRENCY),
                    "--max-queue", str(QUEUE))  # fmt: skip
    assert good_request_succeeds(api.stub)  # warm: the first request loads caches
    rss_before = rss_bytes(api.pid)
    refusal_s: list[float] = []
    for _ in range(BURSTS):
        start = threading.Barrier(BURST)
        with ThreadPoolExecutor(BURST) as pool:
            futures = [pool.submit(one_request, api, i, start) for i in range(BURST)]
            results = [f.result(timeout=DEADLINE_S + 70) for f in futures]  # none waits forever
        accepted = [r for r in results if r["code"] == C.OK]
        refused = [r for r in results if r["code"] == C.RESOURCE_EXHAUSTED]
        assert len(accepted) + len(refused) == BURST, [r for r in results if r not in accepted]
        assert CAPACITY <= len(accepted) < BURST
        for r in refused:
            assert "queue is full" in r["details"] and int(r["retry_ms"]) > 0
        entry["accepted"] += len(accepted)
        entry["refused"] += len(refused)
        entry["lost"] += sum(not r["done"] for r in accepted)
        refusal_s += [r["s"] for r in refused]
        api.wait_idle(60)
    rss_after = rss_bytes(api.pid)
    entry.update(
        rss_before_mb=round(rss_before / 2**20, 1),
        rss_after_mb=round(rss_after / 2**20, 1),
        max_refusal_s=round(max(refusal_s), 3),
    )
    print(f"overload: {entry}")
    assert entry["lost"] == 0
    # Refusals do not wait for a slot: each comes back long before one generation ends.
    assert max(refusal_s) < 5.0, refusal_s
    assert rss_after - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_after)
    assert api.proc.poll() is None and good_request_succeeds(api.stub)
