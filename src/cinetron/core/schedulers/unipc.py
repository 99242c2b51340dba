"""Flow-matching UniPC, order 2, B(h) = e^h − 1 ("bh2") — what Wan2.1 samples with
(diffusers' UniPCMultistepScheduler with ``use_flow_sigmas``, ``flow_shift``,
``prediction_type="flow_prediction"``, ``predict_x0``, ``lower_order_final``).

Each step makes ONE model call at the current sample and uses it twice: the
corrector (UniC) refines the current sample with it, then the predictor (UniP)
extrapolates to the next sigma. The corrector is free (no extra evaluation).
"""

from __future__ import annotations

import math

import numpy as np

from cinetron.core.schedulers.base import Array, Scheduler, VelocityFn, log_snr

ORDER = 2


def _bh2_coefficients(h: float, order: int) -> tuple[float, float, list[float]]:
    """``h_phi_1``, ``B(h)`` and the ``b`` vector of the UniPC linear system (predict_x0)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = math.expm1(hh)
    b, factorial = [], 1
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, b


class FlowMatchUniPC(Scheduler):
    max_sigma = 1.0 - 1e-6

    def reset(self) -> None:
        self._x0s: list[Array] = []  # data predictions of the last ORDER steps, oldest first
        self._last_sample: Array | None = None
        self._order = 1  # order of the last predictor, which the corrector matches
        self._warm = 0  # steps taken so far, capped at ORDER

    def _lam(self, index: int) -> float:
        return log_snr(float(self.sigmas[index]))

    def step(self, velocity_fn: VelocityFn, index: int, sample: Array) -> Array:
        sigma = float(self.sigmas[index])
        x0 = (sample - np.float32(sigma) * velocity_fn(sample, sigma * 1000.0)).astype(np.float32)
        if index > 0 and self._last_sample is not None:
            sample = self._correct(index, x0, self._last_sample)
        self._x0s = [*self._x0s, x0][-ORDER:]
        order = min(ORDER, self.steps - index, self._warm + 1)  # warm up, lower order at the end
        self._order, self._last_sample = order, sample
        self._warm = min(self._warm + 1, ORDER)
        return self._predict(index, sample, order)

    def _predict(self, index: int, x: Array, order: int) -> Array:
        """UniP: from ``sigmas[index]`` to ``sigmas[index + 1]``."""
        m0 = self._x0s[-1]
        sigma_s, sigma_t = float(self.sigmas[index]), float(self.sigmas[index + 1])
        if sigma_t == 0.0:
            return m0  # h = inf: the first-order update is exactly x0 (order is 1 here)
        lam_s = self._lam(index)
        h = log_snr(sigma_t) - lam_s
        h_phi_1, b_h, _ = _bh2_coefficients(h, order)
        alpha_t = 1.0 - sigma_t
        out = np.float32(sigma_t / sigma_s) * x - np.float32(alpha_t * h_phi_1) * m0
        if order == 2:
            rk = (self._lam(index - 1) - lam_s) / h
            d1 = (self._x0s[-2] - m0) / np.float32(rk)
            out = out - np.float32(alpha_t * b_h * 0.5) * d1  # rho_p = 1/2 for order 2
        return out.astype(np.float32)

    def _correct(self, index: int, x0_t: Array, last_sample: Array) -> Array:
        """UniC: redo the step ``index - 1 → index`` with the model output at ``index``."""
        order, m0 = self._order, self._x0s[-1]
        sigma_s, sigma_t = float(self.sigmas[index - 1]), float(self.sigmas[index])
        lam_s = self._lam(index - 1)
        h = log_snr(sigma_t) - lam_s
        rk = (self._lam(index - 2) - lam_s) / h if order == 2 else None
        h_phi_1, b_h, b = _bh2_coefficients(h, order)
        if order == 1:
            rhos = [0.5]
        else:
            assert rk is not None
            rhos = list(np.linalg.solve(np.array([[1.0, 1.0], [rk, 1.0]]), np.array(b)))
        alpha_t = 1.0 - sigma_t
        res = np.float32(rhos[-1]) * (x0_t - m0)
        if order == 2:
            assert rk is not None
            res = res + np.float32(rhos[0] / rk) * (self._x0s[-2] - m0)
        out = (
            np.float32(sigma_t / sigma_s) * last_sample
            - np.float32(alpha_t * h_phi_1) * m0
            - np.float32(alpha_t * b_h) * res
        )
        return out.astype(np.float32)
