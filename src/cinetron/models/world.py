"""The procedural "shapes" world: one solid background, one or two filled objects that move.

World v2 (the second model): a scene holds one or two objects, each with its own shape,
colour and motion; a caption may relate them ("a red circle to the left of a blue
square"), which holds at the first frame. The frame is a torus: an object that leaves
through one edge comes back through the opposite one, so a long video of a moving object
can go on for ever without losing it (v1's objects were carried out of the frame and
vanished). v1's placement — the whole path inside the frame — stays what
``sample_scene`` does, so its clips render as before.

numpy only: the renderer feeds training, and the judge in ``cinetron.tools.judge``
reads the same constants to score generated videos without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cinetron.core import blobs

FRAMES = 16
SIZE = 64
FPS = 8

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 230),
    "yellow": (245, 225, 40),
    "purple": (140, 40, 190),
    "orange": (250, 140, 20),
    "cyan": (40, 215, 225),
    "white": (255, 255, 255),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "still", "grows", "shrinks")

TRAVEL_PX = 24.0
GROW_FACTOR = 1.7
SHRINK_FACTOR = 0.6
MIN_SIZE, MAX_SIZE = 14.0, 24.0
# Two objects are smaller, so both fit side by side with room to move apart.
PAIR_MIN_SIZE, PAIR_MAX_SIZE = 12.0, 18.0
PAIR_GAP_PX = 3.0  # at least this much background between two objects at frame 0
# Where the first object is relative to the second, at the first frame (y grows down).
RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Thing:
    """One object. ``size`` is its extent in pixels at frame 0, (x, y) its centre there."""

    color: str
    shape: str
    motion: str
    x: float
    y: float
    size: float

    @property
    def attributes(self) -> tuple[str, str, str]:
        return (self.color, self.shape, self.motion)


@dataclass(frozen=True)
class Scene:
    """Everything that decides a clip: a background and one or two objects, drawn in
    order (a second object covers the first where they meet)."""

    background: str
    things: tuple[Thing, ...]

    @property
    def attributes(self) -> tuple[str, str, str, str]:
        """The one object's (background, colour, shape, motion) — v1's four attributes."""
        if len(self.things) != 1:
            raise ValueError(f"a scene of {len(self.things)} objects has no single attributes")
        return (self.background, *self.things[0].attributes)


def valid_combination(background: str, color: str) -> bool:
    """The object never has the background's colour."""
    return BACKGROUNDS[background] != COLORS[color]


def all_combinations() -> list[tuple[str, str, str, str]]:
    return [
        (b, c, s, m)
        for b in BACKGROUNDS
        for c in COLORS
        for s in SHAPES
        for m in MOTIONS
        if valid_combination(b, c)
    ]


def _size_factor(motion: str) -> float:
    return {"grows": GROW_FACTOR, "shrinks": SHRINK_FACTOR}.get(motion, 1.0)


def _displacement(motion: str) -> tuple[float, float]:
    return {
        "left": (-TRAVEL_PX, 0.0),
        "right": (TRAVEL_PX, 0.0),
        "up": (0.0, -TRAVEL_PX),
        "down": (0.0, TRAVEL_PX),
    }.get(motion, (0.0, 0.0))


def sample_scene(
    rng: np.random.Generator,
    background: str,
    color: str,
    shape: str,
    motion: str,
    *,
    anywhere: bool = False,
) -> Scene:
    """One object. By default its whole path stays inside the frame (v1's clips);
    ``anywhere`` puts it anywhere on the torus, so it may cross an edge and wrap — the
    clips that teach a long video to go on."""
    size = float(rng.uniform(MIN_SIZE, MAX_SIZE))
    if anywhere:
        x, y = (float(v) for v in rng.uniform(0.0, SIZE, size=2))
        return Scene(background, (Thing(color, shape, motion, x, y, size),))
    half = size * max(1.0, _size_factor(motion)) / 2 + 1.0
    dx, dy = _displacement(motion)
    x_lo, x_hi = half + max(0.0, -dx), SIZE - half - max(0.0, dx)
    y_lo, y_hi = half + max(0.0, -dy), SIZE - half - max(0.0, dy)
    x = float(rng.uniform(x_lo, x_hi))
    y = float(rng.uniform(y_lo, y_hi))
    return Scene(background, (Thing(color, shape, motion, x, y, size),))


def relation_of(a: Thing, b: Thing) -> str:
    """Where ``a`` is relative to ``b`` at frame 0 (``blobs.relation_of``'s rule: along
    the axis they differ most on)."""
    return blobs.relation_of(b.x - a.x, b.y - a.y)


def _apart(a: Thing, b: Thing) -> bool:
    """Separated by background at frame 0 along some axis (their boxes do not touch)."""
    reach = (a.size + b.size) / 2 + PAIR_GAP_PX
    return abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach


def sample_pair(
    rng: np.random.Generator,
    background: str,
    first: tuple[str, str, str],
    second: tuple[str, str, str],
    relation: str | None = None,
) -> Scene:
    """Two objects ((colour, shape, motion) each), inside the frame and apart at frame 0,
    ``first`` ``relation`` ``second`` when given (then unambiguously: the axis of the
    relation is the one they differ most on). Their motions may carry them across edges."""
    if relation is not None and relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; expected one of {', '.join(RELATIONS)}")
    for _ in range(1000):
        things = []
        for color, shape, motion in (first, second):
            size = float(rng.uniform(PAIR_MIN_SIZE, PAIR_MAX_SIZE))
            half = size / 2 + 1.0
            x, y = (float(v) for v in rng.uniform(half, SIZE - half, size=2))
            things.append(Thing(color, shape, motion, x, y, size))
        a, b = things
        if _apart(a, b) and (relation is None or relation_of(a, b) == relation):
            return Scene(background, (a, b))
    raise RuntimeError(f"could not place {first} {relation} {second}")  # pragma: no cover


def object_track(thing: Thing) -> npt.NDArray[np.float64]:
    """Centre and size per frame: ``[F, 3]`` of (x, y, size), linear in time. The centre
    is not wrapped: (x mod SIZE, y mod SIZE) is where it is drawn."""
    progress = np.linspace(0.0, 1.0, FRAMES)
    dx, dy = _displacement(thing.motion)
    sizes = thing.size * (1.0 + (_size_factor(thing.motion) - 1.0) * progress)
    return np.stack([thing.x + dx * progress, thing.y + dy * progress, sizes], axis=1)


def shape_mask(
    shape: str, x: float, y: float, size: float, height: int = SIZE, width: int = SIZE
) -> npt.NDArray[np.bool_]:
    """Filled ``[H, W]`` mask of one shape centred at (x, y) on the torus (a shape across
    an edge shows its two parts at opposite sides), sampled at pixel centres."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    u, v = blobs.wrapped(xs - x, width), blobs.wrapped(ys - y, height)
    half = size / 2
    if shape == "circle":
        return bool_array(u**2 + v**2 <= half**2)
    if shape == "square":
        return bool_array((np.abs(u) <= half) & (np.abs(v) <= half))
    if shape == "triangle":  # apex up, base at the bottom, as wide as it is tall
        inside_rows = np.abs(v) <= half
        return bool_array(inside_rows & (np.abs(u) <= (v + half) / 2))
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def bool_array(a: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return np.asarray(a, dtype=bool)


def render(scene: Scene) -> npt.NDArray[np.uint8]:
    """Render a clip as ``[F, H, W, 3]`` uint8 RGB."""
    frames = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    frames[:] = BACKGROUNDS[scene.background]
    for thing in scene.things:
        color = np.array(COLORS[thing.color], dtype=np.uint8)
        for f, (x, y, size) in enumerate(object_track(thing)):
            frames[f][shape_mask(thing.shape, x, y, size)] = color
    return frames
