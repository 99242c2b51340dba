"""Small video autoencoder: 4x spatial, 2x temporal compression.

An 8x spatial VAE was measured to turn triangles into circles, so this one keeps
16x16 latents for 64x64 frames. It is a plain autoencoder (no KL term): the latents
are normalised by their measured mean and std before the DiT sees them, and the
decoder is trained on slightly noised latents so imperfect samples still decode cleanly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    latent_channels: int = 4
    width: int = 64
    pixel_width: int = 24
    temporal_factor: int = 2
    spatial_factor: int = 4

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ResBlock3d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        # (2+1)D: a spatial then a temporal convolution, 2.25x cheaper than 3x3x3.
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.temporal(self.act(self.spatial(self.act(x))))


class VideoEncoder(nn.Module):
    """``[B, 3, F, H, W]`` in [-1, 1] → ``[B, C, F/2, H/4, W/4]``."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        kernel = (cfg.temporal_factor, cfg.spatial_factor, cfg.spatial_factor)
        self.net = nn.Sequential(
            nn.Conv3d(3, cfg.pixel_width, (1, 3, 3), padding=(0, 1, 1)),
            nn.SiLU(),
            nn.Conv3d(cfg.pixel_width, cfg.width, kernel, stride=kernel),
            ResBlock3d(cfg.width),
            nn.SiLU(),
            nn.Conv3d(cfg.width, cfg.latent_channels, 1),
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)


class VideoDecoder(nn.Module):
    """``[B, C, F/2, H/4, W/4]`` → ``[B, 3, F, H, W]`` in about [-1, 1]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        kernel = (cfg.temporal_factor, cfg.spatial_factor, cfg.spatial_factor)
        self.net = nn.Sequential(
            nn.Conv3d(cfg.latent_channels, cfg.width, 3, padding=1),
            ResBlock3d(cfg.width),
            ResBlock3d(cfg.width),
            nn.SiLU(),
            nn.ConvTranspose3d(cfg.width, cfg.pixel_width, kernel, stride=kernel),
            nn.SiLU(),
            nn.Conv3d(cfg.pixel_width, cfg.pixel_width, (1, 3, 3), padding=(0, 1, 1)),
            nn.SiLU(),
            nn.Conv3d(cfg.pixel_width, 3, (1, 3, 3), padding=(0, 1, 1)),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


class VideoAutoencoder(nn.Module):
    # Buffers registered in __init__; declared for the type checker.
    latent_mean: torch.Tensor
    latent_std: torch.Tensor

    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or VAEConfig()
        self.encoder = VideoEncoder(self.cfg)
        self.decoder = VideoDecoder(self.cfg)
        # Normalisation of the latent space, measured after training (see train.py).
        self.register_buffer("latent_mean", torch.zeros(self.cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(self.cfg.latent_channels))

    def _shape(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, 1, 1, 1)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video in [-1, 1] → normalised latents (about zero mean, unit std)."""
        raw = self.encoder(video)
        return (raw - self._shape(self.latent_mean)) / self._shape(self.latent_std)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → video in [-1, 1] (not clamped)."""
        raw = latents * self._shape(self.latent_std) + self._shape(self.latent_mean)
        return self.decoder(raw)
