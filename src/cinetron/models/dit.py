"""Small video diffusion transformer over VAE latents, trained with rectified flow.

Patchified latents, adaLN-zero conditioning on (timestep + pooled text), cross-attention
to the text encoder's token embeddings. Attention is written out with matmul/softmax
(not SDPA) so the ONNX graph is plain and the same on every exporter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DiTConfig:
    latent_channels: int = 4
    text_dim: int = 384
    width: int = 128
    depth: int = 6
    heads: int = 4
    patch: tuple[int, int, int] = (2, 2, 2)
    max_grid: tuple[int, int, int] = (8, 16, 16)  # tokens along (T, H, W)
    mlp_ratio: int = 4

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> DiTConfig:
        d = dict(d)
        d["patch"] = tuple(d["patch"])  # type: ignore[arg-type]
        d["max_grid"] = tuple(d["max_grid"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of timesteps in [0, 1000]: ``[B]`` → ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def position_code(length: int, dim: int, part: int, parts: int = 3) -> torch.Tensor:
    """Fixed sin/cos code ``[length, dim]`` for one axis of a 3-D grid (DiT, MAE).

    Each axis owns a disjoint ``dim // parts`` slice of the channels and the rest are zero,
    so summing the three axis tables equals concatenating per-axis codes. The code has
    about the token embedding's norm from step 0: a learned table initialised small (our
    first DiT) stays weak next to the noisy latent, and the model then cannot place one
    object consistently, only colour the frame. Base 100, not 10000: grids here are at
    most 8 tokens long, and 10000 wastes most frequencies on near-constant channels.
    """
    width = (dim // parts) // 2 * 2
    half = width // 2
    freqs = torch.exp(-math.log(100.0) * torch.arange(half, dtype=torch.float32) / half)
    args = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None]
    code = torch.zeros(length, dim)
    code[:, part * width : part * width + half] = torch.sin(args)
    code[:, part * width + half : (part + 1) * width] = torch.cos(args)
    return code


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, key_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        if key_bias is not None:  # [B, L]: 0 for real tokens, -inf-ish for padding
            scores = scores + key_bias[:, None, None, :]
        out = scores.softmax(dim=-1) @ v
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        w = cfg.width
        self.norm1 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(w, cfg.heads)
        self.norm2 = nn.LayerNorm(w, eps=1e-6)
        self.cross_attn = Attention(w, cfg.heads, context_dim=w)
        self.norm3 = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(w, w * cfg.mlp_ratio),
            nn.GELU(approximate="tanh"),
            nn.Linear(w * cfg.mlp_ratio, w),
        )
        self.ada = nn.Linear(w, 6 * w)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor, text_bias: torch.Tensor
    ) -> torch.Tensor:
        s1, c1, g1, s2, c2, g2 = self.ada(F.silu(cond)).chunk(6, dim=-1)
        h = modulate(self.norm1(x), s1, c1)
        x = x + g1[:, None] * self.self_attn(h, h)
        x = x + self.cross_attn(self.norm2(x), text, text_bias)
        return x + g2[:, None] * self.mlp(modulate(self.norm3(x), s2, c2))


class VideoDiT(nn.Module):
    """Predicts the flow-matching velocity ``noise - data``.

    Inputs: ``latents [B, C, T, H, W]``, ``timestep [B]`` in [0, 1000] (per sample, so
    requests at different steps can share a batch), ``text_embeds [B, L, D]``,
    ``text_mask [B, L]`` (1 for real tokens). Output: ``velocity [B, C, T, H, W]``.
    """

    # Registered per axis in __init__ (register_buffer, setattr); declared for the type checker.
    code_t: torch.Tensor
    code_h: torch.Tensor
    code_w: torch.Tensor
    pos_t: nn.Parameter
    pos_h: nn.Parameter
    pos_w: nn.Parameter

    def __init__(self, cfg: DiTConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DiTConfig()
        w = cfg.width
        pt, ph, pw = cfg.patch
        self.patch_dim = cfg.latent_channels * pt * ph * pw
        self.embed = nn.Linear(self.patch_dim, w)
        # Fixed per-axis codes (not saved: rebuilt from the config) plus a learned,
        # zero-initialised correction per axis.
        for part, (axis, length) in enumerate(zip("thw", cfg.max_grid, strict=True)):
            self.register_buffer(f"code_{axis}", position_code(length, w, part), persistent=False)
            setattr(self, f"pos_{axis}", nn.Parameter(torch.zeros(length, w)))
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.pooled_mlp = nn.Sequential(nn.Linear(cfg.text_dim, w), nn.SiLU(), nn.Linear(w, w))
        self.text_proj = nn.Linear(cfg.text_dim, w)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(w, 2 * w)
        self.final = nn.Linear(w, self.patch_dim)
        for layer in (self.final_ada, self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        b, c, t, h, w = latents.shape
        pt, ph, pw = self.cfg.patch
        gt, gh, gw = t // pt, h // ph, w // pw
        x = latents.reshape(b, c, gt, pt, gh, ph, gw, pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, gt * gh * gw, self.patch_dim)
        pos_t = (self.code_t + self.pos_t)[:gt, None, None]
        pos_h = (self.code_h + self.pos_h)[None, :gh, None]
        pos_w = (self.code_w + self.pos_w)[None, None, :gw]
        pos = (pos_t + pos_h + pos_w).reshape(1, gt * gh * gw, -1)
        x = self.embed(x) + pos

        mask = text_mask.to(text_embeds.dtype)
        pooled = (text_embeds * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        cond = self.time_mlp(timestep_embedding(timestep, self.cfg.width))
        cond = cond + self.pooled_mlp(pooled)
        text = self.text_proj(text_embeds)
        text_bias = (1.0 - mask) * -1e4

        for block in self.blocks:
            x = block(x, cond, text, text_bias)
        shift, scale = self.final_ada(F.silu(cond)).chunk(2, dim=-1)
        x = self.final(modulate(self.final_norm(x), shift, scale))
        x = x.reshape(b, gt, gh, gw, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, c, t, h, w)
