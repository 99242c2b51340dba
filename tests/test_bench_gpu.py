"""``python -m bench gpu`` on the CPU with tiny counts: the same code a GPU runs, its JSON and
tables, the lockstep batched loop against ``Pipeline.generate``, and the DiT off the CPU.
No timing assertions beyond "positive and consistent": tests check the code, the GPU run
makes the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import report as bench_report
from bench.gpu import (
    DeviceTorchTransport,
    PromptTable,
    main,
)
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.models.loading import DEFAULT_WEIGHTS, load_dit, shapes_manifest

PROMPTS = ["a red circle moving to the left on a black background",
           "a blue square growing on a white background",
           "a green triangle moving up on a gray background"]  # fmt: skip


@pytest.fixture(scope="module")
def table() -> PromptTable:
    """Embeddings of the model's shapes (values made up: the text encoder is not under test)."""
    m = shapes_manifest(DEFAULT_WEIGHTS)
    texts = PromptTable.texts_for(PROMPTS, m)
    n = len(texts)
    rng = np.random.default_rng(0)
    mask = np.zeros((n, m.text_length), np.int64)
    mask[:, :8] = 1
    embeds = rng.standard_normal((n, m.text_length, m.text_dim), dtype=np.float32)
    return PromptTable(texts, embeds, mask, np.full(n, 8, np.int64), PROMPTS)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)  # tiny models; keep the rest of the machine free


def test_gpu_bench_on_cpu_writes_consistent_json_tables_and_report(
    table: PromptTable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz, out = tmp_path / "embeds.npz", tmp_path / "results" / "gpu.json"
    table.save(npz)
    argv = ["--device", "cpu", "--dtypes", "fp32", "--batches", "2", "4", "--warmup", "1",
            "--repeats", "3", "--concurrency", "2", "--videos", "2", "--steps", "2",
            "--embeddings", str(npz), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())

    assert r["machine"]["device"] == "cpu" and r["machine"]["device_name"]
    assert r["machine"]["torch"] == torch.__version__
    s = r["settings"]
    assert (s["batches"], s["concurrency"], s["steps"], s["dtypes"]) == (
        [2, 4],
        [1, 2],
        2,
        ["fp32"],
    )

    calls = {c["batch"]: c for c in r["denoiser_calls"]}
    assert sorted(calls) == [2, 4]
    for b, c in calls.items():
        assert c["calls_timed"] == 3
        assert 0 < c["ms_per_call_min"] <= c["ms_per_call"]
        assert c["ms_per_sample"] == pytest.approx(c["ms_per_call"] / b)
    assert calls[2]["back_to_back"]["calls"] == 2 and calls[2]["back_to_back"]["ms"] > 0
    ratio = r["summary"]["fp32"]["largest_vs_k_smallest"]
    assert ratio == pytest.approx(calls[4]["ms_per_call"] / (2 * calls[2]["ms_per_call"]))

    points = [
        (p["concurrency"], p["mode"], p["samples_per_denoiser_call"]) for p in r["end_to_end"]
    ]
    assert points == [(1, "one", 2), (2, "threads", 2), (2, "batched", 4)]
    for p in r["end_to_end"]:
        assert p["videos"] == 2 and p["wall_s"] > 0 and p["latency_s_p50"] > 0
        assert p["videos_per_min"] == pytest.approx(60 * p["videos"] / p["wall_s"])
        assert p["s_per_video"] == pytest.approx(p["wall_s"] / p["videos"])
    one = r["end_to_end"][0]
    assert one["speedup_vs_c1"] == pytest.approx(1.0)
    batched = r["end_to_end"][2]
    assert batched["speedup_vs_c1"] == pytest.approx(
        batched["videos_per_min"] / one["videos_per_min"]
    )
    assert r["batching_check"][0]["max_abs_uint8"] <= 1

    assert "| fp32 | 2 |" in printed and "t(4) / (2 × t(2))" in printed
    assert "steps batched (one call of 2c)" in printed

    assert bench_report.main(["--results", str(out.parent)]) == 0
    rendered = capsys.readouterr().out
    assert "#### GPU (`python -m bench gpu`)" in rendered
    assert "| fp32 | 2 | c callers, steps batched (one call of 2c) | 4 |" in rendered


def test_lockstep_batching_makes_pipeline_videos_with_one_call_per_step(
    table: PromptTable,
) -> None:
    transport = DeviceTorchTransport(DEFAULT_WEIGHTS, "cpu", "fp32", table)
    requests = [GenerationRequest(p, seed=3 + i, steps=3) for i, p in enumerate(PROMPTS)]
    one_by_one = [Pipeline(transport).generate(r).frames for r in requests]

    sizes: list[int] = []
    denoise = transport.denoise

    def counting(latents, *args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(len(latents))
        return denoise(latents, *args, **kwargs)

    transport.denoise = counting  # type: ignore[method-assign]
    batched = [v.frames for v in Pipeline(transport).generate_lockstep(requests)]

    assert sizes == [2 * len(requests)] * 3  # CFG pairs of every request, one call per step
    for a, b in zip(one_by_one, batched, strict=True):
        assert a.shape == b.shape
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1


def test_lockstep_batching_refuses_requests_it_cannot_share_a_call(table: PromptTable) -> None:
    transport = DeviceTorchTransport(DEFAULT_WEIGHTS, "cpu", "fp32", table)
    mixed = [GenerationRequest(PROMPTS[0], steps=2), GenerationRequest(PROMPTS[1], steps=3)]
    with pytest.raises(ValueError, match="lockstep batching needs one"):
        Pipeline(transport).generate_lockstep(mixed)
    noisy = [GenerationRequest(p, steps=2, scheduler="euler_ancestral") for p in PROMPTS[:2]]
    with pytest.raises(ValueError, match="draws fresh noise per generation"):
        Pipeline(transport).generate_lockstep(noisy)


def test_the_prompt_table_names_a_prompt_it_lacks(table: PromptTable) -> None:
    transport = DeviceTorchTransport(DEFAULT_WEIGHTS, "cpu", "fp32", table)
    assert transport.encode_prompt(table.prompts[:1]).embeds.shape[0] == 1
    with pytest.raises(KeyError, match="no embeddings for prompt 'a purple circle'"):
        transport.encode_prompt(["a purple circle"])


def test_the_dit_makes_no_tensor_on_the_cpu() -> None:
    """The meta device stands in for CUDA: any tensor the forward makes on the CPU fails
    (``timestep_embedding`` once built its frequencies there)."""
    m = shapes_manifest(DEFAULT_WEIGHTS)
    model = load_dit(DEFAULT_WEIGHTS).to("meta")
    out = model(
        torch.empty((4, *m.latent_shape), device="meta"),
        torch.empty(4, device="meta"),
        torch.empty((4, m.text_length, m.text_dim), device="meta"),
        torch.ones((4, m.text_length), dtype=torch.int64, device="meta"),
    )
    assert out.device.type == "meta" and tuple(out.shape) == (4, *m.latent_shape)
