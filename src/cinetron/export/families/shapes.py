"""torch → ONNX for the three networks, with a parity check against torch.

Exporter: ``torch.onnx.export(..., dynamo=True)``. The TorchScript exporter can give
silently wrong dynamic shapes on transformers (EXPORT_NOTES.md), so it is not used.
Dynamo specialises any dimension that is 1 in the example, so the examples use
batch 2; every export is then checked with onnxruntime at batch 1 *and* 2.

Only the batch axis is dynamic: the served model has one latent shape and one text
length (``cinetron.json``), and fixed shapes let TensorRT build one tight profile.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from cinetron.contract.manifest import ModelManifest
from cinetron.models.dit import VideoDiT
from cinetron.models.loading import load_dit, load_vae
from cinetron.models.text_encoder import TextEncoder, tokenizer_file
from cinetron.models.vae import VideoAutoencoder
from cinetron.triton_backend.text import PromptTokenizer

OPSET = 20
EXAMPLE_BATCH = 2  # ≥ 2: dynamo would freeze a batch axis that is 1 in the example
CHECK_BATCHES = (1, 2, 3)

Feeds = dict[str, npt.NDArray[np.generic]]

_NOISY_LOGGERS = (
    "torch.onnx._internal.exporter._registration",
    "onnxscript.optimizer._constant_folding",
)

# Real prompts for the "real inputs" parity check (the same style the model is trained on).
REAL_PROMPTS = (
    "a red circle moving to the left on a black background",
    "a small green triangle growing on a white background",
    "",
)


class DenoiserForExport(nn.Module):
    """VideoDiT with the exported signature: ``timestep`` is ``[B]`` float32."""

    def __init__(self, dit: VideoDiT) -> None:
        super().__init__()
        self.dit = dit

    def forward(
        self,
        latents: torch.Tensor,  # [B, C, T, H, W]
        timestep: torch.Tensor,  # [B]
        text_embeds: torch.Tensor,  # [B, L, D]
        text_mask: torch.Tensor,  # [B, L] int64
    ) -> torch.Tensor:
        return self.dit(latents, timestep, text_embeds, text_mask)


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


@dataclass(frozen=True)
class OnnxModel:
    """One network to export: its module, I/O names and input generators."""

    name: str
    module: nn.Module
    input_names: tuple[str, ...]
    output_name: str
    random_inputs: Callable[[int, np.random.Generator], Feeds]  # batch, rng → feeds
    real_inputs: Callable[[], Feeds]


@dataclass(frozen=True)
class Parity:
    """Max abs error of onnxruntime vs torch on the same inputs."""

    model: str
    random: float  # over all CHECK_BATCHES
    real: float
    output_scale: float  # max |torch output| on the real inputs, to read the error against
    seconds: float  # export time

    def line(self) -> str:
        return (
            f"parity model={self.model} random_max_abs={self.random:.2e} "
            f"real_max_abs={self.real:.2e} output_max_abs={self.output_scale:.2f} "
            f"export_s={self.seconds:.1f}"
        )


def _text_feeds(manifest: ModelManifest, prompts: tuple[str, ...]) -> Feeds:
    tok = PromptTokenizer(tokenizer_file(), manifest.text_length)(list(prompts))
    return {"input_ids": tok.input_ids, "attention_mask": tok.attention_mask}


def build_models(weights: Path, manifest: ModelManifest) -> list[OnnxModel]:
    """The three networks with inputs shaped from the manifest."""
    import transformers

    # The pooler weights it reports as unused are the ones we leave out on purpose.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    L, D = manifest.text_length, manifest.text_dim
    latent = manifest.latent_shape
    text_encoder = TextEncoder().eval()

    def text_random(b: int, rng: np.random.Generator) -> Feeds:
        lengths = rng.integers(1, L + 1, size=b)
        mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int64)
        ids = rng.integers(0, 30000, size=(b, L)).astype(np.int64) * mask
        return {"input_ids": ids, "attention_mask": mask}

    def denoiser_random(b: int, rng: np.random.Generator) -> Feeds:
        lengths = rng.integers(1, L + 1, size=b)
        return {
            "latents": rng.standard_normal((b, *latent), dtype=np.float32),
            "timestep": rng.uniform(0, 1000, size=b).astype(np.float32),
            "text_embeds": rng.standard_normal((b, L, D), dtype=np.float32),
            "text_mask": (np.arange(L)[None] < lengths[:, None]).astype(np.int64),
        }

    def denoiser_real() -> Feeds:
        text = _text_feeds(manifest, REAL_PROMPTS)
        with torch.inference_mode():
            embeds = text_encoder(*(torch.from_numpy(text[k]) for k in text)).numpy()
        b = len(REAL_PROMPTS)
        return {
            "latents": np.random.default_rng(0).standard_normal((b, *latent), dtype=np.float32),
            "timestep": np.array([999.0, 500.0, 50.0], np.float32),
            "text_embeds": embeds.astype(np.float32),
            "text_mask": text["attention_mask"],
        }

    def vae_random(b: int, rng: np.random.Generator) -> Feeds:
        return {"latents": rng.standard_normal((b, *latent), dtype=np.float32)}

    def vae_real() -> Feeds:
        # Latents of real videos: encode procedural clips with the trained encoder.
        from cinetron.models import world

        vae = load_vae(weights)
        rng = np.random.default_rng(0)
        scenes = [
            ("black", "red", "circle", "left"),
            ("white", "blue", "triangle", "grows"),
            ("gray", "yellow", "square", "still"),
        ]
        clips = np.stack([world.render(world.sample_scene(rng, *s)) for s in scenes])
        video = torch.from_numpy(clips).float().div(127.5).sub(1.0).permute(0, 4, 1, 2, 3)
        with torch.inference_mode():
            return {"latents": vae.encode(video.contiguous()).numpy()}

    return [
        OnnxModel(
            "text_encoder",
            text_encoder,
            ("input_ids", "attention_mask"),
            "text_embeds",
            text_random,
            lambda: _text_feeds(manifest, REAL_PROMPTS),
        ),
        OnnxModel(
            "denoiser",
            DenoiserForExport(load_dit(weights)).eval(),
            ("latents", "timestep", "text_embeds", "text_mask"),
            "velocity",
            denoiser_random,
            denoiser_real,
        ),
        OnnxModel(
            "vae_decoder",
            VaeDecoderForExport(load_vae(weights)).eval(),
            ("latents",),
            "video",
            vae_random,
            vae_real,
        ),
    ]


def _torch_run(model: OnnxModel, feeds: Feeds) -> npt.NDArray[np.float32]:
    with torch.inference_mode():
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in model.input_names]
        return model.module(*args).numpy()


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_model(model: OnnxModel, path: Path) -> float:
    """Write ``path`` (a single file, weights inline) and return the seconds it took."""
    start = time.perf_counter()
    example = model.random_inputs(EXAMPLE_BATCH, np.random.default_rng(0))
    args = tuple(torch.from_numpy(example[n]) for n in model.input_names)
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic = {n: {0: batch} for n in model.input_names}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Keep `cinetron export` readable: the exporter warns about torchvision ops we never
        # use, and onnxscript's constant folder about shapes it leaves to runtime.
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        program = torch.onnx.export(
            model.module,
            args,
            dynamo=True,
            opset_version=OPSET,
            input_names=list(model.input_names),
            output_names=[model.output_name],
            dynamic_shapes=dynamic,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return time.perf_counter() - start


def check_parity(model: OnnxModel, path: Path, seconds: float = 0.0) -> Parity:
    """Run onnxruntime and torch on random inputs at every CHECK_BATCHES size and on real ones."""
    session = ort_session(path)
    rng = np.random.default_rng(1)
    worst = 0.0
    for b in CHECK_BATCHES:
        feeds = model.random_inputs(b, rng)
        got = session.run([model.output_name], feeds)[0]
        want = _torch_run(model, feeds)
        if got.shape != want.shape:
            raise RuntimeError(
                f"{model.name}: ONNX output shape {got.shape} != torch {want.shape} at batch {b}; "
                "the batch axis was not exported as dynamic"
            )
        worst = max(worst, float(np.abs(got - want).max()))
    feeds = model.real_inputs()
    got = session.run([model.output_name], feeds)[0]
    want = _torch_run(model, feeds)
    real = float(np.abs(got - want).max())
    return Parity(model.name, worst, real, float(np.abs(want).max()), seconds)


def export_all(
    weights: Path,
    manifest: ModelManifest,
    paths: dict[str, Path],
    log: Callable[[str], None] = print,
) -> list[Parity]:
    """Export each network named in ``paths`` (name → model.onnx path) and check its parity."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the parity runs are tiny; don't fight the trainer for cores
    results = []
    try:
        for model in build_models(weights, manifest):
            if model.name not in paths:
                continue
            seconds = export_model(model, paths[model.name])
            result = check_parity(model, paths[model.name], seconds)
            log(result.line())
            results.append(result)
    finally:
        torch.set_num_threads(threads)
    return results


def build_encoder(weights: Path, manifest: ModelManifest) -> OnnxModel:
    """The optional ``vae_encoder`` (image-to-video, video-to-video), checked like the others."""
    from cinetron.models import world

    shape = (3, manifest.frames, manifest.height, manifest.width)

    def random(b: int, rng: np.random.Generator) -> Feeds:
        return {"video": rng.uniform(-1, 1, size=(b, *shape)).astype(np.float32)}

    def real() -> Feeds:
        rng = np.random.default_rng(0)
        scenes = [("black", "red", "circle", "left"), ("white", "blue", "triangle", "grows")]
        clips = np.stack([world.render(world.sample_scene(rng, *s)) for s in scenes])
        video = clips.astype(np.float32) / 127.5 - 1.0
        return {"video": np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3))}

    module = VaeEncoderForExport(load_vae(weights)).eval()
    return OnnxModel("vae_encoder", module, ("video",), "latents", random, real)


def export_encoder(
    weights: Path, manifest: ModelManifest, path: Path, log: Callable[[str], None] = print
) -> Parity:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_encoder(weights, manifest)
        result = check_parity(model, path, export_model(model, path))
    finally:
        torch.set_num_threads(threads)
    log(result.line())
    return result
