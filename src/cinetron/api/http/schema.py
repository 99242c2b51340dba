"""The HTTP side's shapes: a ``POST /v1/videos`` body → ``cinetron.v1.GenerateRequest``, and a
``cinetron.v1.Job`` → an OpenAI video object.

This module only *translates*. Whether a value is allowed is decided once, by the planner
the gRPC side uses (``ApiServer.plan`` → ``convert.to_plan`` → ``core.plan``), when
``JobManager.submit`` plans the job; here a value is refused only when it cannot be put
into the message at all (a word where a number goes, a size that is not ``WxH``).

OpenAI's fields and how they map:

| field | JSON | → ``GenerateRequest`` |
|---|---|---|
| ``prompt`` | string | ``prompt`` |
| ``model`` | string | ``model`` (family or version; empty: the served one) |
| ``seconds`` | string or number (``"4"``) | ``duration_seconds`` (unset: one clip) |
| ``size`` | ``"WIDTHxHEIGHT"`` | ``width``, ``height`` (unset: the model's) |
| ``input_reference`` | ``{"image_url": "data:…;base64,…"}`` | ``image`` (image-to-video) |

In multipart every field is text, and ``input_reference`` a file (or
``input_reference[image_url]``, a data: URL).

Cinetron's knobs, as extra fields: ``seed``, ``steps`` (alias ``num_inference_steps``),
``guidance`` (alias ``guidance_scale``), ``negative_prompt``, ``scheduler``, ``shift``.
Multipart values are text (``"7"``); an empty one means unset, as ``null`` does in JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cinetron.api.http.errors import HttpError
from cinetron.api_client import pb
from cinetron.contract.manifest import ModelManifest
from cinetron.core import buckets
from cinetron.core.errors import InvalidArgument
from cinetron.core.request import (
    DEFAULT_OVERLAP,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SHIFT,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_SHIFT,
    MIN_STEPS,
    number,
)
from cinetron.core.schedulers import SCHEDULERS

TEXT_FIELDS = ("prompt", "model", "negative_prompt", "scheduler", "size")
INT_FIELDS = ("seed", "steps")
FLOAT_FIELDS = ("guidance", "shift")
ALIASES = {"num_inference_steps": "steps", "guidance_scale": "guidance"}
FIELDS = (*TEXT_FIELDS, "seconds", *INT_FIELDS, *FLOAT_FIELDS, "input_reference")
_INT32 = 2**31 - 1
_SIZE = re.compile(r"^\s*(\d{1,9})\s*[xX×]\s*(\d{1,9})\s*$")
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
_DATA_URL = re.compile(
    r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.S
)

# cinetron.v1.JobState → OpenAI's status. A cancelled job is "failed" with error.code
# "cancelled": OpenAI's videos have no cancelled state.
STATUS = {
    pb.JOB_STATE_UNSPECIFIED: "queued",
    pb.JOB_STATE_QUEUED: "queued",
    pb.JOB_STATE_RUNNING: "in_progress",
    pb.JOB_STATE_SUCCEEDED: "completed",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "failed",
}
TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def known_fields() -> str:
    return ", ".join([*FIELDS, *ALIASES])


@dataclass
class CreateVideo:
    """The fields of one ``POST /v1/videos``, typed; ``None`` = unset."""

    values: dict[str, str | int | float | bytes]

    @classmethod
    def from_json(cls, body: bytes) -> CreateVideo:
        try:
            data = json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            raise HttpError(
                400,
                f"the body is not valid JSON ({e}); send an object such as "
                '{"prompt": "a red circle moving to the left", "seconds": "2"}',
                "invalid_json",
            ) from None
        if not isinstance(data, dict):
            raise HttpError(
                400,
                f"the body must be a JSON object with a prompt, got {_json_kind(data)}",
                "invalid_json",
            )
        values: dict[str, str | int | float | bytes] = {}
        for raw_key, value in data.items():
            key = _field(raw_key, values)
            if value is None:
                continue
            if key == "input_reference":
                values[key] = _json_reference(value)
            elif key in TEXT_FIELDS:
                values[key] = _json_text(key, value)
            elif key == "seconds":
                if isinstance(value, str):
                    values[key] = _seconds(value)
                else:
                    values[key] = _json_number(key, value)
            elif key in INT_FIELDS:
                values[key] = _json_integer(key, value)
            else:
                values[key] = _json_number(key, value)
        return cls(values)

    @classmethod
    async def from_form(cls, form: Any) -> CreateVideo:
        """``form``: Starlette's ``FormData`` (text values and ``UploadFile``s)."""
        values: dict[str, str | int | float | bytes] = {}
        for raw_key, value in form.multi_items():
            if raw_key == "input_reference[image_url]":
                raw_key = "input_reference"
                value = _data_url(value) if isinstance(value, str) and value else value
            key = _field(raw_key, values)
            if not isinstance(value, str | bytes):  # an UploadFile
                if key != "input_reference":
                    raise HttpError(
                        400, f"{key}: must be a text field, got a file", "invalid_value", key
                    )
                values[key] = await value.read()
            elif isinstance(value, bytes):  # a decoded data URL
                values[key] = value
            elif value == "":
                continue  # the openai SDK sends an unset (None) field as ""
            elif key in TEXT_FIELDS:
                values[key] = value
            elif key == "seconds":
                values[key] = _seconds(value)
            elif key in INT_FIELDS:
                if not _INTEGER.match(value):
                    raise InvalidArgument(key, f"must be an integer, got {value!r}")
                values[key] = int(value)
            elif key == "input_reference":
                raise HttpError(
                    400,
                    "input_reference: upload the image as a file (or send "
                    "input_reference[image_url] as a data: URL), not as text",
                    "invalid_value",
                    "input_reference",
                )
            else:
                try:
                    values[key] = float(value)
                except ValueError:
                    raise InvalidArgument(key, f"must be a number, got {value!r}") from None
        return cls(values)

    def message(self) -> pb.GenerateRequest:
        """The ``GenerateRequest``; numbers that no message could hold are refused with the
        planner's own words (they are out of its range too)."""
        v = self.values
        msg = pb.GenerateRequest(prompt=str(v.get("prompt", "")), model=str(v.get("model", "")))
        for key in ("negative_prompt", "scheduler"):
            if key in v:
                setattr(msg, key, str(v[key]))
        if "seed" in v:
            seed = v["seed"]
            if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                number("seed", seed, 0, MAX_SEED, integer=True)  # type: ignore[arg-type]
            msg.seed = int(seed)
        if "steps" in v:
            steps = v["steps"]
            if not isinstance(steps, int) or abs(steps) > _INT32:
                number("steps", steps, MIN_STEPS, MAX_STEPS, integer=True)  # type: ignore[arg-type]
            msg.steps = int(steps)
        for key in FLOAT_FIELDS:
            if key in v:
                setattr(msg, key, float(v[key]))  # type: ignore[arg-type]
        if "seconds" in v:
            msg.duration_seconds = float(v["seconds"])  # type: ignore[arg-type]
        if "size" in v:
            msg.width, msg.height = _size(str(v["size"]))
        if "input_reference" in v:
            msg.image = bytes(v["input_reference"])  # type: ignore[arg-type]
        return msg


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _field(key: str, seen: Mapping[str, object]) -> str:
    name = ALIASES.get(key, key)
    if name not in FIELDS:
        raise HttpError(
            400,
            f"{key}: unknown field; this endpoint takes {known_fields()}",
            "unknown_parameter",
            key,
        )
    if name in seen:
        raise HttpError(
            400,
            f"{name}: given more than once" + (f" (as {key})" if key != name else ""),
            "invalid_value",
            name,
        )
    return name


def _json_text(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(key, f"must be a string, got {_json_kind(value)}")
    return value


def _json_number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(key, f"must be a number, got {_json_kind(value)}")
    return float(value)


def _json_integer(key: str, value: object) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        shown = value if isinstance(value, int | float) else _json_kind(value)
        raise InvalidArgument(key, f"must be an integer, got {shown}")
    return value


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidArgument(
            "seconds", f'must be a number of seconds such as "4", got {text!r}'
        ) from None


def _size(text: str) -> tuple[int, int]:
    m = _SIZE.match(text)
    if m is None:
        raise InvalidArgument(
            "size",
            f'must be WIDTHxHEIGHT such as "64x64" (GET /v1/models lists sizes), got {text!r}',
        )
    width, height = int(m.group(1)), int(m.group(2))
    if width == 0 or height == 0:  # 0 means "the model's" in the message: never silently
        raise InvalidArgument("size", f"width and height must be positive, got {text!r}")
    return width, height


def _data_url(text: str) -> bytes:
    if not text.startswith("data:"):
        raise HttpError(
            400,
            "input_reference: image_url must be a data: URL (data:image/png;base64,…); this "
            "server does not fetch URLs. Or upload the image as a multipart file",
            "invalid_value",
            "input_reference",
        )
    m = _DATA_URL.match(text)
    if m is None or ";base64" not in m.group("params"):
        raise HttpError(
            400,
            "input_reference: image_url must be a base64 data: URL (data:image/png;base64,…)",
            "invalid_value",
            "input_reference",
        )
    try:
        return base64.b64decode(m.group("data"), validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(
            400,
            "input_reference: the data: URL's base64 payload does not decode",
            "invalid_value",
            "input_reference",
        ) from None


def _json_reference(value: object) -> bytes:
    if isinstance(value, str):
        return _data_url(value)
    if isinstance(value, dict):
        if "file_id" in value:
            raise HttpError(
                400,
                "input_reference: file_id is not supported (this server has no Files API); "
                "send image_url as a data: URL or upload the image as a multipart file",
                "invalid_value",
                "input_reference",
            )
        url = value.get("image_url")
        if isinstance(url, str):
            return _data_url(url)
    raise HttpError(
        400,
        'input_reference: must be {"image_url": "data:image/png;base64,…"} in JSON, or a '
        "multipart file upload",
        "invalid_value",
        "input_reference",
    )


# -- responses --------------------------------------------------------------------------


def _g(x: float) -> str:
    return f"{x:g}"


def _clip_seconds(manifest: ModelManifest) -> float:
    return manifest.frames / manifest.fps


def seconds_of(job: pb.Job, manifest: ModelManifest | None) -> str:
    """The video's length: what it is once made, else what the plan will make."""
    r = job.request
    if job.result.fps:
        return _g(job.result.frames / job.result.fps)
    if manifest is None:
        return _g(r.duration_seconds) if r.HasField("duration_seconds") else ""
    overlap = DEFAULT_OVERLAP * buckets.frame_step(manifest)
    try:
        if r.shots:
            frames = sum(
                buckets.duration_frames(manifest, s.duration_seconds, overlap) for s in r.shots
            )
            return _g(frames / manifest.fps)
        if r.HasField("duration_seconds"):
            frames = buckets.duration_frames(manifest, r.duration_seconds, overlap)
            return _g(frames / manifest.fps)
    except InvalidArgument:  # stored before the served model changed: say what was asked
        return _g(r.duration_seconds)
    return _g(_clip_seconds(manifest))


def size_of(job: pb.Job, manifest: ModelManifest | None) -> str:
    r = job.request
    if job.result.width:
        return f"{job.result.width}x{job.result.height}"
    width = r.width or (manifest.width if manifest else 0)
    height = r.height or (manifest.height if manifest else 0)
    return f"{width}x{height}" if width and height else ""


def progress_of(job: pb.Job) -> int:
    """Percent of the denoising steps done: real steps; 100 only once the MP4 is stored."""
    if job.state == pb.JOB_STATE_SUCCEEDED:
        return 100
    total = job.progress.total
    if total <= 0:
        return 0
    return min(99, int(100 * job.progress.step / total))


def video_object(job: pb.Job, manifest: ModelManifest | None) -> dict[str, Any]:
    """``job`` as OpenAI's video object (the openai SDK's ``Video``), plus Cinetron's fields."""
    r = job.request
    defaults = manifest.scheduler if manifest else None
    terminal = job.state in TERMINAL
    error = None
    if job.state in (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
        code = "cancelled" if job.state == pb.JOB_STATE_CANCELLED else job.error.code.lower()
        error = {"code": code or "failed", "message": job.error.reason or "the job failed"}
    prompt = r.prompt or (r.shots[0].prompt if r.shots else "")

    def knob(name: str, default: object) -> object:
        return getattr(r, name) if r.HasField(name) else default

    out: dict[str, Any] = {
        "id": job.job_id,
        "object": "video",
        "created_at": job.create_time.seconds,
        "status": STATUS.get(job.state, "queued"),
        "model": r.model or (manifest.family if manifest else ""),
        "progress": progress_of(job),
        "seconds": seconds_of(job, manifest),
        "size": size_of(job, manifest),
        "prompt": prompt,
        "error": error,
        "completed_at": job.update_time.seconds if terminal else None,
        "expires_at": None,  # kept until DELETE /v1/videos/{id}
        "remixed_from_video_id": None,
        # Cinetron's fields: what the video is made with (defaults filled in), so the
        # same values sent back make the same video.
        "seed": job.seed,
        "steps": knob("steps", defaults.steps if defaults else None),
        "guidance": knob("guidance", defaults.guidance if defaults else None),
        "scheduler": knob("scheduler", defaults.name if defaults else None),
        "shift": knob("shift", defaults.shift if defaults else None),
        "negative_prompt": knob("negative_prompt", manifest.negative_prompt if manifest else None),
        "has_input_reference": bool(r.image),
        "step": job.progress.step,
        "total_steps": job.progress.total,
        "attempts": job.attempts,
    }
    if job.state == pb.JOB_STATE_SUCCEEDED:
        res = job.result
        out.update(
            frames=res.frames,
            fps=res.fps,
            video_size_bytes=res.video_size_bytes,
            prompt_truncated=res.prompt_truncated,
            timings=dict(res.timings),
        )
    return out


def model_object(
    manifest: ModelManifest, supports_image_input: bool, created: int
) -> dict[str, Any]:
    """The served model as an OpenAI model object, with what a caller may ask of it."""
    s = manifest.scheduler
    overlap = DEFAULT_OVERLAP * buckets.frame_step(manifest)
    return {
        "id": manifest.family,
        "object": "model",
        "created": created,
        "owned_by": "cinetron",
        "version": manifest.version,
        "sizes": [f"{w}x{h}" for w, h in buckets.sizes(manifest)],
        "fps": manifest.fps,
        "frames": manifest.frames,
        "seconds": {
            "default": _g(_clip_seconds(manifest)),
            "min": buckets.min_duration(manifest, overlap),
            "max": buckets.MAX_DURATION_S,
        },
        "defaults": {
            "steps": s.steps,
            "guidance": s.guidance,
            "scheduler": s.name,
            "shift": s.shift,
            "negative_prompt": manifest.negative_prompt,
        },
        "limits": {
            "steps": [MIN_STEPS, MAX_STEPS],
            "guidance": [MIN_GUIDANCE, MAX_GUIDANCE],
            "shift": [MIN_SHIFT, MAX_SHIFT],
            "seed": [0, MAX_SEED],
            "prompt_chars": MAX_PROMPT_CHARS,
            "text_tokens": manifest.text_length,
        },
        "schedulers": list(SCHEDULERS),
        "supports_input_reference": supports_image_input,
    }
