"""The text-to-video pipeline: encode → denoising loop → decode, over any ``Transport``."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cinetron.core.errors import Cancelled
from cinetron.core.request import GenerationRequest, ResolvedRequest, resolve
from cinetron.core.schedulers import make_scheduler
from cinetron.core.schedulers.base import Array
from cinetron.transports.base import PromptEmbeddings, Transport


@dataclass(frozen=True)
class Progress:
    step: int  # 1-based, steps done
    total: int
    elapsed: float  # seconds since the generation started


@dataclass
class Video:
    frames: npt.NDArray[np.uint8]  # [F, H, W, 3]
    fps: int
    request: ResolvedRequest
    prompt_tokens: int  # before truncation, special tokens included
    prompt_truncated: bool
    timings: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]


def initial_noise(seed: int, shape: tuple[int, ...]) -> Array:
    """Gaussian latents from a seed: numpy's PCG64, identical on every machine."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def guided_velocity(
    transport: Transport,
    sample: Array,
    timestep: float,
    cond: PromptEmbeddings,
    uncond: PromptEmbeddings | None,
    guidance: float,
    request_id: str = "",
) -> Array:
    """Classifier-free guidance with cond and uncond sent as ONE batch of 2."""
    if uncond is None:
        return transport.denoise(
            sample, np.full(len(sample), timestep, np.float32), cond.embeds, cond.mask, request_id
        )
    both = transport.denoise(
        np.concatenate([sample, sample]),
        np.full(2 * len(sample), timestep, np.float32),
        np.concatenate([cond.embeds, uncond.embeds]),
        np.concatenate([cond.mask, uncond.mask]),
        request_id,
    )
    v_cond, v_uncond = np.split(both, 2)
    return (v_uncond + np.float32(guidance) * (v_cond - v_uncond)).astype(np.float32)


class PromptCache:
    """LRU of prompt embeddings keyed by (model version, prompt text): repeats skip the encoder.

    Thread-safe: the API server shares one cache between its worker threads. The
    encoder call itself runs outside the lock.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], PromptEmbeddings] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def encode(
        self, transport: Transport, prompts: list[str], request_id: str = ""
    ) -> list[PromptEmbeddings]:
        version = transport.manifest.version
        with self._lock:
            found = {p: self._get((version, p)) for p in dict.fromkeys(prompts)}
        missing = [p for p, e in found.items() if e is None]
        with self._lock:
            self.hits += len(prompts) - len(missing)
            self.misses += len(missing)
        if missing:
            encoded = transport.encode_prompt(missing, request_id)
            with self._lock:
                for i, prompt in enumerate(missing):
                    found[prompt] = _row(encoded, i)
                    self._put((version, prompt), found[prompt])  # type: ignore[arg-type]
        return [found[p] for p in prompts]  # type: ignore[misc]

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


def _row(e: PromptEmbeddings, i: int) -> PromptEmbeddings:
    return PromptEmbeddings(e.embeds[i : i + 1], e.mask[i : i + 1], e.token_counts[i : i + 1])


class Pipeline:
    def __init__(self, transport: Transport, cache_size: int = 256) -> None:
        self.transport = transport
        self.manifest = transport.manifest
        self.prompt_cache = PromptCache(cache_size)

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> Video:
        """Generate one video. ``should_stop`` is checked before every step, so a
        cancelled or expired request stops within one step."""
        params = resolve(request, self.manifest)
        started = time.perf_counter()
        rid = params.request_id
        use_cfg = params.guidance != 1.0
        prompts = [params.prompt, params.negative_prompt] if use_cfg else [params.prompt]
        embeddings = self.prompt_cache.encode(self.transport, prompts, rid)
        cond, uncond = embeddings[0], (embeddings[1] if use_cfg else None)
        encoded = time.perf_counter()

        scheduler = make_scheduler(params.scheduler, params.shift)
        scheduler.set_timesteps(params.steps, seed=params.seed)
        x = initial_noise(params.seed, (1, *self.manifest.latent_shape))

        def velocity(sample: Array, timestep: float) -> Array:
            return guided_velocity(
                self.transport, sample, timestep, cond, uncond, params.guidance, rid
            )

        for i in range(params.steps):
            if should_stop is not None and should_stop():
                raise Cancelled(f"generation stopped before step {i + 1} of {params.steps}")
            x = scheduler.step(velocity, i, x)
            if on_progress is not None:
                on_progress(Progress(i + 1, params.steps, time.perf_counter() - started))
        denoised = time.perf_counter()

        frames = self.transport.decode_video(x, rid)[0]
        finished = time.perf_counter()
        tokens = int(cond.token_counts[0])
        return Video(
            frames=frames,
            fps=self.manifest.fps,
            request=params,
            prompt_tokens=tokens,
            prompt_truncated=tokens > self.manifest.text_length,
            timings={
                "encode_s": encoded - started,
                "denoise_s": denoised - encoded,
                "decode_s": finished - denoised,
                "total_s": finished - started,
            },
        )
