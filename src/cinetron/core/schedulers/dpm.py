"""Flow-matching DPM-Solver++(2M) (diffusers' DPMSolverMultistepScheduler with
``use_flow_sigmas``, ``prediction_type="flow_prediction"``, midpoint solver).

Works on the data prediction ``x0 = x - sigma * v`` in log-SNR time, with one model
call per step: the second-order term reuses the previous step's ``x0``. The first
step (no history) and the last step (to sigma 0) are first order.
"""

from __future__ import annotations

import math

import numpy as np

from cinetron.core.schedulers.base import Array, Scheduler, VelocityFn, log_snr


class FlowMatchDPMSolverPP2M(Scheduler):
    max_sigma = 1.0 - 1e-6

    def reset(self) -> None:
        self._prev_x0: Array | None = None

    def step(self, velocity_fn: VelocityFn, index: int, sample: Array) -> Array:
        sigma, sigma_next = float(self.sigmas[index]), float(self.sigmas[index + 1])
        x0 = (sample - np.float32(sigma) * velocity_fn(sample, sigma * 1000.0)).astype(np.float32)
        prev_x0, self._prev_x0 = self._prev_x0, x0
        if sigma_next == 0.0:
            return x0  # the first-order update reaches x0 exactly at sigma 0
        lam, lam_next = log_snr(sigma), log_snr(sigma_next)
        h = lam_next - lam
        alpha_next = 1.0 - sigma_next
        # x_t = (σ_t/σ_s) x − α_t (e^{−h} − 1) D
        decay, gain = sigma_next / sigma, -alpha_next * math.expm1(-h)
        if prev_x0 is None:
            data = x0
        else:
            r = (lam - log_snr(float(self.sigmas[index - 1]))) / h
            data = x0 + np.float32(0.5 / r) * (x0 - prev_x0)
        return (np.float32(decay) * sample + np.float32(gain) * data).astype(np.float32)
