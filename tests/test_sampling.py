"""The sampling loop's conditioning hooks: pinned latent frames, the SDEdit start, the VAE
encoder as a transport capability, image-to-video and video-to-video through Triton.

The loop tests use an analytic flow (the exact velocity towards a known target), so what
they check — pinned frames exact, the rest where the flow leads, the right starting sigma
— does not depend on trained weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cinetron.core.compose import continuation_guess
from cinetron.core.errors import InvalidArgument
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.core.sampling import LatentCondition, noised, sample, start_index, steps_from
from cinetron.core.schedulers import SCHEDULERS, make_scheduler
from cinetron.core.video import decode_image, encode_png
from cinetron.models import world
from cinetron.models.captions import canonical_caption
from cinetron.tools.judge import judge
from cinetron.tools.tritonserver import TritonServer
from cinetron.transports.onnx_local import OnnxLocalTransport
from cinetron.transports.triton_grpc import TritonGrpcTransport

SHAPE = (1, 4, 8, 16, 16)
# Measured with the committed weights (docs/beyond-one-clip.md); the bound leaves margin.
I2V_MIN_PSNR_DB = 24.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def towards(target: np.ndarray, calls: list[tuple[np.ndarray, float]] | None = None):  # type: ignore[no-untyped-def]
    """The exact flow-matching velocity of a straight path ending at ``target``."""

    def velocity(x: np.ndarray, timestep: float) -> np.ndarray:
        if calls is not None:
            calls.append((x.copy(), timestep))
        return ((x - target) / np.float32(timestep / 1000.0)).astype(np.float32)

    return velocity


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_pinned_latent_frames_come_out_exact_and_the_rest_follows_the_flow(name: str) -> None:
    rng = np.random.default_rng(0)
    target, known_latents, noise = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in "abc")
    known = np.zeros(SHAPE[2], bool)
    known[:2] = True
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(12)
    out = sample(towards(target), scheduler, noise, LatentCondition(known_latents, known))
    np.testing.assert_array_equal(out[:, :, known], known_latents[:, :, known])
    np.testing.assert_allclose(out[:, :, ~known], target[:, :, ~known], atol=1e-3)


def test_every_step_sees_the_known_frames_noised_to_its_own_sigma() -> None:
    rng = np.random.default_rng(1)
    target, known_latents, noise = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in "abc")
    known = np.zeros(SHAPE[2], bool)
    known[0] = True
    calls: list[tuple[np.ndarray, float]] = []
    scheduler = make_scheduler("euler")
    scheduler.set_timesteps(6)
    sample(towards(target, calls), scheduler, noise, LatentCondition(known_latents, known))
    assert len(calls) == 6
    for x, t in calls:
        want = noised(known_latents, noise, t / 1000.0)
        np.testing.assert_allclose(x[:, :, 0], want[:, :, 0], atol=1e-6)


@pytest.mark.parametrize("strength", [0.3, 0.6, 1.0])
def test_sdedit_starts_from_the_input_noised_to_strength(strength: float) -> None:
    rng = np.random.default_rng(2)
    target, init, noise = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in "abc")
    scheduler = make_scheduler("euler")
    scheduler.set_timesteps(20)
    calls: list[tuple[np.ndarray, float]] = []
    out = sample(towards(target, calls), scheduler, noise, init=init, strength=strength)
    first_sigma = calls[0][1] / 1000.0
    assert first_sigma <= strength + 1e-9
    assert (
        len(calls)
        == steps_from(scheduler, strength)
        == 20 - start_index(scheduler.sigmas, strength)
    )
    assert len(calls) == pytest.approx(20 * strength, abs=1)
    np.testing.assert_allclose(calls[0][0], noised(init, noise, first_sigma), atol=1e-6)
    np.testing.assert_allclose(out, target, atol=1e-3)


@pytest.mark.parametrize("strength", [0.0, -0.5, 1.5, float("nan")])
def test_strength_outside_0_1_is_refused_with_the_range(strength: float) -> None:
    scheduler = make_scheduler("euler")
    scheduler.set_timesteps(10)
    with pytest.raises(InvalidArgument, match=r"strength: must be in \(0, 1\]"):
        start_index(scheduler.sigmas, strength)


@pytest.mark.parametrize("extrapolate", [False, True])
def test_a_continuation_guess_keeps_the_known_tail_then_holds_or_moves_on(
    extrapolate: bool,
) -> None:
    rng = np.random.default_rng(4)
    history = rng.standard_normal((1, 4, 5, 16, 16)).astype(np.float32)
    guess = continuation_guess(history, known=3, frames=8, extrapolate=extrapolate)
    assert guess.shape == (1, 4, 8, 16, 16) and guess.dtype == np.float32
    np.testing.assert_array_equal(guess[:, :, :3], history[:, :, 2:])
    last, step = history[:, :, 4], history[:, :, 4] - history[:, :, 3]
    for j in range(1, 6):
        expected = last + j * step if extrapolate else last
        np.testing.assert_allclose(guess[:, :, 2 + j], expected, rtol=1e-6, atol=1e-6)


def test_a_one_frame_history_can_only_be_held() -> None:
    history = np.ones((1, 4, 1, 16, 16), np.float32)
    guess = continuation_guess(history, known=1, frames=8, extrapolate=True)
    np.testing.assert_array_equal(guess, np.ones((1, 4, 8, 16, 16), np.float32))


def test_png_round_trip_and_garbage_image_is_invalid_argument() -> None:
    image = world.render(
        world.sample_scene(np.random.default_rng(0), "white", "blue", "square", "still")
    )[0]
    np.testing.assert_array_equal(decode_image(encode_png(image)), image)
    with pytest.raises(InvalidArgument, match="image: is not a readable image"):
        decode_image(b"not an image at all")


def test_a_repository_without_the_encoder_declares_it_and_says_to_re_export(
    model_repository: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "elsewhere"  # outside ./model_repository: the encoder must be its own
    shutil.copytree(model_repository, copy)
    with OnnxLocalTransport(copy) as transport:
        assert transport.can_encode_video
        latents = transport.encode_video(clip(("black", "red", "circle", "left"), 0)[None])
        assert latents.shape == (1, *transport.manifest.latent_shape)
    shutil.rmtree(copy / "vae_encoder")
    with OnnxLocalTransport(copy) as transport:
        assert not transport.can_encode_video
        with pytest.raises(InvalidArgument, match="re-export the repository"):
            transport.encode_video(clip(("black", "red", "circle", "left"), 0)[None])
        image = clip(("black", "red", "circle", "left"), 0)[0]
        with pytest.raises(InvalidArgument, match=r"image: .*vae_encoder"):
            Pipeline(transport).plan(GenerationRequest("a red circle", image=image))


# --- through a real tritonserver --------------------------------------------------------


@pytest.fixture(scope="module")
def transport(triton_server: TritonServer) -> Iterator[TritonGrpcTransport]:
    with TritonGrpcTransport(triton_server.grpc_url) as t:
        yield t


@pytest.fixture(scope="module")
def pipeline(transport: TritonGrpcTransport) -> Pipeline:
    return Pipeline(transport)


def clip(attrs: tuple[str, str, str, str], seed: int) -> np.ndarray:
    return world.render(world.sample_scene(np.random.default_rng(seed), *attrs))


@pytest.mark.triton
def test_served_vae_encoder_matches_onnxruntime_and_round_trips(
    transport: TritonGrpcTransport, model_repository: Path
) -> None:
    frames = clip(("black", "red", "circle", "left"), 0)
    assert transport.can_encode_video
    served = transport.encode_video(frames[None])
    with OnnxLocalTransport(model_repository) as local_transport:
        local = local_transport.encode_video(frames[None])
    assert served.shape == (1, *transport.manifest.latent_shape)
    np.testing.assert_allclose(served, local, atol=1e-4)
    decoded = transport.decode_video(served)[0]
    value = psnr(decoded, frames)
    print(f"vae round trip PSNR {value:.1f} dB")
    assert value > 20.0


@pytest.mark.triton
def test_image_to_video_keeps_the_given_first_frame(pipeline: Pipeline) -> None:
    values, free = [], []
    for seed, attrs in enumerate(
        [("black", "red", "circle", "left"), ("white", "blue", "square", "right"),
         ("gray", "yellow", "triangle", "still")]
    ):  # fmt: skip
        image = clip(attrs, seed)[0]
        base = GenerationRequest(canonical_caption(attrs), seed=seed)
        video = pipeline.generate(replace(base, image=image))
        plain = pipeline.generate(base)
        values.append(psnr(video.frames[0], image))
        free.append(psnr(plain.frames[0], image))
        verdict = judge(video.frames[:2])  # the frames the pinned latent frame decodes to
        assert (verdict.background, verdict.color) == attrs[:2], (attrs, verdict)
    print(f"i2v first-frame PSNR {np.round(values, 1)} dB; unconditioned {np.round(free, 1)} dB")
    assert min(values) >= I2V_MIN_PSNR_DB
    assert np.mean(values) > np.mean(free) + 5.0  # the image, not the prompt, made frame 0


@pytest.mark.triton
def test_video_to_video_keeps_the_input_at_low_strength_and_follows_the_prompt_at_high(
    pipeline: Pipeline,
) -> None:
    source = clip(("black", "red", "circle", "right"), 3)
    prompt = canonical_caption(("black", "green", "circle", "right"))
    base = GenerationRequest(prompt, seed=0, video=source)
    low = pipeline.generate(replace(base, strength=0.2))
    high = pipeline.generate(replace(base, strength=0.9))
    assert low.frames.shape == high.frames.shape == source.shape
    low_psnr, high_psnr = psnr(low.frames, source), psnr(high.frames, source)
    print(f"v2v PSNR vs input: strength 0.2 → {low_psnr:.1f} dB, 0.9 → {high_psnr:.1f} dB")
    assert low_psnr > high_psnr + 3.0
    assert judge(low.frames).color == "red"
    assert judge(high.frames).color == "green"
