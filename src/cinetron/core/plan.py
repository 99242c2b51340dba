"""A request → one validated ``Plan``: the only place a request is checked.

Every video is a list of **windows**, each one ordinary denoising run of one clip of the
model (``F`` frames, ``T`` latent frames):

- A plain clip is a plan of one window.
- A window that *carries* pins its first ``overlap`` latent frames to the previous
  window's latents that end where the video so far ends, so motion, colour and shape
  continue; its first ``overlap × vae_t`` decoded frames overlap the video's tail and are
  cross-faded into it, the rest is new. It starts at ``carry_strength`` from a guess that
  carries the last motion on (``compose.continuation_guess``), not from pure noise.
- **Long video** (``duration``): one shot of one prompt, windows until it is long enough.
- **Storyboard** (``shots``): a ``cut`` starts a fresh window (same seed, so shots that
  describe the same object start from the same noise); a ``continue`` carries from the
  previous shot, so the same object goes on under the new prompt without a cut.
- **Image-to-video**: the first window pins its first latent frame to the encoded image.
- **Extension** (``video``): the first window carries from the encoded tail of the input.
- **Video-to-video** (``video`` + ``strength``; SDEdit): every window starts from the
  encoded input frames it covers, noised to ``strength``; windows still carry.
- **Scenes** (models with a ``SceneGrammar``; ``core/scene.py``): a prompt that reads as
  one object is drawn from the grammar's caption of it, whatever its wording; one of two
  objects is a plan of **layers**, one ordinary plan per object, that the pipeline
  composes (``core/layers.py``) so the relation holds at the first frame.

Nothing downstream re-validates: the pipeline, the API engine and the job store take a
``Plan`` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cinetron.contract.manifest import ModelManifest
from cinetron.core import buckets
from cinetron.core.errors import InvalidArgument, missing_encoder
from cinetron.core.request import (
    MAX_SEED,
    MAX_SHOTS,
    TRANSITIONS,
    Frames,
    GenerationRequest,
    ResolvedRequest,
    Shot,
    resolve,
    text,
)
from cinetron.core.sampling import steps_from
from cinetron.core.scene import Scene, object_caption, read_scene
from cinetron.core.schedulers import Scheduler, make_scheduler
from cinetron.core.vocabulary import check_prompt


@dataclass(frozen=True)
class Window:
    """One denoising run. ``take`` new frames are appended after the cross-fade."""

    shot: int
    prompt: str
    seed: int
    take: int
    carry: bool
    start: int  # index in the output of the first frame this window decodes
    strength: float = 1.0  # where its denoising starts (1: pure noise)
    steps: int = 0  # denoising steps it makes
    extrapolate: bool = False  # carried: its warm-start guess moves on (else holds)


@dataclass(frozen=True)
class Plan:
    """A validated request: its sampling settings, windows and conditioning inputs."""

    request: ResolvedRequest
    windows: tuple[Window, ...]
    overlap: int  # latent frames a carried window pins
    overlap_frames: int  # the same, in frames
    image: Frames | None = None  # [H, W, 3]
    video: Frames | None = None  # [F, H, W, 3]
    video_to_video: bool = False  # every window starts from the input video
    # What the caller should know about a request that runs: words the model ignored.
    warnings: tuple[str, ...] = ()
    # A scene of several objects: one plan per object (``windows`` is then empty); in
    # each shot the first object is ``relations[shot]`` the second at the shot's first
    # frame (a clip is one shot).
    layers: tuple[Plan, ...] = ()
    relations: tuple[str | None, ...] = ()
    recentre: bool = False  # carried windows are drawn centred on the object (a torus)

    @property
    def relation(self) -> str | None:
        """The first shot's relation (a clip's)."""
        return self.relations[0] if self.relations else None

    @property
    def total_steps(self) -> int:
        return sum(w.steps for w in self.windows) + sum(p.total_steps for p in self.layers)

    @property
    def prompts(self) -> list[str]:
        """The distinct prompts of the windows, in order."""
        return list(dict.fromkeys(w.prompt for w in self.windows))

    @property
    def extends(self) -> bool:
        """The output starts with the input video (extension)."""
        return self.video is not None and not self.video_to_video

    @property
    def is_clip(self) -> bool:
        """One window of pure text-to-video: what lockstep batching can stack."""
        return len(self.windows) == 1 and self.image is None and self.video is None


def scheduler_for(params: ResolvedRequest, seed: int = 0) -> Scheduler:
    scheduler = make_scheduler(params.scheduler, params.shift)
    scheduler.set_timesteps(params.steps, seed=seed)
    return scheduler


def check_frames(field: str, frames: Frames, manifest: ModelManifest) -> None:
    """Frames must be ``[F, H, W, 3]`` uint8 at the model's size."""
    want = (manifest.height, manifest.width)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype.name != "uint8":
        raise InvalidArgument(field, f"must be RGB frames [F, H, W, 3] uint8, got {frames.shape}")
    if frames.shape[1:3] != want:
        raise InvalidArgument(
            field,
            f"is {frames.shape[2]}x{frames.shape[1]} but the model makes "
            f"{manifest.width}x{manifest.height} video; resize it to that size first",
        )


def _shots(
    request: GenerationRequest, manifest: ModelManifest, prompt: str
) -> list[tuple[Shot, int]]:
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
            shot_prompt = text(f"shots[{i}].prompt", shot.prompt, allow_empty=False)
            frames = buckets.duration_frames(manifest, shot.duration, o, f"shots[{i}].duration")
            out.append((replace(shot, prompt=shot_prompt), frames))
        total = sum(f for _, f in out) / manifest.fps
        if total > buckets.MAX_DURATION_S + 1e-9:
            raise InvalidArgument(
                "shots",
                f"the shots last {total:g} s together; at most {buckets.MAX_DURATION_S:g} s",
            )
        return out
    if request.video is not None and request.strength is None:  # extension
        return [(Shot(prompt, 0.0), _extension_frames(request, manifest, o))]
    if request.duration is not None:
        if request.video is not None:
            raise InvalidArgument(
                "duration", "video-to-video keeps the input video's length; leave it unset"
            )
        frames = buckets.duration_frames(manifest, request.duration, o)
    elif request.video is not None:
        frames = len(request.video)  # video-to-video keeps the input's length
        if frames > buckets.MAX_DURATION_S * manifest.fps:
            raise InvalidArgument(
                "video",
                f"has {frames} frames; video-to-video takes at most {buckets.MAX_DURATION_S:g} s "
                f"({int(buckets.MAX_DURATION_S * manifest.fps)} frames); cut it first",
            )
    else:
        frames = manifest.frames
    return [(Shot(prompt, frames / manifest.fps), frames)]


def _extension_frames(request: GenerationRequest, manifest: ModelManifest, o: int) -> int:
    """New frames an extension adds. ``duration`` is the length of the output, input
    included (its one meaning everywhere); unset, one window's worth."""
    assert request.video is not None
    given, step, fps = len(request.video), buckets.frame_step(manifest), manifest.fps
    limit = buckets.MAX_DURATION_S
    if request.duration is None:
        frames = manifest.frames - o  # one window
    else:
        total = buckets.duration_frames(manifest, request.duration, o)
        if total <= given:
            raise InvalidArgument(
                "duration",
                f"is the length of the output, input included: {request.duration:g} s is not "
                f"longer than the input video's {given / fps:g} s; ask for more",
            )
        frames = -(-(total - given) // step) * step  # whole latent frames
    if (given + frames) / fps > limit + 1e-9:
        raise InvalidArgument(
            "video" if request.duration is None else "duration",
            f"the input ({given / fps:g} s) and its extension last {(given + frames) / fps:g} s "
            f"together; at most {limit:g} s",
        )
    return frames


def plan_windows(
    shots: list[tuple[Shot, int]],
    manifest: ModelManifest,
    overlap: int,
    seed: int,
    carry_first: bool = False,
) -> list[Window]:
    """Cover every shot with windows (``strength``/``steps`` left at their defaults)."""
    F, step = manifest.frames, buckets.frame_step(manifest)
    o = overlap * step
    carries = carry_first or any(f > F for _, f in shots)
    carries |= any(shot.transition == "continue" for shot, _ in shots[1:])
    if carries and not 0 < o < F:
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


def carries_motion_on(windows: list[Window], i: int, recentre: bool = False) -> bool:
    """Whether carried window ``i`` starts from a guess that moves on (else one that holds).

    Only the first carried window after fresh content (an extension's window, the second
    window of a shot) under the same prompt: carried on window after window, the motion
    pushed objects out of the frame (a 15 s "moving right" shot lost its circle in half
    its clips), while a held guess lets them stop at the edge and a new prompt choose
    its own motion (docs/beyond-one-clip.md). Windows drawn re-centred on their object
    (``recentre``: a torus frame) have no edge to reach: every one under the same
    prompt moves on.
    """
    w = windows[i]
    if i == 0:
        return w.carry  # an extension: go on as the input video went
    before = windows[i - 1]
    fresh = not before.carry or recentre
    return w.carry and fresh and before.prompt == w.prompt


def plan(
    request: GenerationRequest, manifest: ModelManifest, can_encode_video: bool = True
) -> Plan:
    """Every check, before any model call (raises ``InvalidArgument`` naming the field).

    ``can_encode_video``: whether the transport it will run on has a VAE encoder; a
    request with an image or a video is refused here, not half-way through, without one.
    """
    m = manifest
    buckets.check_size(m, request.width, request.height)
    params = resolve(request, m)
    if request.image is not None:
        check_frames("image", request.image[None], m)
    if request.video is not None:
        check_frames("video", request.video, m)
        if len(request.video) < request.overlap * buckets.frame_step(m):
            raise InvalidArgument(
                "video", f"needs at least {request.overlap * buckets.frame_step(m)} frames"
            )
    scheduler = scheduler_for(params)
    if request.strength is not None:
        if request.video is None:
            raise InvalidArgument("strength", "applies to video-to-video; send a video too")
        steps_from(scheduler, request.strength)  # range check
    carry_strength = request.carry_strength
    if not (isinstance(carry_strength, int | float) and 0.0 < carry_strength <= 1.0):
        raise InvalidArgument(
            "carry_strength", f"must be in (0, 1] (1: pure noise), got {carry_strength}"
        )
    if request.image is not None and request.video is not None:
        raise InvalidArgument("image", "give an image or a video, not both")
    extend = request.video is not None and request.strength is None
    windows = plan_windows(
        _shots(request, m, params.prompt), m, request.overlap, params.seed, extend
    )
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
    if (request.image is not None or request.video is not None) and not can_encode_video:
        raise missing_encoder("image" if request.image is not None else "video", "the server")
    warnings = prompt_warnings(request, params.prompt, m)
    plain = request.image is None and request.video is None  # nothing but text to follow
    scenes = _scenes(request, params.prompt, m)
    if plain and scenes is not None:
        return _layered(request, m, can_encode_video, params, scenes, warnings)
    if plain and request.shots and any(_objects(s.prompt, m) > 1 for s in request.shots):
        warnings += (
            "a storyboard is drawn one layer per object only when every shot names the "
            "same number of objects; these shots are drawn as written",
        )
    windows = [replace(w, prompt=_drawn_prompt(w.prompt, m)) for w in windows]
    # Re-centring rolls the frame: exact for the model's own plain-background world, not
    # for a caller's video.
    recentre = bool(m.scene and m.scene.wraps) and plain
    finished = []
    for i, w in enumerate(windows):
        strength = request.strength if request.strength is not None else 1.0
        if request.strength is None and w.carry:
            strength = float(carry_strength)
        steps = steps_from(scheduler, strength)
        extrapolate = carries_motion_on(windows, i, recentre)
        finished.append(replace(w, strength=strength, steps=steps, extrapolate=extrapolate))
    return Plan(
        request=params,
        windows=tuple(finished),
        overlap=request.overlap,
        overlap_frames=request.overlap * buckets.frame_step(m),
        image=request.image,
        video=request.video,
        video_to_video=request.strength is not None,
        warnings=warnings,
        recentre=recentre,
    )


# Seeds of the layers after the first: far from any seed a caller steps through.
LAYER_SEED_STRIDE = 1_000_003


def _drawn_prompt(prompt: str, manifest: ModelManifest) -> str:
    """What the model is given for a window's prompt: its one object in the grammar's
    caption when it reads as one, else the prompt as written."""
    scene = read_scene(prompt, manifest)
    if manifest.scene is None or scene is None or len(scene.objects) != 1:
        return prompt
    return object_caption(scene, 0, manifest.scene)


def _objects(prompt: str, manifest: ModelManifest) -> int:
    scene = read_scene(prompt, manifest)
    return 0 if scene is None else len(scene.objects)


def _scenes(request: GenerationRequest, prompt: str, manifest: ModelManifest) -> list[Scene] | None:
    """The scene of each shot (a clip: one) when every one reads as the same number of
    objects, more than one: what is drawn as layers. Otherwise None."""
    prompts = [s.prompt for s in request.shots] if request.shots else [prompt]
    scenes = [read_scene(p, manifest) for p in prompts]
    counts = {0 if s is None else len(s.objects) for s in scenes}
    if len(counts) != 1 or counts.pop() < 2:
        return None
    return [s for s in scenes if s is not None]


def _layered(
    request: GenerationRequest,
    manifest: ModelManifest,
    can_encode_video: bool,
    params: ResolvedRequest,
    scenes: list[Scene],
    warnings: tuple[str, ...],
) -> Plan:
    """A plan of one layer per object, each an ordinary one-object plan: object ``k`` of
    every shot is drawn in layer ``k`` (same shots, durations and transitions)."""
    grammar = manifest.scene
    assert grammar is not None

    def layer(k: int) -> GenerationRequest:
        seed = (params.seed + k * LAYER_SEED_STRIDE) % (MAX_SEED + 1)
        captions = [object_caption(scene, k, grammar) for scene in scenes]
        if not request.shots:
            return replace(request, prompt=captions[0], seed=seed)
        shots = tuple(replace(s, prompt=c) for s, c in zip(request.shots, captions, strict=True))
        return replace(request, shots=shots, seed=seed)

    layers = tuple(
        plan(layer(k), manifest, can_encode_video) for k in range(len(scenes[0].objects))
    )
    return replace(
        layers[0],
        request=params,
        windows=(),
        warnings=warnings,
        layers=layers,
        relations=tuple(scene.relation for scene in scenes),
    )


def prompt_warnings(
    request: GenerationRequest, prompt: str, manifest: ModelManifest
) -> tuple[str, ...]:
    """Check every prompt against the model's vocabulary (refuses one it cannot follow)."""
    if not request.shots:
        found = [check_prompt("prompt", prompt, manifest)]
    else:
        found = [
            check_prompt(f"shots[{i}].prompt", shot.prompt, manifest)
            for i, shot in enumerate(request.shots)
        ]
    return tuple(w for w in found if w is not None)


def duration_of(plan_: Plan, manifest: ModelManifest) -> float:
    """Seconds of video the plan makes (an extension's input included)."""
    if plan_.layers:
        return duration_of(plan_.layers[0], manifest)
    made = sum(w.take for w in plan_.windows)
    extra = len(plan_.video) if plan_.extends and plan_.video is not None else 0
    return (made + extra) / manifest.fps
