"""Training-free conditioning of the client-side denoising loop.

Two tricks on the flow-matching path ``x_t = (1 - sigma) * x_0 + sigma * noise``:

- **Pinning** (image-to-video, video extension): some latent frames are known. Before
  every step their part of the sample is replaced by the known latents noised to the
  step's sigma, with the same noise the sample started from, so the network always
  sees a consistent noisy video and fills in the rest around it (RePaint-style
  inpainting along time). After the last step the known frames are exact.
- **Partial denoising** (SDEdit, video-to-video): start at the step whose sigma is
  ``strength`` from the input's latents noised to that sigma; 1 is pure text-to-video,
  small values keep more of the input.
- **Warm start** (carried windows): pinning alone left the new frames free to put the
  object anywhere (it jumped back towards the centre), so a window that continues a video
  also starts, SDEdit-style, from a guess at its own frames (``continuation_guess``).

Known latents come from ``vae_encoder``, an optional model of the repository (the seven
contract models have no encoder); ``latent_encoder_for`` finds it for any transport.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import Cancelled, InvalidArgument
from cinetron.core.schedulers.base import Array, Scheduler, VelocityFn
from cinetron.transports.base import Transport

ENCODER_MODEL = "vae_encoder"  # export/spec.py ENCODER_MODEL (client/ must not import export/)
Frames = npt.NDArray[np.uint8]  # [F, H, W, 3]
StepCallback = Callable[[int, int], None]  # (steps done, steps in this run)


@dataclass(frozen=True)
class LatentCondition:
    """Latent frames to keep: ``latents`` ``[1, C, T, H, W]`` (clean), ``known`` ``[T]`` bool."""

    latents: Array
    known: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        if self.known.shape != (self.latents.shape[2],):
            raise ValueError(
                f"known must have one flag per latent frame ({self.latents.shape[2]}), "
                f"got shape {self.known.shape}"
            )


def noised(x0: Array, noise: Array, sigma: float) -> Array:
    """The flow-matching sample at ``sigma``: ``(1 - sigma) * x0 + sigma * noise``."""
    return ((1.0 - sigma) * x0 + sigma * noise).astype(np.float32)


def pin(sample: Array, condition: LatentCondition, noise: Array, sigma: float) -> Array:
    """``sample`` with the known latent frames replaced by their noised ground truth."""
    out = sample.copy()
    k = condition.known
    out[:, :, k] = noised(condition.latents[:, :, k], noise[:, :, k], sigma)
    return out


def continuation_guess(history: Array, known: int, frames: int, extrapolate: bool) -> Array:
    """A first guess at a window of ``frames`` latent frames that continues ``history``.

    ``history`` ``[1, C, t, H, W]`` ends where the video so far ends. The guess is its
    last ``known`` frames, then the last frame carried on at its last latent step
    (``extrapolate``: motion goes on) or held (a new prompt decides the motion). Only
    its coarse layout survives the noise it is started from, which is the point: the
    object stays where it was and keeps going.
    """
    last = history[:, :, -1:]
    velocity = np.zeros_like(last)
    if extrapolate and history.shape[2] >= 2:
        velocity = last - history[:, :, -2:-1]
    ahead = np.arange(1, frames - known + 1, dtype=np.float32)[None, None, :, None, None]
    return np.concatenate([history[:, :, -known:], last + ahead * velocity], axis=2).astype(
        np.float32
    )


def start_index(sigmas: npt.NDArray[np.float64], strength: float) -> int:
    """First step whose sigma is at most ``strength`` (SDEdit's starting point)."""
    if not 0.0 < strength <= 1.0:
        raise InvalidArgument("strength", f"must be in (0, 1], got {strength}")
    steps = len(sigmas) - 1
    below = np.nonzero(sigmas[:steps] <= strength + 1e-9)[0]
    return int(below[0]) if len(below) else steps - 1  # tiny strength: just the last step


def denoise(
    velocity_fn: VelocityFn,
    scheduler: Scheduler,
    noise: Array,
    condition: LatentCondition | None = None,
    init: Array | None = None,
    strength: float = 1.0,
    should_stop: Callable[[], bool] | None = None,
    on_step: StepCallback | None = None,
) -> Array:
    """The sampling loop with optional pinning and SDEdit start; returns clean latents.

    ``noise`` ``[1, C, T, H, W]`` is the starting noise (and the noise pinned frames are
    noised with); ``init`` the latents to start from at ``strength`` (None: pure noise).
    ``scheduler`` must have had ``set_timesteps``.
    """
    first = 0 if init is None else start_index(scheduler.sigmas, strength)
    x = noise if init is None else noised(init, noise, float(scheduler.sigmas[first]))
    total = scheduler.steps - first
    for i in range(first, scheduler.steps):
        if should_stop is not None and should_stop():
            raise Cancelled(f"generation stopped before step {i - first + 1} of {total}")
        if condition is not None:
            x = pin(x, condition, noise, float(scheduler.sigmas[i]))
        x = scheduler.step(velocity_fn, i, x)
        if on_step is not None:
            on_step(i - first + 1, total)
    return x if condition is None else pin(x, condition, noise, 0.0)


def steps_from(scheduler: Scheduler, strength: float | None) -> int:
    """Steps a run makes from ``strength`` (None: all of them)."""
    if strength is None:
        return scheduler.steps
    return scheduler.steps - start_index(scheduler.sigmas, strength)


# --- pixels ↔ latents -------------------------------------------------------------------


def frames_to_video(frames: Frames) -> Array:
    """uint8 ``[F, H, W, 3]`` → float ``[1, 3, F, H, W]`` in [-1, 1] (what the VAE reads)."""
    video = frames.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(video.transpose(3, 0, 1, 2)[None])


def check_frames(field: str, frames: Frames, manifest: ModelManifest) -> None:
    """Frames must be ``[F, H, W, 3]`` uint8 at the model's size."""
    want = (manifest.height, manifest.width)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InvalidArgument(field, f"must be RGB frames [F, H, W, 3] uint8, got {frames.shape}")
    if frames.shape[1:3] != want:
        raise InvalidArgument(
            field,
            f"is {frames.shape[2]}x{frames.shape[1]} but the model makes "
            f"{manifest.width}x{manifest.height} video; resize it to that size first",
        )


def still_clip(image: Frames, manifest: ModelManifest) -> Frames:
    """One image ``[H, W, 3]`` repeated to the model's clip length ``[F, H, W, 3]``."""
    return np.repeat(image[None], manifest.frames, axis=0)


def decode_image(data: bytes) -> Frames:
    """PNG/JPEG/… bytes → ``[H, W, 3]`` uint8 RGB (any still format ffmpeg reads)."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            frame = next(container.decode(video=0))
            return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
    except (av.error.FFmpegError, StopIteration, ValueError) as e:
        raise InvalidArgument(
            "image", f"is not a readable image ({type(e).__name__}); send PNG or JPEG bytes"
        ) from None


class LatentEncoder(ABC):
    """Where ``vae_encoder`` runs: video ``[B, 3, F, H, W]`` → latents ``[B, C, T, H, W]``."""

    @abstractmethod
    def encode(self, video: Array, request_id: str = "") -> Array: ...

    def encode_frames(self, frames: Frames, request_id: str = "") -> Array:
        """uint8 ``[F, H, W, 3]`` (one clip) → latents ``[1, C, T, H, W]``."""
        return self.encode(frames_to_video(frames), request_id)


def _missing(where: str) -> InvalidArgument:
    return InvalidArgument(
        "image",
        f"image- and video-conditioned generation needs the {ENCODER_MODEL!r} model, and "
        f"{where} has none; re-export the repository with `cinetron export` (it writes "
        f"{ENCODER_MODEL}) and restart the server",
    )


class TritonEncoder(LatentEncoder):
    """``vae_encoder`` on the Triton server the transport talks to."""

    def __init__(self, transport: Transport) -> None:
        from cinetron.transports.triton_grpc import TritonGrpcTransport

        assert isinstance(transport, TritonGrpcTransport)
        self.transport = transport

    def encode(self, video: Array, request_id: str = "") -> Array:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        from cinetron.transports.triton_grpc import translate_error

        t = self.transport
        try:
            ready = t.client.is_model_ready(ENCODER_MODEL, client_timeout=t.timeout_s)
        except InferenceServerException:
            ready = False
        if not ready:
            raise _missing(f"the Triton server at {t.url}")
        tensor = grpcclient.InferInput("video", list(video.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(video, dtype=np.float32))
        try:
            result = t.client.infer(
                ENCODER_MODEL,
                [tensor],
                outputs=[grpcclient.InferRequestedOutput("latents")],
                request_id=request_id,
                client_timeout=t.timeout_s,
            )
        except InferenceServerException as e:
            raise translate_error(e, t.url, f"{ENCODER_MODEL!r} (request {request_id!r})") from None
        return np.asarray(result.as_numpy("latents"), dtype=np.float32)


class OnnxEncoder(LatentEncoder):
    """``vae_encoder/1/model.onnx`` of an exported repository, in-process."""

    def __init__(self, repo: str | Path, threads: int = 1) -> None:
        from cinetron.transports.onnx_local import cpu_session

        path = Path(repo) / ENCODER_MODEL / "1" / "model.onnx"
        if not path.exists():
            raise _missing(f"the repository {repo}")
        self.session = cpu_session(path, threads)

    def encode(self, video: Array, request_id: str = "") -> Array:
        return np.asarray(self.session.run(["latents"], {"video": video})[0], dtype=np.float32)


class TorchEncoder(LatentEncoder):
    """The torch VAE of an in-process ``TorchTransport`` (reference path)."""

    def __init__(self, transport: Transport) -> None:
        self.vae = transport.vae  # type: ignore[attr-defined]

    def encode(self, video: Array, request_id: str = "") -> Array:
        import torch

        with torch.inference_mode():
            return self.vae.encode(torch.from_numpy(video)).numpy().astype(np.float32)


def latent_encoder_for(transport: Transport, repo: str | Path | None = None) -> LatentEncoder:
    """The encoder beside ``transport``: the same Triton server, repository or weights."""
    kind = type(transport).__name__
    if kind in ("TritonGrpcTransport", "TritonShmTransport"):
        return TritonEncoder(transport)
    if kind == "TorchTransport":
        return TorchEncoder(transport)
    if kind == "OnnxLocalTransport":
        return OnnxEncoder(repo if repo is not None else "model_repository")
    raise InvalidArgument(
        "image", f"no VAE encoder is known for the {kind} transport; use Triton or --local onnx"
    )


def supports_image_input(transport: Transport, repo: str | Path | None = None) -> bool:
    """Whether a VAE encoder is there for ``transport`` (ListModels reports it)."""
    try:
        encoder = latent_encoder_for(transport, repo)
    except InvalidArgument:
        return False
    if isinstance(encoder, TritonEncoder):
        from tritonclient.utils import InferenceServerException

        try:
            return bool(encoder.transport.client.is_model_ready(ENCODER_MODEL, client_timeout=5.0))
        except InferenceServerException:
            return False
    return True
