"""Wan2.1 text-to-video (diffusers layout) → the Cinetron Triton repository.

    cinetron export --from-diffusers ./Wan2.1-T2V-1.3B-Diffusers --family wan \\
        [--flavour cpu|gpu] [--out DIR] [--frames 81 --height 480 --width 832]

What each served model holds (tensor names are the shared contract's):

- ``text_encoder``: UMT5 encoder, loaded with eager attention (dynamo cannot export the
  sdpa path); outputs are zeroed past each prompt's length, as ``WanPipeline`` does
  before handing them to the transformer. Dynamic batch.
- ``denoiser``: ``WanTransformer3DModel``; ``timestep`` is sigma × 1000 per sample (Wan's
  own scale), the output is the flow velocity (noise − data).
- ``vae_decoder``: ``AutoencoderKLWan.decode`` with the latent de-normalisation
  (``z · std + mean``) baked in, so clients send the latents the transformer works in.
  Its frame count is **fixed at export** (the decoder's causal-cache loop unrolls per
  latent frame): export once per clip length.

The denoiser and the decoder are exported with symbolic latent frames/height/width,
so parity is checked on small, cheap latents even for the real model; then every graph
is pinned to the served shape (``diffusers_common.pin_shapes``), with only the batch
left dynamic, as the Triton configs declare.

Flavours: ``cpu`` keeps everything fp32; ``gpu`` stores the transformer and the text
encoder in fp16 (diffusers keeps the transformer's norms/time embedding in fp32; UMT5
clamps its fp16 activations) and the VAE in fp32, as diffusers recommends for decoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cinetron.contract.manifest import ModelManifest, SchedulerDefaults
from cinetron.contract.names import Models, Tensors
from cinetron.contract.repository import repository_spec
from cinetron.export.component import (
    EXAMPLE_BATCH,
    Component,
    Feeds,
    Log,
    Precision,
    export_components,
)
from cinetron.export.configs import RepositoryOptions
from cinetron.export.repository import ExportReport, finish, write_layout

if TYPE_CHECKING:
    from diffusers import AutoencoderKLWan
    from transformers import PreTrainedModel

FAMILY = "wan"
# Wan2.1's own sampling defaults (wan/configs/shared_config.py and the T2V configs).
DEFAULT_FRAMES, DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_FPS = 81, 480, 832, 16
DEFAULT_TEXT_LENGTH = 512
DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_SHIFT = 50, 5.0, 3.0
DEFAULT_MAX_BATCH = 4  # two CFG pairs; a 480p batch of 16 would not fit most GPUs
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# Parity checks at the served shape run only when they are cheap on a CPU.
SERVED_SHAPE_CHECK_MAX_TOKENS = 4096


@dataclass(frozen=True)
class WanGeometry:
    """The clip one repository serves: frames 4k+1, height/width multiples of 16."""

    frames: int = DEFAULT_FRAMES
    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    text_length: int = DEFAULT_TEXT_LENGTH
    fps: int = DEFAULT_FPS
    max_batch: int = DEFAULT_MAX_BATCH

    def validate(self, temporal: int, spatial: int, patch: tuple[int, int, int]) -> None:
        """Raise ``ValueError`` naming the first invalid field and the valid values."""
        if self.frames < 1 or (self.frames - 1) % temporal:
            lo = (self.frames - 1) // temporal * temporal + 1
            raise ValueError(
                f"--frames must be {temporal}k+1 (1, {temporal + 1}, …, 81), got {self.frames}; "
                f"try {max(1, lo)} or {lo + temporal}"
            )
        for name, value, p in (("height", self.height, patch[1]), ("width", self.width, patch[2])):
            multiple = spatial * p
            if value < multiple or value % multiple:
                raise ValueError(
                    f"--{name} must be a positive multiple of {multiple} (VAE ×{spatial}, patch "
                    f"{p}), got {value}; try {max(multiple, value // multiple * multiple)}"
                )
        if self.text_length < 1 or self.max_batch < 1 or self.fps < 1:
            raise ValueError("--text-length, --max-batch and --fps must be at least 1")

    def latent_shape(self, channels: int, temporal: int, spatial: int) -> tuple[int, ...]:
        """``[C, T, H, W]`` of one sample's latents."""
        t = (self.frames - 1) // temporal + 1
        return (channels, t, self.height // spatial, self.width // spatial)


def copy_tokenizer(src: Path, out: Path) -> Path:
    """Copy a checkpoint's ``tokenizer/`` folder and make sure it has ``tokenizer.json``.

    The Triton ``tokenizer`` model uses the ``tokenizers`` library only, which reads
    ``tokenizer.json``; a checkpoint that ships only ``spiece.model`` gets one written
    by transformers' converter (the same fast tokenizer diffusers itself would load).
    """
    dst = out / Models.TOKENIZER / "1" / "tokenizer"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    if not (dst / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(src), use_fast=True)
        fast.backend_tokenizer.save(str(dst / "tokenizer.json"))
    return dst / "tokenizer.json"


def checkpoint_fingerprint(folder: Path, extra: dict[str, Any]) -> str:
    """A short, fast version id: every config file, the weight files' names, sizes and first
    MiB, and the export settings (hashing tens of GB of weights would take minutes)."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        h.update(rel.encode())
        if path.suffix == ".json":
            h.update(path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".pt"):
            h.update(str(path.stat().st_size).encode())
            with path.open("rb") as f:
                h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


# --- export wrappers: contract names in, contract names out, fp32 on the wire --------------


class WanTextEncoderForExport(nn.Module):
    """``input_ids``, ``attention_mask`` ``[B, L]`` → ``text_embeds`` ``[B, L, D]`` fp32."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # WanPipeline zeroes the padding rows: the transformer attends to all L rows.
        return (hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)).float()


class WanDenoiserForExport(nn.Module):
    """latents ``[B, C, T, H, W]``, timestep ``[B]`` (0..1000), text ``[B, L, D]``, mask
    ``[B, L]`` → velocity ``[B, C, T, H, W]`` fp32."""

    def __init__(self, transformer: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.transformer = transformer
        self.dtype = dtype

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        # Masking again keeps the denoiser right for embeddings that were not zeroed
        # (and keeps `text_mask` a real input of the graph).
        context = text_embeds * text_mask.unsqueeze(-1).to(text_embeds.dtype)
        velocity = self.transformer(
            hidden_states=latents.to(self.dtype),
            timestep=timestep,
            encoder_hidden_states=context.to(self.dtype),
            return_dict=False,
        )[0]
        return velocity.float()


class WanVaeDecoderForExport(nn.Module):
    """Normalised latents ``[B, C, T, H, W]`` → video ``[B, 3, 1 + 4(T-1), 8H, 8W]`` in [-1, 1]."""

    # Buffers registered in __init__; declared for the type checker.
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, vae: AutoencoderKLWan) -> None:
        super().__init__()
        self.vae = vae
        channels = vae.config.z_dim
        self.register_buffer(
            "mean", torch.tensor(vae.config.latents_mean).view(1, channels, 1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(vae.config.latents_std).view(1, channels, 1, 1, 1))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents * self.std + self.mean, return_dict=False)[0].float()


# --- loading --------------------------------------------------------------------------------


@dataclass
class WanParts:
    text_encoder: PreTrainedModel  # the class model_index.json names (UMT5EncoderModel)
    transformer: nn.Module
    vae: AutoencoderKLWan
    tokenizer_dir: Path


def _require(folder: Path, *parts: str) -> Path:
    path = folder.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: --from-diffusers must point at a diffusers Wan folder "
            "(model_index.json, text_encoder/, tokenizer/, transformer/, vae/, scheduler/), "
            "e.g. a download of Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
        )
    return path


def load_parts(checkpoint: Path, precisions: dict[str, Precision]) -> WanParts:
    import transformers
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    index = json.loads(_require(checkpoint, "model_index.json").read_text())
    dtype = {"fp32": torch.float32, "fp16": torch.float16}
    encoder_class = getattr(transformers, index.get("text_encoder", [None, "UMT5EncoderModel"])[1])
    text_encoder = encoder_class.from_pretrained(
        str(_require(checkpoint, "text_encoder")),
        attn_implementation="eager",  # the sdpa path fails in dynamo ("Cannot view a tensor")
        dtype=dtype[precisions["text_encoder"]],
    ).eval()
    _require(checkpoint, "transformer")
    transformer = WanTransformer3DModel.from_pretrained(
        str(checkpoint), subfolder="transformer", torch_dtype=dtype[precisions["denoiser"]]
    ).eval()
    _require(checkpoint, "vae")
    vae = AutoencoderKLWan.from_pretrained(
        str(checkpoint), subfolder="vae", torch_dtype=dtype[precisions["vae_decoder"]]
    ).eval()
    return WanParts(text_encoder, transformer, vae, _require(checkpoint, "tokenizer"))


def precisions_for(options: RepositoryOptions) -> dict[str, Precision]:
    half: Precision = "fp16" if options.flavour == "gpu" and options.fp16 else "fp32"
    return {"text_encoder": half, "denoiser": half, "vae_decoder": "fp32"}


def scheduler_defaults(config: dict[str, Any]) -> SchedulerDefaults:
    """The checkpoint's scheduler as Cinetron defaults (Wan ships UniPC, flow_shift 3)."""
    name = "unipc" if "UniPC" in str(config.get("_class_name", "UniPC")) else "euler"
    shift = float(config.get("flow_shift", config.get("shift", DEFAULT_SHIFT)))
    return SchedulerDefaults(name=name, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE, shift=shift)


def read_configs(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """The checkpoint's JSON configs (no weights): enough for the manifest and the
    geometry check, so a bad ``--frames`` fails before gigabytes are loaded."""
    _require(checkpoint, "model_index.json")
    scheduler = checkpoint / "scheduler" / "scheduler_config.json"
    return {
        "transformer": json.loads(_require(checkpoint, "transformer", "config.json").read_text()),
        "text_encoder": json.loads(_require(checkpoint, "text_encoder", "config.json").read_text()),
        "vae": json.loads(_require(checkpoint, "vae", "config.json").read_text()),
        "scheduler": json.loads(scheduler.read_text()) if scheduler.exists() else {},
    }


def wan_manifest(
    configs: dict[str, dict[str, Any]],
    geometry: WanGeometry,
    precisions: dict[str, Precision],
    version: str,
    source: str,
) -> ModelManifest:
    """``cinetron.json`` from the configs; raises ``ValueError`` for a clip Wan cannot make."""
    vae = configs["vae"]
    temporal = int(vae.get("scale_factor_temporal") or 4)
    spatial = int(vae.get("scale_factor_spatial") or 8)
    pt, ph, pw = (int(p) for p in configs["transformer"].get("patch_size", (1, 2, 2)))
    geometry.validate(temporal, spatial, (pt, ph, pw))
    c, t, h, w = geometry.latent_shape(int(vae.get("z_dim", 16)), temporal, spatial)
    return ModelManifest(
        family=FAMILY,
        version=version,
        latent_channels=c,
        latent_frames=t,
        latent_height=h,
        latent_width=w,
        frames=geometry.frames,
        height=geometry.height,
        width=geometry.width,
        fps=geometry.fps,
        text_length=geometry.text_length,
        text_dim=int(configs["text_encoder"]["d_model"]),
        patch=(pt, ph, pw),
        vae_scale=(temporal, spatial, spatial),
        prediction="flow_velocity",
        negative_prompt=DEFAULT_NEGATIVE_PROMPT,
        max_denoiser_batch=geometry.max_batch,
        scheduler=scheduler_defaults(configs.get("scheduler", {})),
        export_notes={
            "source": source,
            "vae_decoder": (
                f"frame count fixed at export ({geometry.frames} frames = {t} latent frames); "
                "re-export with --frames for another clip length"
            ),
            "precision": ", ".join(f"{k}={v}" for k, v in precisions.items()),
        },
    )


# --- components -------------------------------------------------------------------------------


def _mask(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length  # one full-length row: the boundary case
    return (np.arange(length)[None] < lengths[:, None]).astype(np.int64)


def build_components(
    parts: WanParts, manifest: ModelManifest, precisions: dict[str, Precision]
) -> list[Component]:
    """The three networks, with example and check inputs sized from the manifest."""
    rng = np.random.default_rng(0)
    L, D = manifest.text_length, manifest.text_dim
    C, T, H, W = manifest.latent_shape
    _, ph, pw = manifest.patch
    vocab = int(parts.text_encoder.config.vocab_size)
    fp16 = {k: v == "fp16" for k, v in precisions.items()}
    batch = torch.export.Dim("batch", min=1, max=1024)

    def text(b: int) -> Feeds:
        mask = _mask(rng, b, L)
        return {
            Tensors.INPUT_IDS: rng.integers(0, vocab, size=(b, L)).astype(np.int64) * mask,
            Tensors.ATTENTION_MASK: mask,
        }

    def denoise(b: int, t: int, h: int, w: int) -> Feeds:
        return {
            Tensors.LATENTS: rng.standard_normal((b, C, t, h, w), dtype=np.float32),
            Tensors.TIMESTEP: rng.uniform(0, 1000, size=b).astype(np.float32),
            Tensors.TEXT_EMBEDS: rng.standard_normal((b, L, D), dtype=np.float32),
            Tensors.TEXT_MASK: _mask(rng, b, L),
        }

    def latents(b: int, h: int, w: int) -> Feeds:
        return {Tensors.LATENTS: rng.standard_normal((b, C, T, h, w), dtype=np.float32)}

    served_small = T * (H // ph) * (W // pw) <= SERVED_SHAPE_CHECK_MAX_TOKENS
    dim = torch.export.Dim
    # The denoiser's latent height/width are multiples of the patch: declare them so.
    lt, lh, lw = (
        dim("latent_frames", max=1024),
        dim("h_patches", max=1024),
        dim("w_patches", max=1024),
    )
    vh, vw = dim("latent_height", max=4096), dim("latent_width", max=4096)
    # Small latents for the example and the checks: two different sizes per axis, so a
    # frozen axis fails loudly; the served size itself too when that is cheap.
    denoiser_checks = [denoise(1, 2, 2 * ph, 4 * pw), denoise(3, 4, 3 * ph, 2 * pw)]
    vae_checks = [latents(1, 3, 2), latents(3, 2, 4)]
    served = {
        spec.name: {
            t.name: (t.dims if t.reshape is None else t.reshape)
            for t in (*spec.inputs, *spec.outputs)
        }
        for spec in repository_spec(manifest)
    }

    text_module = WanTextEncoderForExport(parts.text_encoder).eval()
    denoiser_module = WanDenoiserForExport(
        parts.transformer, torch.float16 if fp16[Models.DENOISER] else torch.float32
    ).eval()
    vae_module = WanVaeDecoderForExport(parts.vae).eval()
    return [
        Component(
            name=Models.TEXT_ENCODER,
            module=text_module,
            input_names=(Tensors.INPUT_IDS, Tensors.ATTENTION_MASK),
            output_name=Tensors.TEXT_EMBEDS,
            example=text(EXAMPLE_BATCH),
            dynamic_shapes={Tensors.INPUT_IDS: {0: batch}, Tensors.ATTENTION_MASK: {0: batch}},
            checks=[text(1), text(3)],
            precision=precisions[Models.TEXT_ENCODER],
            served_shapes=served[Models.TEXT_ENCODER],
        ),
        Component(
            name=Models.DENOISER,
            module=denoiser_module,
            input_names=(Tensors.LATENTS, Tensors.TIMESTEP, Tensors.TEXT_EMBEDS, Tensors.TEXT_MASK),
            output_name=Tensors.VELOCITY,
            example=denoise(EXAMPLE_BATCH, 3, 2 * ph, 3 * pw),
            dynamic_shapes={
                Tensors.LATENTS: {0: batch, 2: lt, 3: ph * lh, 4: pw * lw},
                Tensors.TIMESTEP: {0: batch},
                Tensors.TEXT_EMBEDS: {0: batch},
                Tensors.TEXT_MASK: {0: batch},
            },
            checks=denoiser_checks,
            precision=precisions[Models.DENOISER],
            served_shapes=served[Models.DENOISER],
            served_check=denoise(1, T, H, W) if served_small else None,
        ),
        Component(
            name=Models.VAE_DECODER,
            module=vae_module,
            input_names=(Tensors.LATENTS,),
            output_name=Tensors.VIDEO,
            example=latents(EXAMPLE_BATCH, 2, 3),
            dynamic_shapes={Tensors.LATENTS: {0: batch, 3: vh, 4: vw}},
            checks=vae_checks,
            precision=precisions[Models.VAE_DECODER],
            served_shapes=served[Models.VAE_DECODER],
            served_check=latents(1, H, W) if served_small else None,
            # The per-frame loop unrolls: the onnxscript optimiser takes minutes on it and
            # onnxruntime optimises the graph at load anyway.
            optimize=False,
        ),
    ]


# --- the export ---------------------------------------------------------------------------------


def export_wan(
    checkpoint: Path,
    out: Path,
    options: RepositoryOptions,
    geometry: WanGeometry | None = None,
    log: Log = print,
) -> ExportReport:
    """Write a complete repository for ``checkpoint`` into ``out`` (``cinetron.json`` last)."""
    geometry = geometry or WanGeometry()
    precisions = precisions_for(options)
    fingerprint = checkpoint_fingerprint(
        checkpoint, {"geometry": geometry.__dict__, "precisions": precisions}
    )
    manifest = wan_manifest(
        read_configs(checkpoint),
        geometry,
        precisions,
        f"{FAMILY}-{fingerprint}",
        f"diffusers:{checkpoint.name}",
    )
    torch.manual_seed(0)
    parts = load_parts(checkpoint, precisions)
    log(
        f"event=wan_manifest version={manifest.version} latents={list(manifest.latent_shape)} "
        f"frames={manifest.frames} size={manifest.width}x{manifest.height}"
    )
    write_layout(out, manifest, options)
    copy_tokenizer(parts.tokenizer_dir, out)
    parity = export_components(build_components(parts, manifest, precisions), out, log)
    return finish(out, manifest, options, parity, precisions)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("wan")
    g.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help="clip length, 4k+1; fixed at export (default: %(default)s)",
    )
    g.add_argument(
        "--height", type=int, default=DEFAULT_HEIGHT, help="multiple of 16 (default: %(default)s)"
    )
    g.add_argument(
        "--width", type=int, default=DEFAULT_WIDTH, help="multiple of 16 (default: %(default)s)"
    )
    g.add_argument(
        "--text-length",
        type=int,
        default=DEFAULT_TEXT_LENGTH,
        help="prompt tokens, padded/truncated (default: %(default)s)",
    )
    g.add_argument("--fps", type=int, default=DEFAULT_FPS, help="default: %(default)s")
    g.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help="max_batch_size of every model (default: %(default)s)",
    )


def export_from_args(
    args: argparse.Namespace, options: RepositoryOptions, log: Log
) -> ExportReport:
    geometry = WanGeometry(
        frames=args.frames,
        height=args.height,
        width=args.width,
        text_length=args.text_length,
        fps=args.fps,
        max_batch=args.max_batch,
    )
    return export_wan(args.from_diffusers, args.out, options, geometry, log)


def main(argv: list[str] | None = None) -> int:
    """``python -m cinetron.export.families.wan --from-diffusers PATH ...`` (the CLI's flags)."""
    from cinetron.export.cli import main as export_main

    return export_main(argv)


# --- a tiny random checkpoint (tests, smoke runs; no download) ----------------------------------

TINY_WORDS = [
    "a",
    "red",
    "green",
    "blue",
    "ball",
    "cat",
    "dog",
    "monkey",
    "dance",
    "dancing",
    "runs",
    "running",
    "on",
    "the",
    "in",
    "black",
    "white",
    "background",
    "left",
    "right",
    "moving",
    "moves",
    "slowly",
    "fast",
    "street",
    "city",
    "night",
    "sky",
]


def build_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random-weight Wan2.1 diffusers folder with the configs of diffusers' own tests."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{w}", -3.0 - i * 0.01) for i, w in enumerate(TINY_WORDS)]
    pieces += [(ch, -8.0) for ch in "abcdefghijklmnopqrstuvwxyz,.'-"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=10)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
        )
    )
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=DEFAULT_SHIFT
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
    )
    pipe.save_pretrained(str(folder))
    return folder


if __name__ == "__main__":
    import sys

    sys.exit(main())
