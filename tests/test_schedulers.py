"""Schedulers on a toy flow ODE with a known solution, and against diffusers' own schedulers.

Toy problem: data ``x0 ~ N(mu, s^2)`` per element. The exact flow-matching velocity is
``v(x, σ) = (σ − a s²) / V · (x − a mu) − mu`` with ``a = 1 − σ``, ``V = a² s² + σ²``,
and the ODE from noise ``z`` at σ = 1 lands exactly on ``mu + s z`` at σ = 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from cinetron.core.errors import InvalidArgument
from cinetron.core.schedulers import SCHEDULERS, Scheduler, make_scheduler
from cinetron.core.schedulers.base import Array

RNG = np.random.default_rng(7)
MU = RNG.uniform(-2, 2, (1, 4, 2, 3, 3)).astype(np.float32)
S = RNG.uniform(0.05, 0.6, MU.shape).astype(np.float32)
NOISE = RNG.standard_normal(MU.shape, dtype=np.float32)
EXACT = MU + S * NOISE


def toy_velocity(x: Array, timestep: float) -> Array:
    sigma = np.float64(timestep / 1000.0)
    a = 1.0 - sigma
    var = a * a * S.astype(np.float64) ** 2 + sigma * sigma
    v = (sigma - a * S.astype(np.float64) ** 2) / var * (x - a * MU) - MU
    return v.astype(np.float32)


class Counted:
    def __init__(self) -> None:
        self.calls = 0
        self.timesteps: list[float] = []

    def __call__(self, x: Array, timestep: float) -> Array:
        self.calls += 1
        self.timesteps.append(timestep)
        return toy_velocity(x, timestep)


def sample(scheduler: Scheduler, steps: int, velocity=toy_velocity, seed: int = 0) -> Array:
    scheduler.set_timesteps(steps, seed=seed)
    x = NOISE.copy()
    for i in range(steps):
        x = scheduler.step(velocity, i, x)
    return x


def error(x: Array) -> float:
    return float(np.abs(x - EXACT).max())


ORDER = {"euler": 1, "heun": 2, "dpmpp2m": 2, "unipc": 2}
ODE_SCHEDULERS = [n for n, cls in SCHEDULERS.items() if not cls.stochastic]


def test_every_ode_scheduler_declares_its_order() -> None:
    assert sorted(ORDER) == sorted(ODE_SCHEDULERS)


@pytest.mark.parametrize("name", ODE_SCHEDULERS)
def test_scheduler_converges_to_the_exact_ode_solution_at_its_order(name: str) -> None:
    coarse, fine = (error(sample(make_scheduler(name), n)) for n in (100, 200))
    assert fine < 1e-2, f"{name}: error {fine:.2e} after 200 steps"
    observed = np.log2(coarse / fine)  # halving the step divides the error by 2^order
    assert observed > ORDER[name] - 0.5, f"{name}: observed order {observed:.2f}"


@pytest.mark.parametrize("name", ODE_SCHEDULERS)
def test_scheduler_converges_with_timestep_shift(name: str) -> None:
    assert error(sample(make_scheduler(name, shift=3.0), 200)) < 2e-2


@pytest.mark.parametrize("name", ["heun", "dpmpp2m", "unipc"])
@pytest.mark.parametrize("evaluations", [9, 15, 25])
def test_higher_order_beats_euler_at_equal_model_evaluations(name: str, evaluations: int) -> None:
    scheduler = make_scheduler(name)
    steps = next(n for n in range(evaluations, 0, -1) if scheduler.evaluations(n) <= evaluations)
    higher = error(sample(scheduler, steps))
    euler = error(sample(make_scheduler("euler"), evaluations))
    assert higher < euler, f"{name}: {higher:.2e} vs euler {euler:.2e} at {evaluations} evals"


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("steps", [1, 2, 3, 20])
def test_scheduler_calls_the_model_as_often_as_it_declares(name: str, steps: int) -> None:
    scheduler, counted = make_scheduler(name, shift=2.0), Counted()
    out = sample(scheduler, steps, counted)
    assert counted.calls == scheduler.evaluations(steps)
    assert all(0.0 < t <= 1000.0 for t in counted.timesteps)
    assert out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_is_deterministic_and_resets_between_generations(name: str) -> None:
    scheduler = make_scheduler(name)
    first, second = sample(scheduler, 7), sample(scheduler, 7)
    assert np.array_equal(first, second)


def test_euler_ancestral_centres_on_the_data_and_spreads_a_little_less() -> None:
    # Not one ODE solution but samples: over many seeds, each element's mean is the data
    # mean, and its spread is somewhat below the data's (fresh noise discards what the old
    # noise knew; see the module docstring), never collapsed. Every seed starts from the
    # same NOISE: at sigma 1 the clean prediction is the data mean whatever the noise, so
    # the seeds' fresh noise alone spreads the samples.
    seeds = 300
    out = np.concatenate(
        [sample(make_scheduler("euler_ancestral"), 30, seed=seed) for seed in range(seeds)]
    )
    assert np.abs(out.mean(0) - MU[0]).max() < 5 * S.max() / np.sqrt(seeds)
    ratio = out.std(0) / S[0]
    assert ratio.min() > 0.4 and ratio.max() < 1.1


def test_euler_ancestral_is_reproducible_per_seed_and_differs_across_seeds() -> None:
    scheduler = make_scheduler("euler_ancestral")
    a, b, c = (sample(scheduler, 10, seed=seed) for seed in (3, 3, 4))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_shift_spends_more_steps_at_high_noise() -> None:
    plain, shifted = make_scheduler("euler"), make_scheduler("euler", shift=3.0)
    plain.set_timesteps(10)
    shifted.set_timesteps(10)
    assert sum(t > 500 for t in shifted.timesteps) > sum(t > 500 for t in plain.timesteps)
    assert shifted.timesteps[0] == 1000.0 and shifted.sigmas[-1] == 0.0


def test_unknown_scheduler_names_the_valid_ones() -> None:
    expected = "expected one of euler, heun, dpmpp2m, unipc, euler_ancestral"
    with pytest.raises(InvalidArgument, match=expected):
        make_scheduler("ddim")


# --- against diffusers (the reference implementations of these algorithms) ----------------


def diffusers_trajectory(  # type: ignore[no-untyped-def]
    scheduler,
    sigmas_in: np.ndarray,
    steps: int,
    set_sigmas: bool,
    velocity=toy_velocity,
    noise: Array = NOISE,
) -> Array:
    torch = pytest.importorskip("torch")
    if set_sigmas:
        scheduler.set_timesteps(sigmas=sigmas_in)
    else:  # DPMSolverMultistepScheduler has no `sigmas=`: give it ours after set_timesteps
        scheduler.set_timesteps(steps)
        scheduler.sigmas = torch.from_numpy(sigmas_in.astype(np.float32))
    x = torch.from_numpy(noise.copy())
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[i])
        v = torch.from_numpy(velocity(x.numpy(), sigma * 1000.0))
        x = scheduler.step(v, t, x).prev_sample
    return np.asarray(x.numpy())


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [4, 20])
def test_euler_matches_diffusers_flow_match_euler(shift: float, steps: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    expected = diffusers_trajectory(ref, np.linspace(1, 0, steps + 1)[:-1], steps, True)
    ours = sample(make_scheduler("euler", shift), steps)
    np.testing.assert_allclose(ours, expected, atol=2e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [4, 20])
def test_euler_ancestral_matches_diffusers_stochastic_sampling(
    shift: float, steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same fresh noise on both sides: diffusers draws it with torch, so hand it ours.
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    from diffusers.schedulers import scheduling_flow_match_euler_discrete as module

    from cinetron.core.schedulers.euler_ancestral import NOISE_STREAM

    rng = np.random.default_rng([5, NOISE_STREAM])
    monkeypatch.setattr(
        module,
        "randn_tensor",
        lambda shape, **_: torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)),
    )
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift, stochastic_sampling=True)
    expected = diffusers_trajectory(ref, np.linspace(1, 0, steps + 1)[:-1], steps, True)
    ours = sample(make_scheduler("euler_ancestral", shift), steps, seed=5)
    np.testing.assert_allclose(ours, expected, atol=2e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [2, 5, 20])
def test_unipc_matches_diffusers_unipc_with_flow_sigmas(shift: float, steps: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.UniPCMultistepScheduler(
        use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction"
    )
    expected = diffusers_trajectory(ref, np.linspace(1, 0, steps + 1)[:-1], steps, True)
    ours = sample(make_scheduler("unipc", shift), steps)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [2, 5, 20])
def test_dpmpp2m_matches_diffusers_dpm_solver_multistep(shift: float, steps: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction"
    )
    ours_scheduler = make_scheduler("dpmpp2m", shift)
    ours = sample(ours_scheduler, steps)
    expected = diffusers_trajectory(ref, ours_scheduler.sigmas, steps, False)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("steps", [3, 12])
def test_heun_matches_diffusers_flow_match_heun(steps: int) -> None:
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.FlowMatchHeunDiscreteScheduler()
    ref.set_timesteps(steps)
    ours_scheduler = make_scheduler("heun")
    ours_scheduler.set_timesteps(steps)
    # diffusers' Heun schedule is linspace(1, 1/1000); use its sigmas for both
    sig = ref.sigmas.numpy().astype(np.float64)  # [s0, s1, s1, s2, s2, …, 0]
    ours_scheduler.sigmas = np.concatenate([sig[:1], sig[1:-1:2], sig[-1:]])
    x = NOISE.copy()
    for i in range(steps):
        x = ours_scheduler.step(toy_velocity, i, x)
    y = torch.from_numpy(NOISE.copy())
    for t in ref.timesteps:
        v = torch.from_numpy(toy_velocity(y.numpy(), float(t)))
        y = ref.step(v, t, y).prev_sample
    np.testing.assert_allclose(x, y.numpy(), atol=1e-4)


@pytest.mark.parametrize("name", ["euler", "dpmpp2m", "unipc"])
def test_samplers_match_diffusers_on_the_shapes_model_where_its_videos_break(
    name: str, model_repository
) -> None:
    """The case the hardening review reported: a red circle on gray at 12 steps and
    guidance 5 comes out as coloured noise with dpmpp2m and unipc. Our samplers follow
    diffusers' step for step on the real denoiser there, so it is the model under strong
    guidance (see docs/performance.md, samplers), not a scheduler bug."""
    diffusers = pytest.importorskip("diffusers")
    from cinetron.core.sampling import guided_velocity, initial_noise
    from cinetron.transports.onnx_local import OnnxLocalTransport

    shift, steps = 3.0, 12
    with OnnxLocalTransport(model_repository) as transport:
        both = transport.encode_prompt(["a red circle moving up on a gray background", ""])
        velocity = guided_velocity(transport, both.row(0), both.row(1), 5.0)
        noise = initial_noise(7, (1, *transport.manifest.latent_shape))
        scheduler = make_scheduler(name, shift)
        scheduler.set_timesteps(steps)
        ours = noise.copy()
        for i in range(steps):
            ours = scheduler.step(velocity, i, ours)
        flow = {"use_flow_sigmas": True, "flow_shift": shift, "prediction_type": "flow_prediction"}
        if name == "euler":
            ref, sigmas, given = (
                diffusers.FlowMatchEulerDiscreteScheduler(),
                scheduler.sigmas[:-1],
                True,
            )
        elif name == "unipc":  # given sigmas, UniPC applies flow_shift to them itself
            plain = np.linspace(1, 0, steps + 1)[:-1]
            ref, sigmas, given = diffusers.UniPCMultistepScheduler(**flow), plain, True
        else:
            ref, sigmas, given = (
                diffusers.DPMSolverMultistepScheduler(**flow),
                scheduler.sigmas,
                False,
            )
        theirs = diffusers_trajectory(ref, sigmas, steps, given, velocity, noise)
    scale = float(np.abs(theirs).max())
    assert float(np.abs(ours - theirs).max()) <= 2e-3 * scale, name
