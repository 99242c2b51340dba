"""What a caller asks for — one clip or anything composed from clips — and the checks of
its scalar fields. ``plan.plan`` turns a request into the one validated ``Plan`` that
the sampling loop runs; every edge (CLI, gRPC, Python) goes through it once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import InvalidArgument
from cinetron.core.schedulers import SCHEDULERS

MIN_STEPS, MAX_STEPS = 1, 200
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MIN_SHIFT, MAX_SHIFT = 0.1, 20.0
MAX_SEED = 2**63 - 1
MAX_PROMPT_CHARS = 2000
MAX_SHOTS = 16
# Latent frames pinned per carried window, and the SDEdit strength a carried window
# starts at from its continuation guess. Chosen on extensions of rendered clips judged
# by the evaluator; on clips not used to choose them (docs/beyond-one-clip.md, `make
# storyboard-demo`) motion is kept in 42% (2, pure noise) → 82% (3, pure noise) → 97%
# (3, 0.9) of extensions, and the object's jump at the seam falls from 9 px to 1.
DEFAULT_OVERLAP = 3
DEFAULT_CARRY_STRENGTH = 0.9

Frames = npt.NDArray[np.uint8]  # [F, H, W, 3]
Transition = Literal["cut", "continue"]
TRANSITIONS: tuple[Transition, ...] = ("cut", "continue")


@dataclass(frozen=True)
class Shot:
    """One shot of a storyboard. ``transition`` says how it joins the shot before it."""

    prompt: str
    duration: float  # seconds
    transition: Transition = "cut"


@dataclass(frozen=True)
class GenerationRequest:
    """What a caller asks for. ``None`` means "the model's default" (from ``cinetron.json``).

    Beyond one clip: ``duration`` (a long video of ``prompt``), ``shots`` (a storyboard;
    ``prompt`` may then be empty), ``image`` (the first frame), ``video`` (extended, or
    re-rendered from ``strength`` = video-to-video), ``width``/``height`` (a size bucket).
    Unset ``duration``: one clip of the model (or the input video's length).
    """

    prompt: str | bytes
    negative_prompt: str | bytes | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    shift: float | None = None
    request_id: str = ""
    duration: float | None = None
    shots: tuple[Shot, ...] = ()
    image: Frames | None = None  # [H, W, 3]
    video: Frames | None = None  # [F, H, W, 3]
    strength: float | None = None  # with video: video-to-video; without: extension
    width: int | None = None
    height: int | None = None
    overlap: int = DEFAULT_OVERLAP
    carry_strength: float = DEFAULT_CARRY_STRENGTH  # 1: carried windows start from noise


@dataclass(frozen=True)
class ResolvedRequest:
    """The sampling settings of a request, validated, defaults filled in."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    scheduler: str
    shift: float
    request_id: str

    @property
    def guided(self) -> bool:
        """Classifier-free guidance is on (guidance 1 is the conditional model alone)."""
        return self.guidance != 1.0


def text(field: str, value: str | bytes, allow_empty: bool) -> str:
    """A prompt field: UTF-8, no NUL, at most ``MAX_PROMPT_CHARS``; stripped."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(
                field, f"must be valid UTF-8 text; byte {e.start} is not ({e.reason})"
            ) from None
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be text, got {type(value).__name__}")
    try:  # lone surrogates: how Python hands over argv bytes that are not UTF-8
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(
            field,
            f"must be valid UTF-8 text; character {e.start} is not (raw bytes, e.g. from a "
            "shell in another encoding); pass the text as UTF-8",
        ) from None
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    if not allow_empty and not value.strip():
        raise InvalidArgument(field, "must not be empty or only whitespace; describe the video")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidArgument(
            field, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}"
        )
    return value.strip()


def number(field: str, value: float, lo: float, hi: float, integer: bool = False) -> None:
    """``value`` is a finite number in ``[lo, hi]`` (an integer when ``integer``)."""
    kind = "an integer" if integer else "a number"
    span = f"{int(lo)} and {int(hi)}" if integer else f"{lo:g} and {hi:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(field, f"must be {kind} between {span}, got {value!r}")
    if integer and math.isfinite(value) and not float(value).is_integer():
        raise InvalidArgument(field, f"must be an integer between {span}, got {value}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidArgument(field, f"must be between {span}, got {value}")


def resolve(request: GenerationRequest, manifest: ModelManifest) -> ResolvedRequest:
    """The sampling settings, validated (raises ``InvalidArgument`` naming the field)."""
    defaults = manifest.scheduler
    prompt = request.prompt
    if request.shots and not (prompt.strip() if isinstance(prompt, str) else prompt):
        prompt = request.shots[0].prompt  # a storyboard's prompt is its first shot's
    prompt_text = text("prompt", prompt, allow_empty=False)
    negative = request.negative_prompt
    negative_text = manifest.negative_prompt if negative is None else negative
    negative_text = text("negative_prompt", negative_text, allow_empty=True)
    scheduler = defaults.name if request.scheduler is None else request.scheduler
    if scheduler not in SCHEDULERS:
        raise InvalidArgument(
            "scheduler", f"unknown scheduler {scheduler!r}; expected one of {', '.join(SCHEDULERS)}"
        )
    # A scheduler runs at its own recommended steps and guidance unless the request says.
    preset = manifest.samplers.get(scheduler)
    default_steps = preset.steps if preset else defaults.steps
    default_guidance = preset.guidance if preset else defaults.guidance
    steps = default_steps if request.steps is None else request.steps
    number("steps", steps, MIN_STEPS, MAX_STEPS, integer=True)
    guidance = default_guidance if request.guidance is None else request.guidance
    number("guidance", guidance, MIN_GUIDANCE, MAX_GUIDANCE)
    shift = defaults.shift if request.shift is None else request.shift
    number("shift", shift, MIN_SHIFT, MAX_SHIFT)
    number("seed", request.seed, 0, MAX_SEED, integer=True)
    return ResolvedRequest(
        prompt=prompt_text,
        negative_prompt=negative_text,
        seed=int(request.seed),
        steps=int(steps),
        guidance=float(guidance),
        scheduler=scheduler,
        shift=float(shift),
        request_id=request.request_id,
    )
