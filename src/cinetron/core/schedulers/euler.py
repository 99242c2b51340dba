"""Flow-matching Euler: one model call per step (diffusers' FlowMatchEulerDiscreteScheduler)."""

from __future__ import annotations

import numpy as np

from cinetron.core.schedulers.base import Array, Scheduler, VelocityFn


class FlowMatchEuler(Scheduler):
    def step(self, velocity_fn: VelocityFn, index: int, sample: Array) -> Array:
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        velocity = velocity_fn(sample, float(sigma * 1000.0))
        return (sample + np.float32(sigma_next - sigma) * velocity).astype(np.float32)
