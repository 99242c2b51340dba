"""The shared scheduler interface, after diffusers' ``set_timesteps``/``step`` and
k-diffusion's samplers.

Flow-matching convention: ``x_t = (1 - sigma) * x_0 + sigma * noise``; the model
predicts the velocity ``noise - x_0``; sampling runs sigma from 1 to 0. Timesteps
given to the denoiser are ``sigma * 1000``.

``step`` takes the velocity *function* rather than one velocity so that
second-order methods (Heun) can evaluate it twice; the pipeline never branches on
which scheduler it has.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
VelocityFn = Callable[[Array, float], Array]  # (sample, timestep in [0, 1000]) -> velocity


def flow_sigmas(steps: int, shift: float = 1.0) -> npt.NDArray[np.float64]:
    """``steps + 1`` sigmas from 1 to 0; ``shift > 1`` spends more steps at high noise (SD3/Wan)."""
    sigmas = np.linspace(1.0, 0.0, steps + 1)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def log_snr(sigma: float) -> float:
    """``lambda = log(alpha / sigma)`` with ``alpha = 1 - sigma``; +inf at sigma 0."""
    if sigma <= 0.0:
        return math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


class Scheduler(ABC):
    """Call ``set_timesteps`` once, then ``step`` for each index of ``timesteps``."""

    # Multistep solvers work in log-SNR, which is -inf at sigma 1; they start a hair
    # below it, as diffusers' UniPC does (the model sees timestep 999.999).
    max_sigma: float = 1.0
    # Stochastic schedulers draw fresh noise each step (from ``seed``); their output
    # matches the data distribution, not one ODE solution.
    stochastic: bool = False

    def __init__(self, shift: float = 1.0) -> None:
        self.shift = shift
        self.sigmas = np.zeros(0)
        self.timesteps: list[float] = []
        self.seed = 0

    def set_timesteps(self, steps: int, seed: int = 0) -> None:
        """``seed`` feeds stochastic schedulers' fresh noise (the request's seed, so a
        generation stays reproducible); deterministic ones ignore it."""
        self.sigmas = np.minimum(flow_sigmas(steps, self.shift), self.max_sigma)
        self.timesteps = [float(s * 1000.0) for s in self.sigmas[:-1]]
        self.seed = seed
        self.reset()

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Clear per-generation state (multistep schedulers keep history)."""

    def evaluations(self, steps: int) -> int:
        """Model evaluations for ``steps`` steps (for progress and cost estimates)."""
        return steps

    @abstractmethod
    def step(self, velocity_fn: VelocityFn, index: int, sample: Array) -> Array:
        """Advance ``sample`` from ``sigmas[index]`` to ``sigmas[index + 1]``."""
