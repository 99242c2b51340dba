"""Output sizes and lengths a served model supports, validated with errors that list them.

A denoiser is exported with fixed latent dims (``cinetron.json``), so each served model
has exactly one spatial bucket: ``width × height`` of its manifest. (The shapes DiT could
run smaller grids by slicing its positional table, but the served ONNX graph could not,
so offering them would be pretending.) Length is free: clips longer than the model's
own are composed from overlapping windows (``longvideo.py``), up to ``MAX_DURATION_S``.
"""

from __future__ import annotations

import math

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import InvalidArgument

MAX_DURATION_S = 60.0


def sizes(manifest: ModelManifest) -> list[tuple[int, int]]:
    """``(width, height)`` buckets of the served model."""
    return [(manifest.width, manifest.height)]


def _listing(manifest: ModelManifest) -> str:
    return ", ".join(f"{w}x{h}" for w, h in sizes(manifest))


def check_size(manifest: ModelManifest, width: int | None, height: int | None) -> None:
    """``None``/0 means "the model's size"; anything else must be one of ``sizes``."""
    w = width if width else manifest.width
    h = height if height else manifest.height
    if (w, h) not in sizes(manifest):
        raise InvalidArgument(
            "size",
            f"{w}x{h} is not a size the {manifest.family!r} model makes; supported "
            f"(width x height): {_listing(manifest)}. Leave width/height unset for the default",
        )


def frame_step(manifest: ModelManifest) -> int:
    """Lengths are whole latent frames: multiples of the VAE's temporal factor."""
    return max(1, manifest.vae_scale[0])


def min_duration(manifest: ModelManifest, overlap_frames: int) -> float:
    return max(overlap_frames, frame_step(manifest)) / manifest.fps


def duration_frames(
    manifest: ModelManifest, seconds: float, overlap_frames: int, field: str = "duration"
) -> int:
    """Seconds → frames, rounded to whole latent frames; raises naming the valid range."""
    lo = min_duration(manifest, overlap_frames)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgument(field, f"must be a number of seconds, got {seconds!r}")
    if not math.isfinite(seconds) or not lo <= seconds <= MAX_DURATION_S + 1e-9:
        raise InvalidArgument(
            field,
            f"must be between {lo:g} and {MAX_DURATION_S:g} seconds "
            f"(at {manifest.fps} fps), got {seconds}",
        )
    step = frame_step(manifest)
    frames = round(seconds * manifest.fps / step) * step
    return max(frames, step, overlap_frames)


def temporally_aligned(manifest: ModelManifest) -> bool:
    """Whether every latent frame stands for ``vae_t`` frames (``F = T × vae_t``).

    Causal video VAEs (Wan's: ``F = 1 + (T − 1) × 4``) encode the first frame alone, so
    a latent frame cannot simply be carried from the end of one window to the start of
    the next; the composer refuses windows for them rather than join them wrongly.
    """
    return manifest.frames == manifest.latent_frames * frame_step(manifest)
