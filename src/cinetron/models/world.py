"""The procedural "shapes" world: one solid background, one filled object that moves.

numpy only: the renderer feeds training, and the judge in ``cinetron.tools.judge``
reads the same constants to score generated videos without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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


@dataclass(frozen=True)
class Scene:
    """Everything that decides a clip. ``size`` is the object's extent in pixels at frame 0."""

    background: str
    color: str
    shape: str
    motion: str
    x: float
    y: float
    size: float

    @property
    def attributes(self) -> tuple[str, str, str, str]:
        return (self.background, self.color, self.shape, self.motion)


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
    rng: np.random.Generator, background: str, color: str, shape: str, motion: str
) -> Scene:
    """Place the object so that its whole path stays inside the frame."""
    size = float(rng.uniform(MIN_SIZE, MAX_SIZE))
    half = size * max(1.0, _size_factor(motion)) / 2 + 1.0
    dx, dy = _displacement(motion)
    x_lo, x_hi = half + max(0.0, -dx), SIZE - half - max(0.0, dx)
    y_lo, y_hi = half + max(0.0, -dy), SIZE - half - max(0.0, dy)
    x = float(rng.uniform(x_lo, x_hi))
    y = float(rng.uniform(y_lo, y_hi))
    return Scene(background, color, shape, motion, x, y, size)


def object_track(scene: Scene) -> npt.NDArray[np.float64]:
    """Centre and size per frame: ``[F, 3]`` of (x, y, size), linear in time."""
    progress = np.linspace(0.0, 1.0, FRAMES)
    dx, dy = _displacement(scene.motion)
    sizes = scene.size * (1.0 + (_size_factor(scene.motion) - 1.0) * progress)
    return np.stack([scene.x + dx * progress, scene.y + dy * progress, sizes], axis=1)


def shape_mask(
    shape: str, x: float, y: float, size: float, height: int = SIZE, width: int = SIZE
) -> npt.NDArray[np.bool_]:
    """Filled ``[H, W]`` mask of one shape centred at (x, y), sampled at pixel centres."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    half = size / 2
    if shape == "circle":
        return bool_array((xs - x) ** 2 + (ys - y) ** 2 <= half**2)
    if shape == "square":
        return bool_array((np.abs(xs - x) <= half) & (np.abs(ys - y) <= half))
    if shape == "triangle":  # apex up, base at the bottom, as wide as it is tall
        top = y - half
        inside_rows = (ys >= top) & (ys <= y + half)
        return bool_array(inside_rows & (np.abs(xs - x) <= (ys - top) / 2))
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def bool_array(a: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return np.asarray(a, dtype=bool)


def render(scene: Scene) -> npt.NDArray[np.uint8]:
    """Render a clip as ``[F, H, W, 3]`` uint8 RGB."""
    frames = np.empty((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    frames[:] = BACKGROUNDS[scene.background]
    color = np.array(COLORS[scene.color], dtype=np.uint8)
    for f, (x, y, size) in enumerate(object_track(scene)):
        frames[f][shape_mask(scene.shape, x, y, size)] = color
    return frames
