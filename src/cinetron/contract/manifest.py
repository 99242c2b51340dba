"""``cinetron.json``: what the client needs to know about the served model family.

The exporter writes it at the root of the model repository; nothing in ``client/``
hard-codes the shapes model's sizes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The served ``denoiser`` config carries the manifest under this parameter: a client
# cannot read the server's disk, but it can read a model config over gRPC.
MANIFEST_PARAMETER = "cinetron_manifest"


@dataclass(frozen=True)
class SchedulerDefaults:
    name: str = "euler"
    steps: int = 20
    guidance: float = 5.0
    shift: float = 1.0


@dataclass(frozen=True)
class SamplerPreset:
    """How one scheduler is best run on this model (chosen on the training prompts, measured
    on held-out ones). ``experimental``: more than 10 points below the default sampler on
    held-out prompts at these settings; ``note`` says what it does wrong."""

    steps: int
    guidance: float
    experimental: bool = False
    held_out_accuracy: float | None = None  # all four attributes right, 0..1
    note: str = ""


@dataclass(frozen=True)
class SceneGrammar:
    """How a closed-world model's prompts read as scenes (``core/scene.py``), for models
    that declare one (the shapes model): which ``vocabulary`` attributes describe one
    object, which one names it, which the whole frame, and how the model reads one object
    best. With it a prompt of two objects is drawn as two single-object layers placed as
    the prompt relates them, and any wording of one object is drawn from ``caption``."""

    objects: tuple[str, ...]  # attributes of one object, e.g. ("color", "shape", "motion")
    anchor: str  # the attribute each mention of which is one object ("shape")
    background: str  # the attribute of the whole frame ("background")
    relation: str = ""  # the attribute placing the first object against the second
    # One object in the wording the model follows best, e.g. "a {color} {shape} {motion}
    # on a {background} background", filled from ``words``: value → its plainest phrase.
    caption: str = ""
    words: dict[str, dict[str, str]] = field(default_factory=dict)
    plurals: dict[str, list[str]] = field(default_factory=dict)  # anchor value → "circles"
    max_objects: int = 2
    # The frame is a torus with a plain background: what leaves one edge comes back
    # through the opposite one, so a window may be drawn re-centred on its object.
    wraps: bool = False
    # The parts of ``caption`` the model was trained to read each on its own, e.g.
    # ("{color}", "{shape}", "{motion}", "{background} background"): such a caption is
    # encoded phrase by phrase and the tokens packed into one sequence
    # (``core/prompts.py``), so each attribute reaches the denoiser as the same tokens
    # whatever the others are. Empty: every prompt is encoded whole.
    phrases: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneGrammar:
        data = dict(data)
        data["objects"] = tuple(data.get("objects", ()))
        data["phrases"] = tuple(data.get("phrases", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelManifest:
    family: str
    version: str
    latent_channels: int
    latent_frames: int
    latent_height: int
    latent_width: int
    frames: int
    height: int
    width: int
    fps: int
    text_length: int
    text_dim: int
    patch: tuple[int, int, int] = (1, 1, 1)
    vae_scale: tuple[int, int, int] = (1, 1, 1)  # (temporal, height, width)
    prediction: str = "flow_velocity"  # denoiser output: noise - data
    negative_prompt: str = ""
    max_denoiser_batch: int = 16
    scheduler: SchedulerDefaults = field(default_factory=SchedulerDefaults)
    # Facts about the export a user should know, e.g. {"vae_decoder": "frame count fixed
    # at export; re-export with --frames"}. Informational: no client code branches on it.
    export_notes: dict[str, str] = field(default_factory=dict)
    # What the model understands, for models trained on a closed world (the shapes model):
    # attribute → value → the phrases that name it, e.g. {"color": {"red": ["red",
    # "crimson", ...], ...}, ...}, and filler words that name nothing ("a", "on", "video").
    # A prompt with no attribute word is refused; one with unknown words gets a warning.
    # Empty (Wan and other open-vocabulary models): no check.
    vocabulary: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    filler_words: list[str] = field(default_factory=list)
    # Per scheduler: the steps and guidance a request that names it (and leaves those unset)
    # runs at. Empty: every scheduler runs at ``scheduler``'s defaults.
    samplers: dict[str, SamplerPreset] = field(default_factory=dict)
    scene: SceneGrammar | None = None

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """``[C, T, H, W]`` of one sample's latents."""
        return (self.latent_channels, self.latent_frames, self.latent_height, self.latent_width)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        data = dict(data)
        data["scheduler"] = SchedulerDefaults(**data.get("scheduler", {}))
        data["samplers"] = {k: SamplerPreset(**v) for k, v in data.get("samplers", {}).items()}
        if data.get("scene") is not None:
            data["scene"] = SceneGrammar.from_dict(data["scene"])
        for key in ("patch", "vae_scale"):
            if key in data:
                data[key] = tuple(data[key])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> ModelManifest:
        path = Path(path)
        if path.is_dir():
            path = path / "cinetron.json"
        return cls.from_dict(json.loads(path.read_text()))
