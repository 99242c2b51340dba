"""A procedural judge for the shapes world: reads background, colour, shape and motion
back from frames, using the world's own rules. numpy only.

It judges only what the world can show — one object on a clean, solid background — and
refuses anything else with the reason (``Verdict.problem``; every attribute is then
"none"): a solid frame, noise, or two blobs are not "a yellow square on gray, still".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cinetron.models.world import BACKGROUNDS, COLORS, SHAPES, TRAVEL_PX

Frames = npt.NDArray[np.uint8]  # [F, H, W, 3]


# A clean background: the border's median within this distance (0..441 in RGB) of one of
# the world's backgrounds, and at least CLEAN_BORDER of its pixels too. Objects never
# touch the border (the world keeps them inside), decoded edges are soft.
BACKGROUND_TOLERANCE = 48.0
CLEAN_BORDER = 0.85
MIN_OBJECT_PX = 6  # a blob smaller than this is a speck, not an object
MAX_OBJECT_SHARE = 0.65  # the world's biggest object covers 41% of a frame; near-solid is not one
SECOND_OBJECT_SHARE = 0.25  # a second blob this big next to the first: two objects


@dataclass(frozen=True)
class Verdict:
    background: str
    color: str
    shape: str
    motion: str
    problem: str | None = None  # why the frames were refused; then every attribute is "none"

    @property
    def attributes(self) -> tuple[str, str, str, str]:
        return (self.background, self.color, self.shape, self.motion)


def refused(problem: str) -> Verdict:
    return Verdict("none", "none", "none", "none", problem)


def _nearest(rgb: npt.NDArray[np.float64], palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    dists = [float(np.sum((rgb - np.array(palette[n], dtype=np.float64)) ** 2)) for n in names]
    return names[int(np.argmin(dists))]


def judge_background(frames: Frames) -> str:
    border = np.concatenate(
        [frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1
    ).reshape(-1, 3)
    return _nearest(np.median(border.astype(np.float64), axis=0), BACKGROUNDS)


def object_masks(frames: Frames, background: str) -> npt.NDArray[np.bool_]:
    """``[F, H, W]``: pixels nearer the object's colour than the background's.

    Two passes: a loose threshold finds the object's colour, then each pixel is cut
    at the midpoint between the two colours, so soft (decoded) edges neither grow
    nor shrink the shape.
    """
    pixels = frames.astype(np.float64)
    bg = np.array(BACKGROUNDS[background], dtype=np.float64)
    loose = np.sqrt(np.sum((pixels - bg) ** 2, axis=-1)) > 60.0
    if not loose.any():
        return loose
    obj = np.median(pixels[loose], axis=0)
    direction = obj - bg
    along = np.sum((pixels - bg) * direction, axis=-1) / max(1e-6, float(direction @ direction))
    return np.asarray(along > 0.5)


def components(mask: npt.NDArray[np.bool_]) -> list[int]:
    """Sizes of the 4-connected blobs of ``mask``, largest first."""
    h, w = mask.shape
    seen = np.zeros((h, w), dtype=bool)
    sizes = []
    for sy, sx in zip(*np.nonzero(mask), strict=True):
        if seen[sy, sx]:
            continue
        stack, size = [(sy, sx)], 0
        seen[sy, sx] = True
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        sizes.append(size)
    return sorted(sizes, reverse=True)


def _largest_component(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Keep the largest 4-connected blob, so specks of noise do not move the centroid."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    best, best_size, label = 0, 0, 0
    for sy, sx in zip(*np.nonzero(mask), strict=True):
        if labels[sy, sx]:
            continue
        label += 1
        stack, size = [(sy, sx)], 0
        labels[sy, sx] = label
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return np.asarray(labels == best) if best else mask


def judge_color(frames: Frames, masks: npt.NDArray[np.bool_], background: str) -> str:
    if not masks.any():
        return "none"
    pixels = frames[masks].astype(np.float64)
    candidates = {n: c for n, c in COLORS.items() if c != BACKGROUNDS[background]}
    return _nearest(np.median(pixels, axis=0), candidates)


def shape_templates(
    x0: float, y0: float, width: float, height: float, shape: tuple[int, int]
) -> dict[str, npt.NDArray[np.bool_]]:
    """Each world shape stretched to fill the box (x0, y0, width, height).

    Fitting width and height separately keeps the templates honest when a decoder
    smears a moving object along its path (a square 18 wide and 16 tall is still a square).
    """
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64) + 0.5
    u = (xs - (x0 + width / 2)) / (width / 2)
    v = (ys - (y0 + height / 2)) / (height / 2)
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    return {
        "circle": np.asarray(u**2 + v**2 <= 1),
        "square": np.asarray(inside),
        "triangle": np.asarray(inside & (np.abs(u) <= (v + 1) / 2)),
    }


def judge_shape(mask: npt.NDArray[np.bool_]) -> str:
    """Best intersection-over-union against each shape fitted to the blob's bounding box."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 6:
        return "none"
    x0, y0 = float(xs.min()), float(ys.min())
    width, height = float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)
    templates = shape_templates(x0, y0, width, height, mask.shape)
    ious = [
        int(np.sum(templates[s] & mask)) / max(1, int(np.sum(templates[s] | mask))) for s in SHAPES
    ]
    return SHAPES[int(np.argmax(ious))]


def centroid(mask: npt.NDArray[np.bool_]) -> tuple[float, float] | None:
    """The object's centre ``(x, y)`` in pixels, or ``None`` when the mask is empty."""
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def judge_motion(masks: npt.NDArray[np.bool_]) -> str:
    def centre_and_area(frame_masks: npt.NDArray[np.bool_]) -> tuple[float, float, float]:
        seen = [(c, int(m.sum())) for m in frame_masks if (c := centroid(m)) is not None]
        if not seen:
            return (np.nan, np.nan, 0.0)
        (cx, cy), area = np.mean([c for c, _ in seen], axis=0), np.mean([a for _, a in seen])
        return (float(cx), float(cy), float(area))

    x0, y0, a0 = centre_and_area(masks[:3])
    x1, y1, a1 = centre_and_area(masks[-3:])
    if not (a0 and a1):
        return "none"
    dx, dy = x1 - x0, y1 - y0
    if max(abs(dx), abs(dy)) > TRAVEL_PX / 3:
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    scale = np.sqrt(a1 / a0)
    if scale > 1.25:
        return "grows"
    if scale < 0.8:
        return "shrinks"
    return "still"


def problem(frames: Frames, background: str, masks: npt.NDArray[np.bool_]) -> str | None:
    """Why ``frames`` are not one object on a clean background, or None."""
    border = (
        np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
        .reshape(-1, 3)
        .astype(np.float64)
    )
    distance = np.sqrt(np.sum((border - np.array(BACKGROUNDS[background])) ** 2, axis=-1))
    median = float(np.median(distance))
    close = float(np.mean(distance < BACKGROUND_TOLERANCE))
    if median > BACKGROUND_TOLERANCE or close < CLEAN_BORDER:
        return (
            f"no clean background: the border is {median:.0f} levels from {background}, the "
            f"nearest of the world's backgrounds ({100 * close:.0f}% of its pixels are close)"
        )
    area = masks.shape[1] * masks.shape[2]
    blobs = [components(m) for m in masks]
    present = [b for b in blobs if b and b[0] >= MIN_OBJECT_PX]
    if len(present) * 2 < len(frames):
        return "no object: most frames are only background"
    if max(float(m.sum()) / area for m in masks) > MAX_OBJECT_SHARE:
        return f"no object on a background: something covers over {MAX_OBJECT_SHARE:.0%} of a frame"
    doubled = sum(
        1
        for b in present
        if len(b) > 1 and b[1] >= max(MIN_OBJECT_PX * 2, SECOND_OBJECT_SHARE * b[0])
    )
    if doubled * 2 > len(frames):
        return "more than one object in most frames"
    return None


def judge(frames: Frames) -> Verdict:
    """Classify a clip ``[F, H, W, 3]`` uint8 into the world's four attributes, or refuse it
    (``Verdict.problem``) when it is not one object on one of the world's backgrounds."""
    background = judge_background(frames)
    masks = object_masks(frames, background)
    why = problem(frames, background, masks)
    if why is not None:
        return refused(why)
    masks = np.stack([_largest_component(m) for m in masks])
    shapes = [judge_shape(m) for m in masks if m.sum() >= MIN_OBJECT_PX]
    shape = max(set(shapes), key=shapes.count) if shapes else "none"
    return Verdict(background, judge_color(frames, masks, background), shape, judge_motion(masks))
