"""Joining windows into one video: the warm start of carried windows, the cross-fade at
their seams, the input frames a window covers, and a measure of the seams."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cinetron.core.request import Frames
from cinetron.core.schedulers.base import Array


def continuation_guess(history: Array, known: int, frames: int, extrapolate: bool) -> Array:
    """A first guess at a window of ``frames`` latent frames that continues ``history``.

    ``history`` ``[1, C, t, H, W]`` ends where the video so far ends. The guess is its
    last ``known`` frames, then the last frame carried on at its last latent step
    (``extrapolate``: motion goes on) or held (a new prompt decides the motion). Only
    its coarse layout survives the noise it is started from, which is the point: the
    object stays where it was and keeps going. (Pinning alone left the new frames free to
    put the object anywhere: it jumped back towards the centre.)
    """
    last = history[:, :, -1:]
    velocity = np.zeros_like(last)
    if extrapolate and history.shape[2] >= 2:
        velocity = last - history[:, :, -2:-1]
    ahead = np.arange(1, frames - known + 1, dtype=np.float32)[None, None, :, None, None]
    return np.concatenate([history[:, :, -known:], last + ahead * velocity], axis=2).astype(
        np.float32
    )


def crossfade(tail: Frames, head: Frames) -> Frames:
    """Blend ``head`` into ``tail`` linearly over their length (``[o, H, W, 3]`` each)."""
    w = (np.arange(1, len(tail) + 1, dtype=np.float32) / (len(tail) + 1))[:, None, None, None]
    mixed = tail.astype(np.float32) * (1 - w) + head.astype(np.float32) * w
    return np.rint(mixed).astype(np.uint8)


def window_frames(video: Frames, start: int, count: int) -> Frames:
    """``video[start : start + count]``, the last frame repeated past the end."""
    idx = np.clip(np.arange(start, start + count), 0, len(video) - 1)
    return video[idx]


def still_clip(image: Frames, frames: int) -> Frames:
    """One image ``[H, W, 3]`` repeated to a clip ``[frames, H, W, 3]``."""
    return np.repeat(image[None], frames, axis=0)


@dataclass(frozen=True)
class SeamReport:
    """Mean absolute difference of consecutive frames (0..255), at seams and elsewhere."""

    seam_mean: float  # pairs in the cross-faded overlap and at the join
    seam_max: float
    within_mean: float  # every other pair inside a shot (cuts excluded)
    seams: int

    @property
    def ratio(self) -> float:
        return self.seam_mean / max(self.within_mean, 1e-6)

    def line(self) -> str:
        return (
            f"seams={self.seams} seam_mean_abs_diff={self.seam_mean:.2f} "
            f"seam_max={self.seam_max:.2f} within_mean_abs_diff={self.within_mean:.2f} "
            f"ratio={self.ratio:.2f}"
        )


def seam_report(frames: Frames, seams: list[int], cuts: list[int], overlap: int) -> SeamReport:
    """``frames`` ``[N, H, W, 3]`` with windows joined at ``seams`` (first new frames) over
    ``overlap`` cross-faded frames, and shots cut at ``cuts``."""
    f = frames.astype(np.float32)
    diffs = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))  # diffs[i]: frame i → i + 1
    at_seam = np.zeros(len(diffs), bool)
    for s in seams:
        at_seam[max(0, s - overlap - 1) : s] = True
    is_cut = np.zeros(len(diffs), bool)
    is_cut[[c - 1 for c in cuts]] = True
    seam, within = diffs[at_seam & ~is_cut], diffs[~at_seam & ~is_cut]
    return SeamReport(
        float(seam.mean()) if len(seam) else math.nan,
        float(seam.max()) if len(seam) else math.nan,
        float(within.mean()) if len(within) else math.nan,
        len(seams),
    )
