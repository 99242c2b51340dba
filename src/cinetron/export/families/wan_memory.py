"""GPU memory estimates for serving a Wan2.1 repository, computed from the model configs.

    python -m cinetron.export.families.wan_memory         # the table in docs/real-models.md
    python -m cinetron.export.families.wan_memory --from-diffusers DIR \
        --frames 81 --height 480 --width 832

Parameter counts are exact: each network is instantiated from its config on torch's
``meta`` device (no memory, no weights) and its parameters counted. Activation sizes
are rules of thumb, stated with their formulas, to size GPUs and TensorRT profiles
before measuring; the benchmark plan in docs/real-models.md measures them.

- Denoiser, per transformer block: about ``(6·inner + ffn_dim)`` live values per
  token (residual, modulated copy, q/k/v, attention output, FFN hidden) at the
  activation precision; tokens ``N = T_lat · H_lat/p_h · W_lat/p_w`` per sample.
  Unfused attention adds one score matrix ``heads · N²`` per sample: past ~10k tokens
  that dominates, so serve with fused attention (TensorRT's MHA fusion).
- VAE decoder: decodes one latent frame (4 video frames) at a time with a 2-frame
  causal cache; peak about 4 tensors of ``(4 + 2) · H · W · base_dim·dim_mult[0]``
  fp32 values per sample, plus the output video.
- Text encoder: weights dominate (UMT5-XXL is ~5.7 B parameters for 512 tokens).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
BYTES = {"fp32": 4, "fp16": 2}

# Published configs of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (the fields that size memory).
WAN21_T2V_1_3B: dict[str, dict[str, Any]] = {
    "transformer": {
        "patch_size": [1, 2, 2],
        "num_attention_heads": 12,
        "attention_head_dim": 128,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 8960,
        "num_layers": 30,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-06,
        "rope_max_seq_len": 1024,
    },
    "text_encoder": {
        "vocab_size": 256384,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",
    },
    "vae": {
        "base_dim": 96,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "temperal_downsample": [False, True, True],
    },
    "scheduler": {"_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0},
}


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def parameter_counts(configs: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Exact parameter counts of transformer, text encoder and VAE decoder (meta device)."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        transformer = WanTransformer3DModel(**_strip(configs["transformer"]))
        encoder = UMT5EncoderModel(UMT5Config(**_strip(configs["text_encoder"])))
        vae = AutoencoderKLWan(**_strip(configs["vae"]))
    decoder = [vae.post_quant_conv, vae.decoder]
    return {
        "denoiser": sum(p.numel() for p in transformer.parameters()),
        "text_encoder": sum(p.numel() for p in encoder.parameters()),
        "vae_decoder": sum(p.numel() for m in decoder for p in m.parameters()),
    }


@dataclass(frozen=True)
class MemoryEstimate:
    frames: int
    height: int
    width: int
    batch: int  # denoiser batch (CFG: 2 per generation)
    tokens: int  # latent tokens per sample
    weights: dict[str, float]  # bytes per network at its serving precision
    denoiser_activations: float  # bytes, fused attention
    unfused_attention_scores: float  # bytes of one layer's score matrices
    vae_peak: float  # bytes, batch 1
    text_activations: float  # bytes, batch 2 (prompt + negative)

    @property
    def total(self) -> float:
        """Everything resident at once, fused attention, one instance of each model."""
        return (
            sum(self.weights.values())
            + self.denoiser_activations
            + self.vae_peak
            + self.text_activations
        )


def estimate(
    configs: dict[str, dict[str, Any]],
    frames: int,
    height: int,
    width: int,
    batch: int = 2,
    text_length: int = 512,
    precisions: dict[str, str] | None = None,
    counts: dict[str, int] | None = None,
) -> MemoryEstimate:
    """Memory to serve one clip size; ``precisions`` default to the gpu flavour's."""
    precisions = precisions or {"text_encoder": "fp16", "denoiser": "fp16", "vae_decoder": "fp32"}
    counts = counts or parameter_counts(configs)
    tr, te, vae = configs["transformer"], configs["text_encoder"], configs["vae"]
    _, ph, pw = tr["patch_size"]
    latent_t, latent_h, latent_w = (frames - 1) // 4 + 1, height // 8, width // 8
    tokens = latent_t * (latent_h // ph) * (latent_w // pw)
    inner = tr["num_attention_heads"] * tr["attention_head_dim"]
    act = BYTES[precisions["denoiser"]]
    per_token = 6 * inner + tr["ffn_dim"]
    context = 2 * text_length * inner  # cross-attention keys/values
    denoiser = batch * (tokens * per_token + context) * act
    scores = batch * tr["num_attention_heads"] * tokens**2 * act
    top_channels = vae["base_dim"] * vae["dim_mult"][0]
    vae_peak = 4 * (4 + 2) * height * width * top_channels * 4 + 2 * 3 * frames * height * width * 4
    te_act = BYTES[precisions["text_encoder"]]
    text = 2 * text_length * (4 * te["d_model"] + 2 * te["d_ff"]) * te_act
    weights = {name: float(n * BYTES[precisions[name]]) for name, n in counts.items()}
    return MemoryEstimate(
        frames,
        height,
        width,
        batch,
        tokens,
        weights,
        float(denoiser),
        float(scores),
        float(vae_peak),
        float(text),
    )


# (frames, width, height, denoiser batch): Wan's 480P and 720P 5-second clips, a small clip.
Row = tuple[int, int, int, int]
TABLE_ROWS: tuple[Row, ...] = (
    (81, 832, 480, 2),
    (81, 832, 480, 4),
    (81, 1280, 720, 2),
    (49, 480, 320, 2),
)


def table(
    configs: dict[str, dict[str, Any]] = WAN21_T2V_1_3B,
    rows: tuple[Row, ...] = TABLE_ROWS,
) -> str:
    """A markdown table (GiB) of ``estimate`` for each row."""
    counts = parameter_counts(configs)
    head = (
        "| clip (frames, W×H) | batch | tokens | weights TE/DiT/VAE | DiT activations | "
        "unfused attn scores | VAE decode peak | total (fused) |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for frames, width, height, batch in rows:
        e = estimate(configs, frames, height, width, batch, counts=counts)
        w = e.weights
        lines.append(
            f"| {frames}, {width}×{height} | {batch} | {e.tokens} | "
            f"{w['text_encoder'] / GIB:.1f} / {w['denoiser'] / GIB:.1f} / "
            f"{w['vae_decoder'] / GIB:.2f} | {e.denoiser_activations / GIB:.1f} | "
            f"{e.unfused_attention_scores / GIB:.1f} | {e.vae_peak / GIB:.1f} | "
            f"{e.total / GIB:.1f} |"
        )
    params = ", ".join(f"{k} {v / 1e9:.2f} B" for k, v in counts.items())
    return head + "\n".join(lines) + f"\n\nParameters (exact, from the configs): {params}.\n"


def trtexec_lines(configs: dict[str, dict[str, Any]] = WAN21_T2V_1_3B, **geometry: int) -> str:
    """The TensorRT builds of a gpu-flavour repository for ``geometry`` (WanGeometry fields)."""
    import shlex

    from cinetron.export.configs import RepositoryOptions
    from cinetron.export.families.wan import WanGeometry, precisions_for, wan_manifest
    from cinetron.export.repository import engine_commands

    precisions = precisions_for(RepositoryOptions(flavour="gpu"))
    manifest = wan_manifest(configs, WanGeometry(**geometry), precisions, "wan-docs", "docs")
    return "\n".join(shlex.join(c) for c in engine_commands(manifest, precisions)) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cinetron.export.families.wan_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from-diffusers",
        type=Path,
        default=None,
        help="read the configs of this checkpoint (default: Wan2.1-T2V-1.3B's)",
    )
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument(
        "--trtexec",
        action="store_true",
        help="print the TensorRT engine builds of the gpu flavour instead",
    )
    args = p.parse_args(argv)
    configs = WAN21_T2V_1_3B
    if args.from_diffusers is not None:
        from cinetron.export.families.wan import read_configs

        configs = read_configs(args.from_diffusers)
    size = {
        k: v
        for k, v in (("frames", args.frames), ("height", args.height), ("width", args.width))
        if v
    }
    if args.trtexec:
        print(trtexec_lines(configs, **size), end="")
        return 0
    rows = TABLE_ROWS
    if size:
        rows = (
            (size.get("frames", 81), size.get("width", 832), size.get("height", 480), args.batch),
        )
    print(table(configs, rows), end="")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
