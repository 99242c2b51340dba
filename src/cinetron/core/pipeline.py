"""The generator: a ``Plan`` run over any ``Transport`` — encode the prompts once, then
each window through the one sampling loop, decode, and join.

    encode_prompt ─▶ for each window: [encode input] → sample(...) → decode_video ─▶ join

A plain clip is a plan of one window; long videos, storyboards, image-to-video,
extension and video-to-video are plans of several or conditioned windows. One result
type, ``Video``, for all of them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cinetron.core import layers
from cinetron.core.blobs import centroid
from cinetron.core.buckets import frame_step
from cinetron.core.compose import (
    SeamReport,
    continuation_guess,
    crossfade,
    seam_report,
    still_clip,
    window_frames,
)
from cinetron.core.errors import Cancelled, InvalidArgument
from cinetron.core.plan import Plan, Window, plan, scheduler_for
from cinetron.core.prompts import encode_prompts
from cinetron.core.request import Frames, GenerationRequest, ResolvedRequest
from cinetron.core.sampling import (
    LatentCondition,
    StopCheck,
    guided_velocity,
    initial_noise,
    sample,
)
from cinetron.core.schedulers.base import Array
from cinetron.core.transport import PromptEmbeddings, Transport


@dataclass(frozen=True)
class Progress:
    step: int  # 1-based, steps done over the whole plan
    total: int
    elapsed: float  # seconds since the generation started


ProgressCallback = Callable[[Progress], None]


@dataclass
class Video:
    """What every generation returns."""

    frames: Frames  # [N, H, W, 3]
    fps: int
    plan: Plan
    prompt_tokens: int  # of the first window's prompt, before truncation
    prompt_truncated: bool
    shot_starts: list[int] = field(default_factory=list)  # first frame of each shot
    seams: list[int] = field(default_factory=list)  # first new frame of each carried window
    cuts: list[int] = field(default_factory=list)  # first frame of each fresh shot but the 1st
    input_frames: int = 0  # extension: the input's frames at the start of ``frames``
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def request(self) -> ResolvedRequest:
        return self.plan.request

    @property
    def windows(self) -> tuple[Window, ...]:
        return self.plan.windows

    @property
    def overlap_frames(self) -> int:
        return self.plan.overlap_frames

    def seam_report(self) -> SeamReport:
        """How visible the joins between windows are (``compose.seam_report``)."""
        return seam_report(self.frames, self.seams, self.cuts, self.overlap_frames)


class PromptCache:
    """LRU of prompt embeddings keyed by (model version, prompt text): repeats skip the
    encoder. Thread-safe (the API's worker threads share one); the encoder call itself
    runs outside the lock. Safe because an encoding does not depend on what else is in
    its batch (checked bit for bit on every transport)."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], PromptEmbeddings] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def encode(
        self, transport: Transport, prompts: Sequence[str], request_id: str = ""
    ) -> list[PromptEmbeddings]:
        version = transport.manifest.version
        with self._lock:
            found = {p: self._get((version, p)) for p in dict.fromkeys(prompts)}
            missing = [p for p, e in found.items() if e is None]
            self.hits += len(prompts) - len(missing)
            self.misses += len(missing)
        if missing:
            encoded = encode_prompts(transport, missing, request_id)
            with self._lock:
                for prompt, row in zip(missing, encoded, strict=True):
                    found[prompt] = row
                    self._put((version, prompt), row)
        return [e for p in prompts if (e := found[p]) is not None]

    def _get(self, key: tuple[str, str]) -> PromptEmbeddings | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def _put(self, key: tuple[str, str], value: PromptEmbeddings) -> None:
        if self.capacity <= 0:
            return
        self._items[key] = value
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class _Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.totals = {"encode_s": 0.0, "denoise_s": 0.0, "decode_s": 0.0}

    def add(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.totals[key] += now - since
        return now

    def done(self) -> dict[str, float]:
        return {**self.totals, "total_s": time.perf_counter() - self.started}


class Pipeline:
    """Plans and runs generations over one transport, with a prompt cache."""

    def __init__(self, transport: Transport, cache_size: int = 256) -> None:
        self.transport = transport
        self.manifest = transport.manifest
        self.prompt_cache = PromptCache(cache_size)

    def plan(self, request: GenerationRequest) -> Plan:
        return plan(request, self.manifest, self.transport.can_encode_video)

    def generate(
        self,
        request: GenerationRequest | Plan,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> Video:
        """Generate one video. ``should_stop`` is checked before every step, so a
        cancelled or expired request stops within one step."""
        job = request if isinstance(request, Plan) else self.plan(request)
        return self.run(job, on_progress, should_stop)

    def _embeddings(
        self, params: ResolvedRequest, prompts: list[str]
    ) -> tuple[dict[str, PromptEmbeddings], PromptEmbeddings | None]:
        """Each prompt's embeddings and the negative prompt's (None without guidance)."""
        asked = [*prompts, params.negative_prompt] if params.guided else prompts
        encoded = self.prompt_cache.encode(self.transport, asked, params.request_id)
        by_prompt = dict(zip(prompts, encoded[: len(prompts)], strict=True))
        return by_prompt, encoded[-1] if params.guided else None

    def _encode(self, frames: Frames, rid: str) -> Array:
        return self.transport.encode_video(frames[None], rid)

    def run(
        self,
        job: Plan,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> Video:
        if job.layers:
            return self._run_layers(job, on_progress, should_stop)
        m, params, timer = self.manifest, job.request, _Timer()
        rid, k, o, step = params.request_id, job.overlap, job.overlap_frames, frame_step(m)
        total, reached = job.total_steps, [0]  # steps done so far, for a stop's message
        t = time.perf_counter()
        embeddings, uncond = self._embeddings(params, job.prompts)
        out: list[Frames] = []  # the video so far, frame by frame
        prev: Array | None = None  # latents of the last window
        prev_end = 0  # latent frame after the last one ``out`` shows of ``prev``
        image_latents = None
        if job.image is not None:
            image_latents = self._encode(still_clip(job.image, m.frames), rid)
        if job.extends and job.video is not None:
            tail = window_frames(job.video, len(job.video) - m.frames, m.frames)
            prev, prev_end = self._encode(tail, rid), m.latent_frames
            out = list(job.video)
        t = timer.add("encode_s", t)
        input_frames = len(out)

        video = Video(np.zeros(0, np.uint8), m.fps, job, 0, False, input_frames=input_frames)
        done = 0
        view = (0, 0)  # pixels the window's frame is rolled by against the output's
        for i, w in enumerate(job.windows):
            if not video.shot_starts or job.windows[i - 1].shot != w.shot:
                video.shot_starts.append(len(out))
                if out and not w.carry:
                    video.cuts.append(len(out))
            condition, init = None, None
            if not w.carry:
                view = (0, 0)
            elif job.recentre and prev is not None:
                prev, view = self._recentred(prev, out[-1], view)
            if w.carry:
                assert prev is not None
                carried = np.zeros_like(prev)
                carried[:, :, :k] = prev[:, :, prev_end - k : prev_end]
                condition = LatentCondition.first(carried, k)
            elif image_latents is not None and i == 0:
                condition = LatentCondition.first(image_latents, 1)  # the image's first frames
            if job.video_to_video and job.video is not None:
                t = time.perf_counter()
                init = self._encode(window_frames(job.video, w.start, m.frames), rid)
                timer.add("encode_s", t)
            elif w.carry and w.strength < 1.0:
                assert prev is not None
                history = prev[:, :, :prev_end]
                init = continuation_guess(history, k, m.latent_frames, w.extrapolate)

            velocity = guided_velocity(
                self.transport, embeddings[w.prompt], uncond, params.guidance, rid
            )

            def callback(n: int, base: int = done) -> None:
                reached[0] = base + n
                if on_progress is not None:
                    elapsed = time.perf_counter() - timer.started
                    on_progress(Progress(base + n, total, elapsed))

            t = time.perf_counter()
            try:
                z = sample(
                    velocity,
                    scheduler_for(params, w.seed),
                    initial_noise(w.seed, (1, *m.latent_shape)),
                    condition,
                    init,
                    w.strength,
                    callback,
                    should_stop,
                )
            except Cancelled:
                raise Cancelled(
                    f"generation stopped before step {reached[0] + 1} of {total}"
                ) from None
            t = timer.add("denoise_s", t)
            frames = self.transport.decode_video(z, rid)[0]
            frames = np.roll(frames, view, axis=(1, 2)) if view != (0, 0) else frames
            timer.add("decode_s", t)
            done += w.steps

            if w.carry:
                out[-o:] = list(crossfade(np.stack(out[-o:]), frames[:o]))
                video.seams.append(len(out))
                out.extend(frames[o : o + w.take])
                prev_end = k + w.take // step
            else:
                out.extend(frames[: w.take])
                prev_end = w.take // step
            prev = z

        tokens = int(embeddings[job.windows[0].prompt].token_counts[0])
        video.frames = np.stack(out)
        video.prompt_tokens = tokens
        video.prompt_truncated = tokens > m.text_length
        video.timings = timer.done()
        return video

    def _recentred(
        self, latents: Array, last_frame: Frames, view: tuple[int, int]
    ) -> tuple[Array, tuple[int, int]]:
        """``latents`` (drawn at ``view``) rolled so the object of ``last_frame`` (in the
        output's frame) is at the centre, whole latent cells at a time, and the new view.

        A window sees its object where training put objects, never split by an edge,
        however far it has travelled on the torus; its frames are rolled back by the
        view, exactly, because the background is plain.
        """
        _, cell_h, cell_w = self.manifest.vae_scale
        where = centroid(layers.alpha(last_frame[None])[0] > 0.5)
        if where is None:
            return latents, view
        h, w = last_frame.shape[:2]
        new = (
            round((where[1] - h / 2) / cell_h) * cell_h,
            round((where[0] - w / 2) / cell_w) * cell_w,
        )
        cells = ((view[0] - new[0]) // cell_h, (view[1] - new[1]) // cell_w)
        return np.roll(latents, cells, axis=(-2, -1)), new

    def _run_layers(
        self,
        job: Plan,
        on_progress: ProgressCallback | None,
        should_stop: StopCheck | None,
    ) -> Video:
        """Each layer's video, then composed into one (``layers.arrange``)."""
        started, total = time.perf_counter(), job.total_steps
        done, reached = 0, [0]
        videos: list[Video] = []
        for layer in job.layers:

            def progress(p: Progress, base: int = done) -> None:
                reached[0] = base + p.step
                if on_progress is not None:
                    on_progress(Progress(base + p.step, total, time.perf_counter() - started))

            try:
                videos.append(self.run(layer, progress, should_stop))
            except Cancelled:
                raise Cancelled(
                    f"generation stopped before step {reached[0] + 1} of {total}"
                ) from None
            done += layer.total_steps
        first = videos[0]
        # Each run of shots joined by "continue" is arranged on its own, from its first
        # shot's relation: after a cut the objects are drawn afresh, anywhere.
        starts = [0, *first.cuts, len(first.frames)]
        relation_at = dict(zip(first.shot_starts, job.relations, strict=True))
        frames = np.concatenate(
            [
                layers.arrange(
                    [v.frames[a:b] for v in videos], relation_at[a], self.manifest.frames
                )
                for a, b in itertools.pairwise(starts)
            ]
        )
        timings = {key: sum(v.timings.get(key, 0.0) for v in videos) for key in first.timings}
        return replace(first, frames=frames, plan=job, timings=timings)

    def generate_lockstep(self, requests: Sequence[GenerationRequest]) -> list[Video]:
        """``len(requests)`` plain clips in lockstep: each CFG step is ONE denoiser call of
        ``2 × len(requests)`` samples, as Triton's dynamic batcher forms from that many
        callers. The same loop as ``run``, on a batch; the same videos, to float rounding."""
        plans = [self.plan(r) for r in requests]
        if not plans:
            return []
        if not all(p.is_clip for p in plans):
            raise InvalidArgument("requests", "lockstep batching takes plain clips only")
        params = [p.request for p in plans]
        first = params[0]
        settings = {(p.steps, p.scheduler, p.shift, p.guidance) for p in params}
        if len(settings) != 1:
            raise InvalidArgument(
                "requests",
                "lockstep batching needs one (steps, scheduler, shift, guidance) for every "
                f"request, got {sorted(settings)}; group the requests by these settings",
            )
        scheduler = scheduler_for(first, first.seed)
        if scheduler.stochastic:
            raise InvalidArgument(
                "scheduler",
                f"{first.scheduler!r} draws fresh noise per generation, so a batch of "
                "generations is not the same videos; use a deterministic scheduler (e.g. euler)",
            )
        timer = _Timer()
        t = time.perf_counter()
        cond = self.prompt_cache.encode(self.transport, [p.windows[0].prompt for p in plans])
        uncond = None
        if first.guided:
            uncond = self.prompt_cache.encode(self.transport, [p.negative_prompt for p in params])
        t = timer.add("encode_s", t)
        shape = (1, *self.manifest.latent_shape)
        noise = np.concatenate([initial_noise(p.seed, shape) for p in params])
        velocity = guided_velocity(
            self.transport,
            PromptEmbeddings.stack(cond),
            None if uncond is None else PromptEmbeddings.stack(uncond),
            first.guidance,
        )
        z = sample(velocity, scheduler, noise)
        t = timer.add("denoise_s", t)
        frames = [self.transport.decode_video(z[i : i + 1])[0] for i in range(len(plans))]
        timer.add("decode_s", t)
        timings = timer.done()
        return [
            Video(
                f,
                self.manifest.fps,
                p,
                int(c.token_counts[0]),
                int(c.token_counts[0]) > self.manifest.text_length,
                shot_starts=[0],
                timings=timings,
            )
            for f, p, c in zip(frames, plans, cond, strict=True)
        ]
