"""The benchmark code's arithmetic, without servers: FLOP counting against hand counts on
tiny ONNX graphs, Triton metric parsing and batch statistics, the tuned repository
variants, the load test's phase report and loopback guard, and py-spy summaries.
No timing assertions: benchmarks print numbers, tests check the code that makes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from bench.flops import conv_flops, count_flops, gemm_flops, matmul_flops
from bench.loadtest import check_loopback, phase_summary
from bench.metrics import BatchStats, Snapshot, model_counters
from bench.nvidia import denoiser_input, parse_aiperf, parse_perf_csv
from bench.profile import available, py_spy, summarise
from bench.servers import (
    FLOOR_MODEL,
    FLOOR_MODEL_PY,
    DenoiserKnobs,
    add_floor_model,
    repository_variant,
)
from bench.throughput import percentiles, workload_prompts
from cinetron.contract.manifest import ModelManifest
from cinetron.contract.repository import repository_spec
from cinetron.export.configs import (
    Flavour,
    RepositoryOptions,
    model_config,
    read_config,
    write_config,
)


def _init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full(shape, 0.1, np.float32), name)


def tiny_graph() -> onnx.ModelProto:
    """x [B, 6] → Gemm(transB) → Reshape to [B, 2, 3] (shape computed at run time)
    → MatMul [3, 5] → Reshape to [B, 1, 2, 5] → Conv 3×3 (4 → ... channels) → y.

    Hand count at batch B:
      Gemm   [B,6]·[6,6]ᵀ            2·B·6·6      = 72·B
      MatMul [B,2,3]@[3,5]           2·B·2·5·3    = 60·B
      Conv   in [B,1,2,5], w [4,1,3,3], pads 1 → out [B,4,2,5]
                                     2·(B·4·2·5)·1·9 = 720·B
    """
    nodes = [
        helper.make_node("Gemm", ["x", "w_gemm"], ["g"], transB=1),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "zero"], ["b"], axis=0),
        helper.make_node("Concat", ["b", "two_three"], ["shape3"], axis=0),
        helper.make_node("Reshape", ["g", "shape3"], ["g3"]),
        helper.make_node("MatMul", ["g3", "w_mm"], ["m"]),
        helper.make_node("Concat", ["b", "one_two_five"], ["shape4"], axis=0),
        helper.make_node("Reshape", ["m", "shape4"], ["m4"]),
        helper.make_node("Conv", ["m4", "w_conv"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [
        _init("w_gemm", (6, 6)),
        _init("w_mm", (3, 5)),
        _init("w_conv", (4, 1, 3, 3)),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "two_three"),
        numpy_helper.from_array(np.array([1, 2, 5], np.int64), "one_two_five"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("batch", [1, 3])
def test_flop_count_of_a_tiny_graph_matches_the_hand_count(batch: int, tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_graph(), str(path))
    count = count_flops(path, batch=batch)
    assert count.by_op == {"Gemm": 72 * batch, "MatMul": 60 * batch, "Conv": 720 * batch}
    assert count.total == 852 * batch
    assert count.nodes == {"MatMul": 1, "Gemm": 1, "Conv": 1}


def test_matmul_flops_broadcast_and_vectors() -> None:
    assert matmul_flops([2, 3], [3, 4]) == 2 * 2 * 4 * 3
    # attention scores: [B, heads, N, d] @ [B, heads, d, N]
    assert matmul_flops([2, 4, 16, 8], [2, 4, 8, 16]) == 2 * 2 * 4 * 16 * 16 * 8
    assert matmul_flops([5, 7, 3], [3, 2]) == 2 * 5 * 7 * 2 * 3  # weights broadcast
    assert matmul_flops([3], [3, 4]) == 2 * 4 * 3  # vector @ matrix
    with pytest.raises(ValueError, match="inner dimensions"):
        matmul_flops([2, 3], [4, 5])


def test_gemm_and_conv_flops() -> None:
    assert gemm_flops([4, 6], [6, 5], False, False) == 2 * 4 * 5 * 6
    assert gemm_flops([6, 4], [5, 6], True, True) == 2 * 4 * 5 * 6
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm_flops([4, 6], [5, 6], False, False)
    # grouped conv: weight [C_out, C_in/group, k, k] already holds C_in/group
    assert conv_flops([8, 2, 3, 3], [1, 8, 4, 4], group=4) == 2 * (8 * 4 * 4) * 2 * 9


METRICS = """# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="denoiser",version="1"} 40
nv_inference_count{model="vae_decoder",version="1"} 3
nv_inference_exec_count{model="denoiser",version="1"} 5
nv_inference_request_success{model="denoiser",version="1"} 20
nv_inference_request_failure{model="denoiser",reason="BACKEND",version="1"} 1
nv_inference_request_failure{model="denoiser",reason="REJECTED",version="1"} 2
nv_inference_queue_duration_us{model="denoiser",version="1"} 30000
"""


def test_model_counters_read_one_model_and_sum_failure_reasons() -> None:
    c = model_counters(METRICS, "denoiser")
    assert c["nv_inference_count"] == 40
    assert c["nv_inference_exec_count"] == 5
    assert c["nv_inference_request_failure"] == 3
    assert model_counters(METRICS, "vae_decoder")["nv_inference_count"] == 3
    assert model_counters(METRICS, "nope")["nv_inference_count"] == 0


def test_batch_stats_between_two_snapshots() -> None:
    before = Snapshot(model_counters("", "denoiser"), {2: (1, 10_000_000)})
    after = Snapshot(
        model_counters(METRICS, "denoiser"), {2: (2, 20_000_000), 16: (4, 400_000_000)}
    )
    s = BatchStats.between(before, after)
    assert s.avg_batch_size == 8.0  # 40 samples in 5 executions
    assert s.requests_per_execution == 4.0
    assert s.queue_ms_per_request == pytest.approx(1.5)
    assert s.histogram == {2: 1, 16: 4}
    assert s.compute_s == pytest.approx(0.41)
    assert json.dumps(s.as_dict())  # the report is JSON


def denoiser_config_dir(tmp_path: Path) -> Path:
    manifest = ModelManifest(family="t", version="v", latent_channels=4, latent_frames=2,
                             latent_height=4, latent_width=4, frames=4, height=16, width=16,
                             fps=8, text_length=8, text_dim=16)  # fmt: skip
    spec = next(m for m in repository_spec(manifest) if m.name == "denoiser")
    repo = tmp_path / "repo"
    write_config(repo / "denoiser", model_config(spec, RepositoryOptions()))
    (repo / "denoiser" / "1").mkdir()
    (repo / "denoiser" / "1" / "model.onnx").write_bytes(b"onnx bytes")
    (repo / "cinetron.json").write_text(manifest.to_json())
    return repo


def test_repository_variant_edits_only_the_denoiser_knobs(tmp_path: Path) -> None:
    repo = denoiser_config_dir(tmp_path)
    knobs = DenoiserKnobs(instances=2, threads=3, delay_us=2500, preferred=(8, 16))
    out = repository_variant(repo, tmp_path / "variant", knobs)
    config = read_config(out / "denoiser" / "config.pbtxt")
    assert config.instance_group[0].count == 2
    assert config.parameters["intra_op_threads"].string_value == "3"
    assert config.dynamic_batching.max_queue_delay_microseconds == 2500
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert "cinetron_manifest" in config.parameters  # the rest is kept
    onnx_file = out / "denoiser" / "1" / "model.onnx"
    assert onnx_file.is_symlink() and onnx_file.read_bytes() == b"onnx bytes"
    original = read_config(repo / "denoiser" / "config.pbtxt")
    assert original.instance_group[0].count == 1  # the source is untouched


def test_repository_variant_threads_and_spinning_reach_every_onnxruntime_model_like_export(
    tmp_path: Path,
) -> None:
    repo = denoiser_config_dir(tmp_path)
    manifest = ModelManifest.load(repo)
    decoder = next(m for m in repository_spec(manifest) if m.name == "vae_decoder")
    write_config(repo / "vae_decoder", model_config(decoder, RepositoryOptions()))
    knobs = DenoiserKnobs(threads=2, spinning=False)
    out = repository_variant(repo, tmp_path / "variant", knobs)
    denoiser = read_config(out / "denoiser" / "config.pbtxt")
    assert denoiser.parameters["intra_op_threads"].string_value == "2"
    assert denoiser.parameters["allow_spinning"].string_value == "0"
    vae = read_config(out / "vae_decoder" / "config.pbtxt")
    assert vae.parameters["intra_op_threads"].string_value == "2"
    assert vae.parameters["allow_spinning"].string_value == "0"
    assert knobs.label() == "threads=2 spinning=off"


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_the_floor_model_is_the_denoisers_config_as_a_python_model(
    tmp_path: Path, flavour: Flavour
) -> None:
    manifest = ModelManifest.load(denoiser_config_dir(tmp_path))
    spec = next(m for m in repository_spec(manifest) if m.name == "denoiser")
    repo = tmp_path / flavour
    denoiser = model_config(spec, RepositoryOptions(flavour=flavour, denoiser_instances=2))
    write_config(repo / "denoiser", denoiser)
    add_floor_model(repo)
    floor = read_config(repo / FLOOR_MODEL / "config.pbtxt")
    assert floor.name == FLOOR_MODEL and floor.backend == "python"
    assert not floor.platform and not floor.default_model_filename
    assert not floor.HasField("optimization")  # no TensorRT accelerator on a Python model
    assert [(g.count, g.kind) for g in floor.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_CPU)
    ]
    assert floor.input == denoiser.input and floor.output == denoiser.output
    assert floor.dynamic_batching == denoiser.dynamic_batching
    model_py = (repo / FLOOR_MODEL / "1" / "model.py").read_text()
    assert model_py == FLOOR_MODEL_PY.read_text()
    assert (repo / FLOOR_MODEL / "1" / "cinetron_backend" / "batching.py").exists()


def test_repository_variant_can_turn_step_batching_off(tmp_path: Path) -> None:
    repo = denoiser_config_dir(tmp_path)
    out = repository_variant(repo, tmp_path / "off", DenoiserKnobs(batching=False))
    config = read_config(out / "denoiser" / "config.pbtxt")
    assert not config.HasField("dynamic_batching")
    assert config.max_batch_size == 16  # still takes a CFG batch of 2 in one call
    assert DenoiserKnobs(batching=False).label() == "no dynamic batching"


def test_workload_prompts_are_unique_and_never_colour_on_same_background() -> None:
    prompts = workload_prompts()
    assert len(prompts) == len(set(prompts)) == 8 * 3 * 7 * 3 - 3 * 7  # no white on white
    assert not any("white" in p.split(" on a ")[0] and "white background" in p for p in prompts)


def test_percentiles() -> None:
    p = percentiles([float(x) for x in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5)
    assert p["p99"] == pytest.approx(99.01)
    assert np.isnan(percentiles([])["p95"])


def test_load_test_phase_summary_counts_errors_by_code() -> None:
    records: list[dict[str, Any]] = [
        {"end_s": 1.0, "latency_s": 1.0, "first_progress_s": 0.1, "code": "OK"},
        {"end_s": 12.0, "latency_s": 2.0, "first_progress_s": 0.2, "code": "OK"},
        {"end_s": 15.0, "latency_s": 3.0, "first_progress_s": None, "code": "RESOURCE_EXHAUSTED"},
        {"end_s": 18.0, "latency_s": 4.0, "first_progress_s": 0.3, "code": "OK"},
    ]
    steady = phase_summary(records, 10.0, 20.0)
    assert steady["completed"] == 2 and steady["errors"] == 1
    assert steady["errors_by_code"] == {"RESOURCE_EXHAUSTED": 1}
    assert steady["videos_per_min"] == pytest.approx(12.0)  # 2 videos in 10 s
    assert steady["latency_s"]["p50"] == pytest.approx(3.0)
    assert phase_summary(records, 0.0, 10.0)["completed"] == 1


def test_load_test_only_targets_loopback() -> None:
    check_loopback("127.0.0.1:50051")
    check_loopback("localhost:50051")
    with pytest.raises(SystemExit, match="not a loopback address"):
        check_loopback("10.1.2.3:50051")
    with pytest.raises(SystemExit, match="host:port"):
        check_loopback("127.0.0.1")


def test_py_spy_summary_ranks_self_time() -> None:
    raw = "main (a.py:1);run (ort.py:9) 150\nmain (a.py:1);encode (v.py:3) 50\nbad line\n"
    s = summarise(raw, seconds=4.0)
    assert s["samples"] == 200
    assert s["busy_fraction"] == pytest.approx(0.5)  # 200 of 400 possible samples at 100 Hz
    assert s["top_self"][0] == {"frame": "run (ort.py:9)", "share": 0.75}


def test_sweep_rounds_pool_videos_latencies_and_batches() -> None:
    from bench.sweep import merge_rounds

    def point(videos: int, wall: float, lat: list[float], samples: float, execs: float) -> dict:
        return {"concurrency": 8, "videos": videos, "errors": 0, "wall_s": wall,
                "videos_per_min": 60 * videos / wall, "latencies_s": lat,
                "triton_denoiser": {"samples": samples, "executions": execs},
                "cpu_s": {"bench": wall / 2, "stub:denoiser": wall}}  # fmt: skip

    base = {"variant": "v", "knobs": "k", "denoiser": {"instances": 2}}
    merged = merge_rounds([
        {**base, "points": [point(4, 2.0, [1.0, 2.0, 3.0, 4.0], 40, 10)]},
        {**base, "points": [point(2, 2.0, [5.0, 6.0], 8, 4)]},
    ])  # fmt: skip
    (p,) = merged["points"]
    assert merged["rounds"] == 2
    assert p["videos"] == 6 and p["videos_per_min"] == pytest.approx(90.0)  # 6 in 4 s
    assert p["videos_per_min_each_round"] == [120.0, 60.0]
    assert p["latency_s"]["p50"] == pytest.approx(3.5)
    assert p["triton_denoiser"]["avg_batch_size"] == pytest.approx(48 / 14)
    assert p["cpu_cores_busy"] == pytest.approx(1.5)


def test_batch_scaling_rows_and_their_markdown(tmp_path: Path) -> None:
    from bench.flops import batch_scaling
    from bench.report import flops_md

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_graph(), str(path))
    rows = batch_scaling(path, sizes=(1, 4), repeats=2)
    assert [r["batch"] for r in rows] == [1.0, 4.0]
    for r in rows:  # FLOP/s is the hand count (852 per sample) over the measured time
        assert r["flops_per_s"] == pytest.approx(852 * r["batch"] / (r["ms"] / 1e3))
        assert r["ms_per_sample"] == pytest.approx(r["ms"] / r["batch"])
    table = flops_md({"batch_scaling": rows})
    assert table.count("\n") == 3 and "| 4 |" in table


def test_py_spy_is_found_beside_this_python_without_an_activated_venv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`make bench` runs .venv/bin/cinetron with the venv's bin/ not on PATH."""
    monkeypatch.setenv("PATH", "/nonexistent")
    beside = Path(sys.executable).with_name("py-spy")
    assert py_spy() == (str(beside) if beside.exists() else None)
    assert available() == beside.exists()


PERF_CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,\
p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait
4,553.6,15,0,3420,43,6615,1650,3,12750,20720,27610,43850,14100,18,14000
"""


def test_perf_analyzer_csv_becomes_milliseconds_and_inferences() -> None:
    row = parse_perf_csv(PERF_CSV.replace("\\\n", ""))
    assert row["infer_per_s"] == pytest.approx(553.6)
    assert (row["p50_ms"], row["p99_ms"], row["avg_ms"]) == pytest.approx((12.75, 43.85, 14.1))
    assert row["server_queue_ms"] == pytest.approx(3.42)
    with pytest.raises(ValueError, match="one perf_analyzer row"):
        parse_perf_csv(PERF_CSV.replace("\\\n", "").splitlines()[0] + "\n")


def test_aiperf_report_becomes_videos_per_minute_and_seconds() -> None:
    report = {
        "request_latency": {"unit": "ms", "avg": 394.4, "p50": 381.7, "p90": 549.6,
                            "p95": 559.4, "p99": 567.2},
        "request_throughput": {"unit": "requests/sec", "avg": 4.788},
        "request_count": {"avg": 8},
        "request_error_rate": {"avg": 12.5},
        "benchmark_duration": {"avg": 1.41},
    }  # fmt: skip
    out = parse_aiperf(report)
    assert out["videos_per_min"] == pytest.approx(287.28)
    assert out["latency_s"]["p50"] == pytest.approx(0.3817) and out["errors"] == 1
    assert (out["requests"], out["duration_s"]) == (8, 1.41)


def test_perf_analyzer_input_matches_the_denoisers_served_inputs(tmp_path: Path) -> None:
    repo = denoiser_config_dir(tmp_path)
    manifest = ModelManifest.load(repo)
    data = json.loads(denoiser_input(manifest, tmp_path / "in.json").read_text())["data"][0]
    config = read_config(repo / "denoiser" / "config.pbtxt")
    served = {i.name: list(i.dims) for i in config.input}
    assert {name: d["shape"] for name, d in data.items()} == served
    for name, d in data.items():
        assert len(d["content"]) == int(np.prod(d["shape"])), name
    assert set(data["text_mask"]["content"]) <= {0, 1} and data["text_mask"]["content"][0] == 1
