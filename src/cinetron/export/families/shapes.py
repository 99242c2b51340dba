"""The built-in shapes model → ONNX components and a complete Triton repository.

Only the batch axis is dynamic: the served model has one latent shape and one text
length (``cinetron.json``), and fixed shapes let TensorRT build one tight profile.
Every network is checked at batch 1, 2 and 3 on random inputs and on real ones (real
prompts through the real text encoder, latents of rendered clips).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cinetron.contract.manifest import ModelManifest
from cinetron.contract.names import ONNX_MODELS, Models
from cinetron.contract.names import Tensors as T
from cinetron.export.component import EXAMPLE_BATCH, Component, Feeds, Log, export_components
from cinetron.export.configs import RepositoryOptions
from cinetron.export.repository import (
    ExportReport,
    copy_onnx,
    finish,
    install_tokenizer,
    write_layout,
)
from cinetron.models import world
from cinetron.models.loading import load_dit, load_vae, shapes_manifest
from cinetron.models.text_encoder import TextEncoder, tokenizer_file
from cinetron.models.vae import VideoAutoencoder
from cinetron.triton_backend.text import PromptTokenizer

CHECK_BATCHES = (1, 3)  # besides the example's EXAMPLE_BATCH

# Real prompts for the "real inputs" parity check (the same style the model is trained on).
REAL_PROMPTS = (
    "a red circle moving to the left on a black background",
    "a small green triangle growing on a white background",
    "",
)
REAL_SCENES = (
    ("black", "red", "circle", "left"),
    ("white", "blue", "triangle", "grows"),
    ("gray", "yellow", "square", "still"),
)


class VaeDecoderForExport(nn.Module):
    """``VideoAutoencoder.decode``: normalised latents ``[B, C, T, H, W]`` → ``[B, 3, F, H, W]``."""

    def __init__(self, vae: VideoAutoencoder) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)


class VaeEncoderForExport(nn.Module):
    """``VideoAutoencoder.encode``: video ``[B, 3, F, H, W]`` in [-1, 1] → normalised latents."""

    def __init__(self, vae: VideoAutoencoder) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(video)


def rendered_clips(scenes: tuple[tuple[str, str, str, str], ...]) -> np.ndarray:
    """Clips of the world as the VAE reads them: ``[B, 3, F, H, W]`` in [-1, 1]."""
    rng = np.random.default_rng(0)
    clips = np.stack([world.render(world.sample_scene(rng, *s)) for s in scenes])
    video = clips.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3))


def _component(
    name: str,
    module: nn.Module,
    inputs: tuple[str, ...],
    output: str,
    random: Callable[[int, np.random.Generator], Feeds],
    real: Feeds,
) -> Component:
    rng = np.random.default_rng(0)
    example = random(EXAMPLE_BATCH, rng)
    checks = [random(b, np.random.default_rng(b)) for b in CHECK_BATCHES] + [real]
    return Component(name, module.eval(), inputs, output, example, checks)


def build_components(weights: Path, manifest: ModelManifest) -> list[Component]:
    """The text encoder, denoiser, VAE decoder and VAE encoder, shaped from the manifest."""
    L, D = manifest.text_length, manifest.text_dim
    latent = manifest.latent_shape
    video_shape = (3, manifest.frames, manifest.height, manifest.width)
    text_encoder = TextEncoder().eval()
    vae = load_vae(weights)
    tokenizer = PromptTokenizer(tokenizer_file(), L)

    def text_mask(b: int, rng: np.random.Generator) -> np.ndarray:
        lengths = rng.integers(1, L + 1, size=b)
        return (np.arange(L)[None] < lengths[:, None]).astype(np.int64)

    def text_random(b: int, rng: np.random.Generator) -> Feeds:
        mask = text_mask(b, rng)
        ids = rng.integers(0, 30000, size=(b, L)).astype(np.int64) * mask
        return {T.INPUT_IDS: ids, T.ATTENTION_MASK: mask}

    real_text = tokenizer(list(REAL_PROMPTS))
    text_real: Feeds = {
        T.INPUT_IDS: real_text.input_ids,
        T.ATTENTION_MASK: real_text.attention_mask,
    }
    with torch.inference_mode():
        real_embeds = text_encoder(*(torch.from_numpy(v) for v in text_real.values())).numpy()

    def denoiser_random(b: int, rng: np.random.Generator) -> Feeds:
        return {
            T.LATENTS: rng.standard_normal((b, *latent), dtype=np.float32),
            T.TIMESTEP: rng.uniform(0, 1000, size=b).astype(np.float32),
            T.TEXT_EMBEDS: rng.standard_normal((b, L, D), dtype=np.float32),
            T.TEXT_MASK: text_mask(b, rng),
        }

    denoiser_real = {
        T.LATENTS: np.random.default_rng(0).standard_normal(
            (len(REAL_PROMPTS), *latent), dtype=np.float32
        ),
        T.TIMESTEP: np.array([999.0, 500.0, 50.0], np.float32),
        T.TEXT_EMBEDS: real_embeds.astype(np.float32),
        T.TEXT_MASK: real_text.attention_mask,
    }
    clips = rendered_clips(REAL_SCENES)
    with torch.inference_mode():
        real_latents = vae.encode(torch.from_numpy(clips)).numpy()

    def latents_random(b: int, rng: np.random.Generator) -> Feeds:
        return {T.LATENTS: rng.standard_normal((b, *latent), dtype=np.float32)}

    def video_random(b: int, rng: np.random.Generator) -> Feeds:
        return {T.VIDEO: rng.uniform(-1, 1, size=(b, *video_shape)).astype(np.float32)}

    return [
        _component(
            Models.TEXT_ENCODER,
            text_encoder,
            (T.INPUT_IDS, T.ATTENTION_MASK),
            T.TEXT_EMBEDS,
            text_random,
            text_real,
        ),
        _component(
            Models.DENOISER,
            load_dit(weights),
            (T.LATENTS, T.TIMESTEP, T.TEXT_EMBEDS, T.TEXT_MASK),
            T.VELOCITY,
            denoiser_random,
            denoiser_real,
        ),
        _component(
            Models.VAE_DECODER,
            VaeDecoderForExport(vae),
            (T.LATENTS,),
            T.VIDEO,
            latents_random,
            {T.LATENTS: real_latents},
        ),
        _component(
            Models.VAE_ENCODER,
            VaeEncoderForExport(vae),
            (T.VIDEO,),
            T.LATENTS,
            video_random,
            {T.VIDEO: clips},
        ),
    ]


def write_repository(
    out: Path,
    weights: Path,
    options: RepositoryOptions,
    onnx_from: Path | None = None,
    log: Log = print,
) -> ExportReport:
    """Export the shapes model from ``weights`` into the repository ``out``.

    ``onnx_from``: an existing repository whose ONNX files to reuse (e.g. the cpu
    repository when writing the gpu one) instead of exporting from torch again; its
    ``vae_encoder`` comes along when it has one.
    """
    manifest = shapes_manifest(weights)
    models = list(ONNX_MODELS)
    if onnx_from is None or (onnx_from / Models.VAE_ENCODER / "1" / "model.onnx").exists():
        models.append(Models.VAE_ENCODER)
    write_layout(out, manifest, options, encoder=Models.VAE_ENCODER in models)
    install_tokenizer(out, tokenizer_file())
    parity = []
    if onnx_from is not None:
        copy_onnx(onnx_from, out, models)
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the parity runs are tiny; don't fight the trainer for cores
        try:
            parity = export_components(build_components(weights, manifest), out, log)
        finally:
            torch.set_num_threads(threads)
    return finish(out, manifest, options, parity)
