"""Beyond one clip: long videos, extension, storyboards, image- and video-to-video.

Everything here is composed from the model's own clip (``F`` frames, ``T`` latent
frames) with the training-free conditioning of ``conditioning.py``:

- A video is a list of **windows**, each one ordinary denoising run of one clip.
  A window that *carries* pins its first ``overlap`` latent frames to the previous
  window's latents that end where the video so far ends, so motion, colour and shape
  continue; its first ``overlap × vae_t`` decoded frames overlap the video's tail and
  are cross-faded into it, the rest is new. It starts at ``carry_strength`` from a
  guess that carries the last motion on (``continuation_guess``), not from pure noise.
- **Long video** (``duration``): one shot of one prompt, windows until it is long enough.
- **Storyboard**: shots of (prompt, duration). A ``cut`` starts a fresh window (same
  seed, so shots that describe the same object start from the same noise); a
  ``continue`` carries from the previous shot, so the same object goes on under the new
  prompt without a cut.
- **Image-to-video**: the first window pins the first latent frame to the encoded image.
- **Extension**: the first window carries from the encoded tail of an input video.
- **Video-to-video** (SDEdit): every window starts from the encoded input frames it
  covers, noised to ``strength``; windows still carry, so the result has no seams.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from cinetron.contract.manifest import ModelManifest
from cinetron.core import buckets
from cinetron.core.conditioning import (
    Frames,
    LatentCondition,
    LatentEncoder,
    check_frames,
    continuation_guess,
    denoise,
    latent_encoder_for,
    steps_from,
    still_clip,
)
from cinetron.core.errors import InvalidArgument
from cinetron.core.pipeline import Pipeline, Progress, Video, guided_velocity, initial_noise
from cinetron.core.request import GenerationRequest, ResolvedRequest, resolve
from cinetron.core.schedulers import make_scheduler
from cinetron.core.schedulers.base import Array, Scheduler

Transition = Literal["cut", "continue"]
TRANSITIONS: tuple[Transition, ...] = ("cut", "continue")
MAX_SHOTS = 16
# Latent frames pinned per carried window, and the SDEdit strength a carried window
# starts at from its continuation guess. Chosen on extensions of rendered clips judged
# by the evaluator; on clips not used to choose them (docs/beyond-one-clip.md, `make
# storyboard-demo`) motion is kept in 42% (2, pure noise) → 82% (3, pure noise) → 97%
# (3, 0.9) of extensions, and the object's jump at the seam falls from 9 px to 1.
DEFAULT_OVERLAP = 3
DEFAULT_CARRY_STRENGTH = 0.9


@dataclass(frozen=True)
class Shot:
    """One shot of a storyboard. ``transition`` says how it joins the shot before it."""

    prompt: str
    duration: float  # seconds
    transition: Transition = "cut"


@dataclass(frozen=True)
class CompositionRequest:
    """A video beyond one clip. ``base`` carries seed, steps, guidance, scheduler, shift,
    negative prompt and request id; its prompt is the video's prompt unless ``shots`` is
    given. Unset ``duration``: one clip of the model (or the input video's length).
    """

    base: GenerationRequest
    duration: float | None = None
    shots: tuple[Shot, ...] = ()
    image: Frames | None = None  # [H, W, 3]: the first frame
    video: Frames | None = None  # [F, H, W, 3]: input of extension or video-to-video
    strength: float | None = None  # with video: video-to-video; without: extension
    width: int | None = None
    height: int | None = None
    overlap: int = DEFAULT_OVERLAP
    carry_strength: float = DEFAULT_CARRY_STRENGTH  # 1: carried windows start from noise


@dataclass(frozen=True)
class Window:
    """One denoising run. ``take`` new frames are appended after the cross-fade."""

    shot: int
    prompt: str
    seed: int
    take: int
    carry: bool
    start: int  # index in the output of the first frame this window decodes


@dataclass
class LongVideo:
    frames: npt.NDArray[np.uint8]  # [N, H, W, 3]
    fps: int
    request: ResolvedRequest
    windows: list[Window]
    shot_starts: list[int]  # first frame of each shot (a cut or a continuation)
    seams: list[int]  # first new frame of every carried window (the join)
    cuts: list[int]  # first frame of every shot that starts fresh (after the first)
    overlap_frames: int
    input_frames: int = 0  # extension: the input's frames at the start of ``frames``
    prompt_tokens: int = 0
    prompt_truncated: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def _shots(request: CompositionRequest, manifest: ModelManifest) -> list[tuple[Shot, int]]:
    """(shot, frames) of every shot, validated."""
    o = request.overlap * buckets.frame_step(manifest)
    if request.shots:
        if request.duration is not None:
            raise InvalidArgument("duration", "give shots or duration, not both")
        if len(request.shots) > MAX_SHOTS:
            raise InvalidArgument("shots", f"at most {MAX_SHOTS} shots, got {len(request.shots)}")
        out = []
        for i, shot in enumerate(request.shots):
            if shot.transition not in TRANSITIONS:
                raise InvalidArgument(
                    f"shots[{i}].transition",
                    f"must be one of {', '.join(TRANSITIONS)}, got {shot.transition!r}",
                )
            resolve(replace(request.base, prompt=shot.prompt), manifest)  # prompt checks
            frames = buckets.duration_frames(manifest, shot.duration, o, f"shots[{i}].duration")
            out.append((shot, frames))
        total = sum(f for _, f in out) / manifest.fps
        if total > buckets.MAX_DURATION_S + 1e-9:
            raise InvalidArgument(
                "shots",
                f"the shots last {total:g} s together; at most {buckets.MAX_DURATION_S:g} s",
            )
        return out
    prompt = str(resolve(request.base, manifest).prompt)
    if request.duration is not None:
        frames = buckets.duration_frames(manifest, request.duration, o)
    elif request.video is not None and request.strength is not None:
        frames = len(request.video)  # video-to-video keeps the input's length
        if frames > buckets.MAX_DURATION_S * manifest.fps:
            raise InvalidArgument(
                "video",
                f"has {frames} frames; video-to-video takes at most {buckets.MAX_DURATION_S:g} s "
                f"({int(buckets.MAX_DURATION_S * manifest.fps)} frames); cut it first",
            )
    elif request.video is not None:
        frames = manifest.frames - o  # extension by one window
    else:
        frames = manifest.frames
    return [(Shot(prompt, frames / manifest.fps), frames)]


def plan_windows(
    shots: list[tuple[Shot, int]],
    manifest: ModelManifest,
    overlap: int,
    seed: int,
    carry_first: bool = False,
) -> list[Window]:
    """Cover every shot with windows; see the module docstring for the rules."""
    F, step = manifest.frames, buckets.frame_step(manifest)
    o = overlap * step
    if not 0 < o < F:
        raise InvalidArgument(
            "overlap", f"must be between 1 and {F // step - 1} latent frames, got {overlap}"
        )
    windows: list[Window] = []
    made = 0
    for s, (shot, frames) in enumerate(shots):
        left = frames
        carry = carry_first if s == 0 else shot.transition == "continue"
        k = 0
        while left > 0:
            take = min(left, F - o if carry else F)
            windows.append(
                Window(s, shot.prompt, seed + k, take, carry, made - (o if carry else 0))
            )
            made, left, carry, k = made + take, left - take, True, k + 1
    return windows


def _crossfade(tail: Frames, head: Frames) -> Frames:
    """Blend ``head`` into ``tail`` linearly over their length (``[o, H, W, 3]`` each)."""
    w = (np.arange(1, len(tail) + 1, dtype=np.float32) / (len(tail) + 1))[:, None, None, None]
    mixed = tail.astype(np.float32) * (1 - w) + head.astype(np.float32) * w
    return np.rint(mixed).astype(np.uint8)


def _window_frames(video: Frames, start: int, count: int) -> Frames:
    """``video[start : start + count]``, the last frame repeated past the end."""
    idx = np.clip(np.arange(start, start + count), 0, len(video) - 1)
    return video[idx]


def plan(request: CompositionRequest, manifest: ModelManifest) -> list[Window]:
    """Every check, before any model call; returns the window plan."""
    m = manifest
    buckets.check_size(m, request.width, request.height)
    params = resolve(request.base, m)
    if request.image is not None:
        check_frames("image", request.image[None], m)
    if request.video is not None:
        check_frames("video", request.video, m)
        if len(request.video) < request.overlap * buckets.frame_step(m):
            raise InvalidArgument(
                "video", f"needs at least {request.overlap * buckets.frame_step(m)} frames"
            )
    if request.strength is not None:
        if request.video is None:
            raise InvalidArgument("strength", "applies to video-to-video; send a video too")
        steps_from(_scheduler(params), request.strength)  # range check
    if not 0.0 < request.carry_strength <= 1.0:
        raise InvalidArgument(
            "carry_strength", f"must be in (0, 1] (1: pure noise), got {request.carry_strength}"
        )
    if request.image is not None and request.video is not None:
        raise InvalidArgument("image", "give an image or a video, not both")
    extend = request.video is not None and request.strength is None
    windows = plan_windows(_shots(request, m), m, request.overlap, params.seed, extend)
    if not buckets.temporally_aligned(m) and (
        request.image is not None or any(w.carry for w in windows)
    ):
        raise InvalidArgument(
            "duration",
            f"the {m.family!r} model's VAE is causal ({m.frames} frames ↔ {m.latent_frames} "
            "latent frames), so windows cannot carry latent frames and its first latent frame "
            f"is not a still image; ask for at most one clip ({m.frames / m.fps:g} s) "
            "without an image or video, or use cuts between shots",
        )
    return windows


class Composer:
    """Runs a ``CompositionRequest`` over a ``Pipeline``'s transport and prompt cache.

    ``encoder``: the VAE encoder for image/video inputs (found beside the transport
    when not given; only needed when a request has one).
    """

    def __init__(self, pipeline: Pipeline, encoder: LatentEncoder | None = None) -> None:
        self.pipeline = pipeline
        self.transport = pipeline.transport
        self.manifest = pipeline.manifest
        self._encoder = encoder

    @property
    def encoder(self) -> LatentEncoder:
        if self._encoder is None:
            self._encoder = latent_encoder_for(self.transport)
        return self._encoder

    def validate(self, request: CompositionRequest) -> list[Window]:
        """Every check, before any model call; returns the window plan."""
        return plan(request, self.manifest)

    def total_steps(self, request: CompositionRequest) -> int:
        windows = self.validate(request)
        return sum(window_steps(request, windows, resolve(request.base, self.manifest)))

    def generate(
        self,
        request: CompositionRequest,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> LongVideo:
        windows = self.validate(request)
        m, started = self.manifest, time.perf_counter()
        params = resolve(request.base, m)
        rid, step = params.request_id, buckets.frame_step(m)
        k, o = request.overlap, request.overlap * step
        steps = window_steps(request, windows, params)
        total = sum(steps)
        timings = {"encode_s": 0.0, "denoise_s": 0.0, "decode_s": 0.0}

        use_cfg = params.guidance != 1.0
        prompts = list(dict.fromkeys(w.prompt for w in windows))
        embeddings = dict(
            zip(
                prompts,
                self.pipeline.prompt_cache.encode(self.transport, prompts, rid),
                strict=True,
            )
        )
        uncond = (
            self.pipeline.prompt_cache.encode(self.transport, [params.negative_prompt], rid)[0]
            if use_cfg
            else None
        )

        out: list[Frames] = []  # the video so far, frame by frame
        prev: Array | None = None  # latents of the last window
        prev_end = 0  # latent frame after the last one ``out`` shows of ``prev``
        image_latents: Array | None = None
        input_frames = 0
        t0 = time.perf_counter()
        if request.image is not None:
            image_latents = self.encoder.encode_frames(still_clip(request.image, m), rid)
        if request.video is not None and request.strength is None:  # extension
            tail = _window_frames(request.video, len(request.video) - m.frames, m.frames)
            prev, prev_end = self.encoder.encode_frames(tail, rid), m.latent_frames
            out, input_frames = list(request.video), len(request.video)
        timings["encode_s"] += time.perf_counter() - t0

        seams: list[int] = []
        shot_starts: list[int] = []
        cuts: list[int] = []
        done = 0
        for i, w in enumerate(windows):
            if not shot_starts or windows[i - 1].shot != w.shot:
                shot_starts.append(len(out))
                if out and not w.carry:
                    cuts.append(len(out))
            condition = None
            if w.carry:
                assert prev is not None
                known = np.zeros(m.latent_frames, bool)
                known[:k] = True
                latents = np.zeros_like(prev)
                latents[:, :, :k] = prev[:, :, prev_end - k : prev_end]
                condition = LatentCondition(latents, known)
            elif image_latents is not None and i == 0:
                known = np.zeros(m.latent_frames, bool)
                known[0] = True  # one latent frame: the image's first `step` frames
                condition = LatentCondition(image_latents, known)
            init, strength = None, window_strength(request, w)
            if request.video is not None and request.strength is not None:
                t = time.perf_counter()
                clip = _window_frames(request.video, w.start, m.frames)
                init = self.encoder.encode_frames(clip, rid)
                timings["encode_s"] += time.perf_counter() - t
            elif w.carry and strength < 1.0:
                assert prev is not None
                init = continuation_guess(
                    prev[:, :, :prev_end], k, m.latent_frames, carries_motion_on(windows, i)
                )

            cond = embeddings[w.prompt]
            scheduler = _scheduler(params, w.seed)

            def velocity(sample: Array, timestep: float, cond=cond) -> Array:  # type: ignore[no-untyped-def]
                return guided_velocity(
                    self.transport, sample, timestep, cond, uncond, params.guidance, rid
                )

            def on_step(n: int, _: int, base: int = done) -> None:
                if on_progress is not None:
                    on_progress(Progress(base + n, total, time.perf_counter() - started))

            t = time.perf_counter()
            noise = initial_noise(w.seed, (1, *m.latent_shape))
            z = denoise(velocity, scheduler, noise, condition, init, strength, should_stop, on_step)
            timings["denoise_s"] += time.perf_counter() - t
            t = time.perf_counter()
            frames = self.transport.decode_video(z, rid)[0]
            timings["decode_s"] += time.perf_counter() - t
            done += steps[i]

            if w.carry:
                out[-o:] = list(_crossfade(np.stack(out[-o:]), frames[:o]))
                seams.append(len(out))
                out.extend(frames[o : o + w.take])
                prev_end = k + w.take // step
            else:
                out.extend(frames[: w.take])
                prev_end = w.take // step
            prev = z

        first = embeddings[windows[0].prompt]
        tokens = int(first.token_counts[0])
        timings["total_s"] = time.perf_counter() - started
        return LongVideo(
            frames=np.stack(out),
            fps=m.fps,
            request=params,
            windows=windows,
            shot_starts=shot_starts,
            seams=seams,
            cuts=cuts,
            overlap_frames=o,
            input_frames=input_frames,
            prompt_tokens=tokens,
            prompt_truncated=tokens > m.text_length,
            timings=timings,
        )


def carries_motion_on(windows: list[Window], i: int) -> bool:
    """Whether carried window ``i`` starts from a guess that moves on (else one that holds).

    Only the first carried window after fresh content (an extension's window, the second
    window of a shot) under the same prompt: carried on window after window, the motion
    pushed objects out of the frame (a 15 s "moving right" shot lost its circle in half
    its clips), while a held guess lets them stop at the edge and a new prompt choose
    its own motion (docs/beyond-one-clip.md).
    """
    w = windows[i]
    if i == 0:
        return w.carry  # an extension: go on as the input video went
    before = windows[i - 1]
    return w.carry and not before.carry and before.prompt == w.prompt


def window_strength(request: CompositionRequest, window: Window) -> float:
    """Where ``window``'s denoising starts: video-to-video's ``strength`` for every
    window, ``carry_strength`` for a carried one, else pure noise (1)."""
    if request.strength is not None:
        return request.strength
    return request.carry_strength if window.carry else 1.0


def window_steps(
    request: CompositionRequest, windows: list[Window], params: ResolvedRequest
) -> list[int]:
    """Denoising steps each window makes (a run that starts later makes fewer)."""
    scheduler = _scheduler(params)
    return [steps_from(scheduler, window_strength(request, w)) for w in windows]


def _scheduler(params: ResolvedRequest, seed: int = 0) -> Scheduler:
    scheduler = make_scheduler(params.scheduler, params.shift)
    scheduler.set_timesteps(params.steps, seed=seed)
    return scheduler


# --- measuring the result ------------------------------------------------------------


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


def seam_report(video: LongVideo) -> SeamReport:
    f = video.frames.astype(np.float32)
    diffs = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))  # diffs[i]: frame i → i + 1
    o = video.overlap_frames
    at_seam = np.zeros(len(diffs), bool)
    for s in video.seams:
        at_seam[max(0, s - o - 1) : s] = True
    cuts = np.zeros(len(diffs), bool)
    cuts[[c - 1 for c in video.cuts]] = True
    seam, within = diffs[at_seam & ~cuts], diffs[~at_seam & ~cuts]
    return SeamReport(
        float(seam.mean()) if len(seam) else math.nan,
        float(seam.max()) if len(seam) else math.nan,
        float(within.mean()) if len(within) else math.nan,
        len(video.seams),
    )


def run_generation(
    pipeline: Pipeline,
    request: GenerationRequest | CompositionRequest,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Video | LongVideo:
    """One entry point for the API server: a plain request is one ``Pipeline`` clip."""
    if isinstance(request, CompositionRequest):
        return Composer(pipeline).generate(request, on_progress, should_stop)
    return pipeline.generate(request, on_progress, should_stop)
