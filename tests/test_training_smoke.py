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


def test_a_decoder_fine_tune_keeps_the_encoder_and_the_dit_that_reads_its_latents(
    tmp_path: Path,
) -> None:
    """``make train-decoder`` on a tiny configuration: only the decoder's weights change,
    and model.json still describes the DiT (its latents are the same)."""
    import torch

    out = tmp_path / "weights"
    tiny = ["--out", str(out), "--threads", "1", "--dit-examples", "64", "--dit-batch", "4"]
    train.main([*tiny, "--vae-steps", "1", "--vae-batch", "2", "--dit-steps", "2"])
    before_vae, before_meta = load_vae(out), json.loads((out / "model.json").read_text())
    dit_bytes = (out / "dit.safetensors").read_bytes()
    train.main(
        [
            *tiny,
            "--dit-steps",
            "0",
            "--vae-finetune",
            "--vae-decoder-only",
            "--vae-shape-weight",
            "4",
            "--vae-steps",
            "2",
            "--vae-batch",
            "2",
        ]
    )
    after = load_vae(out)
    for name, value in before_vae.encoder.state_dict().items():
        assert torch.equal(value, after.encoder.state_dict()[name]), name
    assert torch.equal(before_vae.latent_std, after.latent_std)
    changed = [
        name
        for name, value in before_vae.decoder.state_dict().items()
        if not torch.equal(value, after.decoder.state_dict()[name])
    ]
    assert changed
    assert json.loads((out / "model.json").read_text()) == before_meta
    assert (out / "dit.safetensors").read_bytes() == dit_bytes
    load_dit(out)


def test_a_decoder_alone_needs_the_trained_encoder() -> None:
    import pytest

    with pytest.raises(SystemExit):
        train.main(["--vae-decoder-only", "--dit-steps", "0"])


def test_object_colours_are_the_palette_offsets_from_the_commonest_colour() -> None:
    from cinetron.models import world

    rng = np.random.default_rng(0)
    pair = world.sample_pair(
        rng, "gray", ("purple", "triangle", "still"), ("red", "circle", "left"), "left of"
    )
    single = world.sample_scene(rng, "white", "blue", "square", "up")
    empty = world.Scene("black", ())
    offsets, real = train.object_colours(np.stack([world.render(s) for s in (pair, single, empty)]))
    gray = np.array(world.BACKGROUNDS["gray"], dtype=np.float32)
    expected = [(np.array(world.COLORS[c]) - gray) / 127.5 for c in ("purple", "red")]
    got = sorted(offsets[0].numpy().tolist())
    np.testing.assert_allclose(got, sorted(e.tolist() for e in expected), rtol=1e-6)
    assert real.tolist() == [[True, True], [True, False], [False, False]]
    white = np.array(world.BACKGROUNDS["white"], dtype=np.float32)
    blue = (np.array(world.COLORS["blue"]) - white) / 127.5
    np.testing.assert_allclose(offsets[1, 0].numpy(), blue, rtol=1e-6)


def test_shape_error_is_the_mask_error_whatever_the_contrast() -> None:
    """A pixel drawn half-way between background and object costs 1/4 (a half in mask
    units, squared) on a dim pair of colours and a bright one alike; an error across the
    line costs nothing, and a colour the clip does not have counts for nothing."""
    import torch

    dim = torch.tensor([[[0.1, -0.7, 0.5]]])  # purple on gray, roughly
    bright = torch.tensor([[[-0.3, -1.8, -1.8]]])  # red on white
    for offset in (dim, bright):
        real = torch.tensor([[True]])
        half = (0.5 * offset[0, 0]).view(1, 3, 1, 1, 1)
        assert torch.allclose(train.shape_error(half, offset, real), torch.tensor(0.25))
        across = torch.linalg.cross(offset[0, 0], torch.tensor([1.0, 0.0, 0.0])).view(1, 3, 1, 1, 1)
        assert torch.allclose(train.shape_error(across, offset, real), torch.tensor(0.0), atol=1e-6)
        padded = torch.cat([offset, torch.tensor([[[1.0, 1.0, 1.0]]])], dim=1)
        assert torch.allclose(
            train.shape_error(half, padded, torch.tensor([[True, False]])), torch.tensor(0.25)
        )
