"""Between ``cinetron.v1`` messages and the client's types; validation of API-only fields."""

from __future__ import annotations

import secrets

from cinetron.api.engine import Result
from cinetron.api_client import pb
from cinetron.contract.manifest import ModelManifest
from cinetron.core import buckets
from cinetron.core.errors import InvalidArgument
from cinetron.core.pipeline import Progress
from cinetron.core.plan import Plan, plan
from cinetron.core.request import (
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SHIFT,
    MAX_SHOTS,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_SHIFT,
    MIN_STEPS,
    GenerationRequest,
    Shot,
    Transition,
)
from cinetron.core.schedulers import SCHEDULERS
from cinetron.core.video import decode_image, decode_video

_TRANSITIONS: dict[int, Transition] = {
    pb.SHOT_TRANSITION_UNSPECIFIED: "cut",
    pb.SHOT_TRANSITION_CUT: "cut",
    pb.SHOT_TRANSITION_CONTINUE: "continue",
}


def transition(i: int, value: int) -> Transition:
    """A ``ShotTransition`` number as the core's name; an unknown number is refused (proto3
    enums are open: 99 parses fine and must not silently become a cut)."""
    if value not in _TRANSITIONS:
        known = ", ".join(f"{pb.ShotTransition.Name(v)} ({v})" for v in _TRANSITIONS)
        raise InvalidArgument(
            f"shots[{i}].transition", f"unknown ShotTransition {value}; expected one of {known}"
        )
    return _TRANSITIONS[value]


MAX_IDEMPOTENCY_KEY = 128
MAX_JOB_PAGE = 500
DEFAULT_JOB_PAGE = 50


def with_seed(msg: pb.GenerateRequest) -> pb.GenerateRequest:
    """A copy with the seed filled in, so a job resumed after a restart makes the same video."""
    out = pb.GenerateRequest()
    out.CopyFrom(msg)
    if not out.HasField("seed"):
        out.seed = secrets.randbelow(2**31)
    return out


def to_plan(
    msg: pb.GenerateRequest, request_id: str, manifest: ModelManifest, can_encode_video: bool
) -> Plan:
    """The request's one validated plan (raises ``InvalidArgument`` naming the field)."""
    if msg.model and msg.model not in (manifest.family, manifest.version):
        raise InvalidArgument(
            "model",
            f"unknown model {msg.model!r}; this server serves {manifest.family!r} "
            f"(version {manifest.version}); leave it empty for the served model",
        )
    return plan(to_request(msg, request_id, manifest), manifest, can_encode_video)


def to_request(
    msg: pb.GenerateRequest, request_id: str, manifest: ModelManifest | None = None
) -> GenerationRequest:
    """The message as a ``GenerationRequest``: unset optional fields stay ``None`` (the
    model's defaults); image and video bytes are decoded — bounded by ``manifest``'s size
    and longest video, checked from their headers before any pixel is decoded."""
    size = None if manifest is None else (manifest.width, manifest.height)
    longest = None if manifest is None else int(buckets.MAX_DURATION_S * manifest.fps)
    image = decode_image(msg.image, size) if msg.image else None
    video = None
    if msg.input_video:
        video = decode_video(msg.input_video, size, longest, field="input_video")
    shots = tuple(
        Shot(s.prompt, s.duration_seconds, transition(i, s.transition))
        for i, s in enumerate(msg.shots)
    )
    return GenerationRequest(
        prompt=msg.prompt,
        negative_prompt=msg.negative_prompt if msg.HasField("negative_prompt") else None,
        seed=msg.seed if msg.HasField("seed") else 0,
        steps=msg.steps if msg.HasField("steps") else None,
        guidance=msg.guidance if msg.HasField("guidance") else None,
        scheduler=msg.scheduler if msg.HasField("scheduler") else None,
        shift=msg.shift if msg.HasField("shift") else None,
        request_id=request_id,
        duration=msg.duration_seconds if msg.HasField("duration_seconds") else None,
        shots=shots,
        image=image,
        video=video,
        strength=msg.strength if msg.HasField("strength") else None,
        width=msg.width or None,
        height=msg.height or None,
    )


def check_idempotency_key(key: str) -> None:
    if len(key) > MAX_IDEMPOTENCY_KEY or not all(" " < c <= "~" for c in key):
        raise InvalidArgument(
            "idempotency_key",
            f"must be at most {MAX_IDEMPOTENCY_KEY} printable ASCII characters without spaces, "
            f"got {len(key)} characters",
        )


def page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_JOB_PAGE
    if not 1 <= value <= MAX_JOB_PAGE:
        raise InvalidArgument(
            "page_size",
            f"must be between 1 and {MAX_JOB_PAGE} (0 means {DEFAULT_JOB_PAGE}), got {value}",
        )
    return value


def progress_message(p: Progress) -> pb.Progress:
    return pb.Progress(step=p.step, total=p.total, elapsed_seconds=p.elapsed)


def completed_message(result: Result, include_video: bool = True) -> pb.Completed:
    return pb.Completed(
        video=result.mp4 if include_video else b"",
        width=result.width,
        height=result.height,
        frames=result.frames,
        fps=result.fps,
        seed=result.seed,
        timings=result.timings,
        prompt_truncated=result.prompt_truncated,
        prompt_tokens=result.prompt_tokens,
        model_version=result.model_version,
        video_size_bytes=len(result.mp4),
        warnings=list(result.warnings),
    )


def model_message(m: ModelManifest, supports_image_input: bool = False) -> pb.Model:
    s = m.scheduler
    return pb.Model(
        name=m.family,
        version=m.version,
        width=m.width,
        height=m.height,
        frames=m.frames,
        fps=m.fps,
        max_text_tokens=m.text_length,
        default_scheduler=s.name,
        default_steps=s.steps,
        default_guidance=s.guidance,
        default_shift=s.shift,
        default_negative_prompt=m.negative_prompt,
        sizes=[pb.Size(width=w, height=h) for w, h in buckets.sizes(m)],
        max_duration_seconds=buckets.MAX_DURATION_S,
        supports_image_input=supports_image_input,
        vocabulary=[
            pb.VocabularyEntry(attribute=attribute, value=value, phrases=phrases)
            for attribute, values in m.vocabulary.items()
            for value, phrases in values.items()
        ],
    )


def limits_message(
    manifest: ModelManifest | None, max_queue: int, max_concurrency: int, recv: int, send: int
) -> pb.Limits:
    return pb.Limits(
        min_steps=MIN_STEPS,
        max_steps=MAX_STEPS,
        min_guidance=MIN_GUIDANCE,
        max_guidance=MAX_GUIDANCE,
        min_shift=MIN_SHIFT,
        max_shift=MAX_SHIFT,
        max_seed=MAX_SEED,
        max_prompt_chars=MAX_PROMPT_CHARS,
        max_text_tokens=manifest.text_length if manifest else 0,
        max_queue=max_queue,
        max_concurrency=max_concurrency,
        max_receive_message_bytes=recv,
        max_send_message_bytes=send,
        max_duration_seconds=buckets.MAX_DURATION_S,
        max_shots=MAX_SHOTS,
    )


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def sampler_messages(manifest: ModelManifest | None) -> list[pb.Sampler]:
    presets = manifest.samplers if manifest is not None else {}
    out = []
    for name in SCHEDULERS:
        preset = presets.get(name)
        if preset is None:
            out.append(pb.Sampler(name=name, held_out_accuracy=-1.0))
            continue
        accuracy = -1.0 if preset.held_out_accuracy is None else preset.held_out_accuracy
        out.append(
            pb.Sampler(
                name=name,
                recommended_steps=preset.steps,
                recommended_guidance=preset.guidance,
                experimental=preset.experimental,
                held_out_accuracy=accuracy,
                note=preset.note,
            )
        )
    return out
