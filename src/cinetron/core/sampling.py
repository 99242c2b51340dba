"""THE sampling loop, and the guidance and conditioning it is fed.

``sample`` is the one loop every generation runs — plain clips, every window of a long
video or storyboard, image-to-video, extension, video-to-video, and batches of
generations in lockstep. It takes everything as arguments (k-diffusion's style): the
velocity function, the starting noise, the scheduler, and two optional hooks on the
flow-matching path ``x_t = (1 - sigma) * x_0 + sigma * noise``:

- **Pinning** (``condition``; image-to-video, carried windows, extension): some latent
  frames are known. Before every step their part of the sample is replaced by the known
  latents noised to the step's sigma, with the same noise the sample started from, so
  the network always sees a consistent noisy video and fills in the rest around it
  (RePaint-style inpainting along time). After the last step the known frames are exact.
- **Partial denoising** (``init`` + ``strength``; SDEdit: video-to-video, and the warm
  start of carried windows): start at the step whose sigma is ``strength`` from ``init``
  noised to that sigma; 1 is pure text-to-video, small values keep more of ``init``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cinetron.core.errors import Cancelled, InvalidArgument
from cinetron.core.schedulers.base import Array, Scheduler, VelocityFn
from cinetron.core.transport import PromptEmbeddings, Transport

StepCallback = Callable[[int], None]  # steps done in this run, after each step
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class LatentCondition:
    """Latent frames to keep: ``latents`` ``[B, C, T, H, W]`` (clean), ``known`` ``[T]`` bool."""

    latents: Array
    known: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        if self.known.shape != (self.latents.shape[2],):
            raise ValueError(
                f"known must have one flag per latent frame ({self.latents.shape[2]}), "
                f"got shape {self.known.shape}"
            )

    @classmethod
    def first(cls, latents: Array, frames: int) -> LatentCondition:
        """The first ``frames`` latent frames of ``latents`` are known."""
        known = np.zeros(latents.shape[2], bool)
        known[:frames] = True
        return cls(latents, known)


def initial_noise(seed: int, shape: tuple[int, ...]) -> Array:
    """Gaussian latents from a seed: numpy's PCG64, identical on every machine."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def noised(x0: Array, noise: Array, sigma: float) -> Array:
    """The flow-matching sample at ``sigma``: ``(1 - sigma) * x0 + sigma * noise``."""
    return ((1.0 - sigma) * x0 + sigma * noise).astype(np.float32)


def pin(sample: Array, condition: LatentCondition, noise: Array, sigma: float) -> Array:
    """``sample`` with the known latent frames replaced by their noised ground truth."""
    out = sample.copy()
    k = condition.known
    out[:, :, k] = noised(condition.latents[:, :, k], noise[:, :, k], sigma)
    return out


def start_index(sigmas: npt.NDArray[np.float64], strength: float) -> int:
    """First step whose sigma is at most ``strength`` (SDEdit's starting point)."""
    if not 0.0 < strength <= 1.0:
        raise InvalidArgument("strength", f"must be in (0, 1], got {strength}")
    steps = len(sigmas) - 1
    below = np.nonzero(sigmas[:steps] <= strength + 1e-9)[0]
    return int(below[0]) if len(below) else steps - 1  # tiny strength: just the last step


def steps_from(scheduler: Scheduler, strength: float) -> int:
    """Steps a run makes from ``strength`` (1: all of them)."""
    return scheduler.steps - start_index(scheduler.sigmas, strength)


def sample(
    velocity: VelocityFn,
    scheduler: Scheduler,
    noise: Array,
    condition: LatentCondition | None = None,
    init: Array | None = None,
    strength: float = 1.0,
    callback: StepCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Array:
    """Denoise ``noise`` ``[B, C, T, H, W]`` to clean latents.

    ``scheduler`` must have had ``set_timesteps``. ``should_stop`` is checked before every
    step (``Cancelled`` when it says so), so a cancelled or expired generation stops within
    one step; ``callback`` gets the steps done after each one.
    """
    first = 0 if init is None else start_index(scheduler.sigmas, strength)
    x = noise if init is None else noised(init, noise, float(scheduler.sigmas[first]))
    for i in range(first, scheduler.steps):
        if should_stop is not None and should_stop():
            raise Cancelled(f"generation stopped before step {i - first + 1}")
        if condition is not None:
            x = pin(x, condition, noise, float(scheduler.sigmas[i]))
        x = scheduler.step(velocity, i, x)
        if callback is not None:
            callback(i - first + 1)
    return x if condition is None else pin(x, condition, noise, 0.0)


def guided_velocity(
    transport: Transport,
    cond: PromptEmbeddings,
    uncond: PromptEmbeddings | None,
    guidance: float,
    request_id: str = "",
) -> VelocityFn:
    """The velocity function with classifier-free guidance: cond and uncond go to the
    denoiser as ONE batch of ``2B`` (``B`` samples in lockstep), so Triton sees one call
    per step; without ``uncond``, the conditional model alone."""

    def velocity(x: Array, timestep: float) -> Array:
        if uncond is None:
            t = np.full(len(x), timestep, np.float32)
            return transport.denoise(x, t, cond.embeds, cond.mask, request_id)
        both = transport.denoise(
            np.concatenate([x, x]),
            np.full(2 * len(x), timestep, np.float32),
            np.concatenate([cond.embeds, uncond.embeds]),
            np.concatenate([cond.mask, uncond.mask]),
            request_id,
        )
        v_cond, v_uncond = np.split(both, 2)
        return (v_uncond + np.float32(guidance) * (v_cond - v_uncond)).astype(np.float32)

    return velocity
