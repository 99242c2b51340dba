"""Load the trained shapes model from a weights folder (``weights/`` by default)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load_file

from cinetron.contract.manifest import ModelManifest, SamplerPreset, SchedulerDefaults
from cinetron.models import captions
from cinetron.models.dit import DiTConfig, VideoDiT
from cinetron.models.vae import VAEConfig, VideoAutoencoder

# The committed weights; CINETRON_WEIGHTS points elsewhere (e.g. a fresh `make train`).
DEFAULT_WEIGHTS = Path(
    os.environ.get("CINETRON_WEIGHTS", Path(__file__).resolve().parents[3] / "weights")
)


def read_meta(weights: Path = DEFAULT_WEIGHTS) -> dict[str, object]:
    path = weights / "model.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no trained model at {weights}: expected {path} (run `make train`)"
        )
    return json.loads(path.read_text())


def load_vae(weights: Path = DEFAULT_WEIGHTS) -> VideoAutoencoder:
    meta = read_meta(weights)
    vae = VideoAutoencoder(VAEConfig(**meta["vae"]))  # type: ignore[arg-type]
    vae.load_state_dict(load_file(weights / "vae.safetensors"))
    return vae.eval().requires_grad_(False)


def load_dit(weights: Path = DEFAULT_WEIGHTS) -> VideoDiT:
    meta = read_meta(weights)
    dit = VideoDiT(DiTConfig.from_dict(meta["dit"]))  # type: ignore[arg-type]
    dit.load_state_dict(load_file(weights / "dit.safetensors"))
    return dit.eval().requires_grad_(False)


def shapes_manifest(weights: Path = DEFAULT_WEIGHTS) -> ModelManifest:
    """The ``cinetron.json`` manifest of the trained shapes model."""
    meta = read_meta(weights)
    vae, dit = meta["vae"], meta["dit"]
    st, ss = vae["temporal_factor"], vae["spatial_factor"]  # type: ignore[index]
    # Both networks name the version: a new decoder on the same DiT draws other videos.
    digest = hashlib.sha256()
    for name in ("dit.safetensors", "vae.safetensors"):
        digest.update((weights / name).read_bytes())
    version = digest.hexdigest()[:12]
    return ModelManifest(
        family="shapes",
        version=f"shapes-{version}",
        latent_channels=vae["latent_channels"],  # type: ignore[index]
        latent_frames=meta["frames"] // st,  # type: ignore[operator]
        latent_height=meta["height"] // ss,  # type: ignore[operator]
        latent_width=meta["width"] // ss,  # type: ignore[operator]
        frames=meta["frames"],  # type: ignore[arg-type]
        height=meta["height"],  # type: ignore[arg-type]
        width=meta["width"],  # type: ignore[arg-type]
        fps=meta["fps"],  # type: ignore[arg-type]
        text_length=meta["text_length"],  # type: ignore[arg-type]
        text_dim=meta["text_dim"],  # type: ignore[arg-type]
        patch=tuple(dit["patch"]),  # type: ignore[index,arg-type]
        vae_scale=(st, ss, ss),
        scheduler=SchedulerDefaults(**meta.get("sampler", {})),  # type: ignore[arg-type]
        samplers={
            name: SamplerPreset(**preset)
            for name, preset in meta.get("samplers", {}).items()  # type: ignore[attr-defined]
        },
        vocabulary=captions.vocabulary(),
        filler_words=captions.filler_words(),
        scene=captions.scene_grammar(tuple(meta.get("caption_phrases", ()))),  # type: ignore[arg-type]
    )
