"""Smoke tests of the benchmarks against the real tritonserver fixture: tiny workloads
(2 steps, a few videos) through the client, the API and Locust, checking that what the
benchmarks report is what happened (videos made, Triton's counters moved, no errors).
No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.flops import count_flops
from bench.latency import main as latency_main
from bench.latency import step_inputs
from bench.loadtest import main as loadtest_main
from bench.metrics import BatchStats, Snapshot, triton_processes
from bench.report import latency_md, loadtest_md
from bench.servers import FLOOR_MODEL, DenoiserKnobs, api_server
from bench.servers import triton as served_triton
from bench.throughput import api_generate, pipeline_generate, run_point
from cinetron.transports.triton_grpc import TritonGrpcTransport

pytestmark = pytest.mark.triton

STEPS = 2


def test_client_point_reports_videos_and_triton_batches(triton_server) -> None:
    jobs = [("a red circle moving up on a black background", i) for i in range(4)]
    with TritonGrpcTransport(triton_server.grpc_url) as transport:
        before = Snapshot.take(triton_server.metrics_url, triton_server.grpc_url)
        point = run_point(pipeline_generate(transport, STEPS), 2, jobs)
        after = Snapshot.take(triton_server.metrics_url, triton_server.grpc_url)
    assert point["errors"] == 0, point["error_examples"]
    assert point["videos"] == 4
    stats = BatchStats.between(before, after)
    # Every step is one denoiser call carrying CFG's cond + uncond (2 samples).
    assert stats.requests == 4 * STEPS
    assert stats.samples == 2 * stats.requests
    assert 2.0 <= stats.avg_batch_size <= 2.0 * 2  # 2 callers: at most both in one batch
    assert sum(stats.histogram.values()) == stats.executions
    assert stats.compute_s > 0


def test_triton_processes_name_the_denoiser_stub(triton_server) -> None:
    names = triton_processes(triton_server.pid)
    assert names["tritonserver"] == triton_server.pid
    assert "stub:denoiser" in names and "stub:vae_decoder" in names


def test_api_point_and_load_test_against_the_api(triton_server, tmp_path: Path) -> None:
    with api_server(triton_server.grpc_url, max_concurrency=2) as api:
        generate, close = api_generate(api.address, STEPS)
        try:
            point = run_point(generate, 2, [("a blue square growing on a gray background", 1)] * 2)
        finally:
            close()
        assert point["errors"] == 0, point["error_examples"]
        assert point["videos"] == 2 and point["first_progress_ms"]["p50"] > 0

        out = tmp_path / "loadtest.json"
        code = loadtest_main([
            "--address", api.address, "--users", "2", "--ramp-s", "1", "--steady-s", "20",
            "--max-requests", "4", "--steps", str(STEPS), "--timeout-s", "60",
            "--out", str(out),
        ])  # fmt: skip
    report = json.loads(out.read_text())
    assert code == 0
    assert report["calls_started"] == 4 and report["stopped_by"] == "request budget"
    assert report["total"]["completed"] == 4 and report["total"]["errors"] == 0
    assert (tmp_path / "loadtest_stats.csv").exists()  # Locust's own stats beside it
    table = loadtest_md(report)  # the README's table renders from the report
    assert "| total |" in table and "| 4 | 0 |" in table


def test_load_test_over_http_creates_polls_and_downloads_like_an_openai_client(
    triton_server, tmp_path: Path
) -> None:
    out = tmp_path / "loadtest_http.json"
    with api_server(triton_server.grpc_url, max_concurrency=2) as api:
        code = loadtest_main([
            "--protocol", "http", "--address", api.http_url.split("://", 1)[1], "--users", "2",
            "--ramp-s", "0", "--steady-s", "20", "--max-requests", "4", "--steps", str(STEPS),
            "--poll-ms", "50", "--timeout-s", "60", "--out", str(out),
        ])  # fmt: skip
    report = json.loads(out.read_text())
    assert code == 0 and report["settings"]["protocol"] == "http"
    assert report["settings"]["poll_ms"] == 50
    assert report["total"]["completed"] == 4 and report["total"]["errors"] == 0
    stats = (tmp_path / "loadtest_http_stats.csv").read_text()
    assert "GET /v1/videos/:id/content" in stats and "POST /v1/videos" in stats


def test_denoiser_flops_scale_with_the_batch(model_repository: Path) -> None:
    path = model_repository / "denoiser" / "1" / "model.onnx"
    one, two = count_flops(path, batch=1), count_flops(path, batch=2)
    assert one.nodes["MatMul"] > 0 and one.total > 0
    assert two.total == 2 * one.total  # every counted op is per sample


def test_the_floor_model_echoes_and_the_latency_bench_measures_it(
    model_repository: Path, tmp_path: Path
) -> None:
    """``denoiser_floor`` answers a denoiser call with its latents, untouched, and
    ``python -m bench latency`` times it beside the real denoiser."""
    knobs = DenoiserKnobs(spinning=False)  # as `make bench`'s latency setting serves it
    with served_triton(model_repository, knobs, floor=True) as server:
        with TritonGrpcTransport(server.grpc_url, denoiser_model=FLOOR_MODEL) as floor:
            latents, timestep, embeds, mask = step_inputs(floor)
            assert np.array_equal(floor.denoise(latents, timestep, embeds, mask), latents)
        out = tmp_path / "latency.json"
        code = latency_main([
            "--url", server.grpc_url, "--repo", str(model_repository), "--steps", "2",
            "--seeds", "1", "--rounds", "1", "--step-calls", "3", "--skip", "torch",
            "--no-spinning",
            "--out", str(out),
        ])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["workload"]["spinning"] is False
    ort_step = report["transports"]["onnx"]["step_ms_median"]
    for kind in ("triton", "triton-shm"):
        r = report["transports"][kind]
        assert 0 < r["floor_ms_min"] <= r["floor_ms_median"]
        # the same call without the compute must cost less than with it
        assert r["floor_ms_median"] < r["step_ms_median"]
        assert r["floor_step_vs_onnx"] == pytest.approx(1 + r["floor_ms_median"] / ort_step)
    # each plain-gRPC floor call was the one request in its window of floor statistics
    assert report["triton_floor_per_grpc_call"]["requests"] == pytest.approx(1.0)
    assert report["triton_floor_per_grpc_call"]["infer_ms"] > 0
    assert "Serving floor" in latency_md(report)
