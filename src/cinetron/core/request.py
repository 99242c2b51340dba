"""A generation request, its validation and its resolved parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import InvalidArgument
from cinetron.core.schedulers import SCHEDULERS

MIN_STEPS, MAX_STEPS = 1, 200
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MIN_SHIFT, MAX_SHIFT = 0.1, 20.0
MAX_SEED = 2**63 - 1
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class GenerationRequest:
    """What a caller asks for. ``None`` means "the model's default" (from ``cinetron.json``)."""

    prompt: str | bytes
    negative_prompt: str | bytes | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    shift: float | None = None
    request_id: str = ""


@dataclass(frozen=True)
class ResolvedRequest:
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    scheduler: str
    shift: float
    request_id: str


def _text(field: str, value: str | bytes, allow_empty: bool) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(
                field, f"must be valid UTF-8 text; byte {e.start} is not ({e.reason})"
            ) from None
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    if not allow_empty and not value.strip():
        raise InvalidArgument(field, "must not be empty or only whitespace; describe the video")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidArgument(
            field, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}"
        )
    return value.strip()


def _number(field: str, value: float, lo: float, hi: float, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    span = f"{int(lo)} and {int(hi)}" if integer else f"{lo:g} and {hi:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(field, f"must be {kind} between {span}, got {value!r}")
    if integer and math.isfinite(value) and not float(value).is_integer():
        raise InvalidArgument(field, f"must be an integer between {span}, got {value}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidArgument(field, f"must be between {span}, got {value}")


def resolve(request: GenerationRequest, manifest: ModelManifest) -> ResolvedRequest:
    """Validate every field and fill defaults; raises ``InvalidArgument`` naming the field."""
    defaults = manifest.scheduler
    prompt = _text("prompt", request.prompt, allow_empty=False)
    negative = request.negative_prompt
    negative_text = manifest.negative_prompt if negative is None else negative
    negative_text = _text("negative_prompt", negative_text, allow_empty=True)
    steps = defaults.steps if request.steps is None else request.steps
    _number("steps", steps, MIN_STEPS, MAX_STEPS, integer=True)
    guidance = defaults.guidance if request.guidance is None else request.guidance
    _number("guidance", guidance, MIN_GUIDANCE, MAX_GUIDANCE)
    shift = defaults.shift if request.shift is None else request.shift
    _number("shift", shift, MIN_SHIFT, MAX_SHIFT)
    _number("seed", request.seed, 0, MAX_SEED, integer=True)
    scheduler = defaults.name if request.scheduler is None else request.scheduler
    if scheduler not in SCHEDULERS:
        raise InvalidArgument(
            "scheduler", f"unknown scheduler {scheduler!r}; expected one of {', '.join(SCHEDULERS)}"
        )
    return ResolvedRequest(
        prompt=prompt,
        negative_prompt=negative_text,
        seed=int(request.seed),
        steps=int(steps),
        guidance=float(guidance),
        scheduler=scheduler,
        shift=float(shift),
        request_id=request.request_id,
    )
