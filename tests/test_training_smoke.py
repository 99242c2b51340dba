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
