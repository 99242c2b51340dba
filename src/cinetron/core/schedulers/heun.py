"""Flow-matching Heun (k-diffusion ``sample_heun``, diffusers' FlowMatchHeunDiscreteScheduler).

Second order, two model calls per step except the last, which is an Euler step to
sigma 0 (the velocity there is not needed and the average would be wasted work).
"""

from __future__ import annotations

import numpy as np

from cinetron.core.schedulers.base import Array, Scheduler, VelocityFn


class FlowMatchHeun(Scheduler):
    def evaluations(self, steps: int) -> int:
        return 2 * steps - 1

    def step(self, velocity_fn: VelocityFn, index: int, sample: Array) -> Array:
        sigma, sigma_next = float(self.sigmas[index]), float(self.sigmas[index + 1])
        dt = np.float32(sigma_next - sigma)
        v1 = velocity_fn(sample, sigma * 1000.0)
        euler = (sample + dt * v1).astype(np.float32)
        if sigma_next == 0.0:
            return euler
        v2 = velocity_fn(euler, sigma_next * 1000.0)
        return (sample + dt * np.float32(0.5) * (v1 + v2)).astype(np.float32)
