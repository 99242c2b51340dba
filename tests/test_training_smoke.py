"""The training code runs end to end on a tiny configuration and writes loadable weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.models import train
from cinetron.models.loading import load_dit, load_vae


def test_a_few_training_steps_write_weights_that_generate_a_video(
    tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "weights"
    train.main(
        [
            "--out",
            str(out),
            "--threads",
            "1",
            "--vae-steps",
            "2",
            "--vae-batch",
            "2",
            "--dit-examples",
            "64",
            "--dit-steps",
            "2",
            "--dit-batch",
            "4",
            "--log-every",
            "1",
        ]
    )
    assert {"vae.safetensors", "dit.safetensors", "model.json"} <= {p.name for p in out.iterdir()}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {row["stage"] for row in log} == {"vae", "dit"}
    assert all(np.isfinite(row["loss"]) for row in log)
    load_vae(out), load_dit(out)

    from cinetron.transports.torch_local import TorchTransport

    with TorchTransport(out, threads=1) as transport:
        video = Pipeline(transport).generate(GenerationRequest("a red circle", steps=2))
    assert video.frames.shape == (16, 64, 64, 3) and video.frames.dtype == np.uint8


def test_a_plain_fine_tune_resumes_the_weights_and_keeps_the_measured_sampler_presets(
    tmp_path: Path,
) -> None:
    """``make train-plain``'s stage on a tiny configuration: resumed from the weights,
    trained on single objects in their plainest caption, the presets bench/samplers.py
    measured still in model.json afterwards."""
    out = tmp_path / "weights"
    tiny = ["--out", str(out), "--threads", "1", "--dit-examples", "64", "--dit-steps", "2"]
    train.main([*tiny, "--vae-steps", "1", "--vae-batch", "2", "--dit-batch", "4"])
    meta = json.loads((out / "model.json").read_text())
    meta["samplers"] = {"euler": {"steps": 20, "guidance": 4.0, "held_out_accuracy": 0.5}}
    (out / "model.json").write_text(json.dumps(meta))
    train.main([*tiny, "--skip-vae", "--resume", "--plain-singles", "--dit-batch", "4"])
    assert json.loads((out / "model.json").read_text())["samplers"] == meta["samplers"]
    load_dit(out)


def test_plain_examples_are_one_object_placed_as_in_v1_in_its_plainest_caption() -> None:
    from cinetron.models import captions

    rng = np.random.default_rng(3)
    for _ in range(50):
        scene, text = train.random_example(rng, plain=True)
        (thing,) = scene.things
        assert text == captions.canonical_caption(scene.attributes)
        assert not captions.is_held_out(scene.attributes)
        half = thing.size / 2
        assert half <= thing.x <= 64 - half and half <= thing.y <= 64 - half
