"""Objects as blobs of masks on the torus frame (the last two axes wrap): what the judge
and the layer compositor both call one object, where it is, and where two objects are
relative to each other."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]


def label(mask: Mask) -> npt.NDArray[np.int64]:
    """``[..., H, W]`` → the same shape: each pixel of ``mask`` labelled with the flat index
    of the first pixel of its 4-connected blob on the torus (the last two axes wrap); -1
    off the mask. Blobs never join across the leading axes (frames)."""
    none = mask.size  # larger than every index, so min() never picks it
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), none)
    while True:
        least = labels
        for axis in (-2, -1):
            for shift in (1, -1):
                least = np.minimum(least, np.roll(labels, shift, axis=axis))
        least = np.where(mask, least, none)
        # A label names a pixel of the same blob; taking that pixel's label jumps along
        # the blob, so a long thin blob needs a few passes, not one per pixel.
        flat = least.reshape(-1)
        on = flat < none
        flat[on] = flat[flat[on]]
        if np.array_equal(least, labels):
            return np.where(mask, labels, -1)
        labels = least


def largest_blobs(masks: Mask) -> Mask:
    """Each frame of ``[F, H, W]`` masks cut to its largest blob, so specks of noise do not
    move the centroid (an object across an edge is one blob)."""
    labels = label(masks)
    ids, counts = np.unique(labels[masks], return_counts=True)
    frame_of = ids // (masks.shape[1] * masks.shape[2])
    keep = [
        int(ids[on][int(np.argmax(counts[on]))])
        for f in range(len(masks))
        if (on := frame_of == f).any()
    ]
    return np.asarray(np.isin(labels, keep))


def grow(masks: Mask, px: int = 1) -> Mask:
    """Each mask and every pixel within ``px`` 4-steps of it on the torus."""
    out = masks.copy()
    for _ in range(px):
        step = out.copy()
        for axis in (-2, -1):
            for shift in (1, -1):
                step |= np.roll(out, shift, axis=axis)
        out = step
    return out


def wrapped(delta: npt.NDArray[np.float64], period: int) -> npt.NDArray[np.float64]:
    """Differences on the torus: into [-period/2, period/2)."""
    return np.asarray((delta + period / 2) % period - period / 2)


def circular_mean(coords: npt.NDArray[np.float64], period: int) -> float:
    """The mean position of ``coords`` on a circle of ``period`` pixels, in [0, period).

    The angle of the mean unit vector finds the side of the circle the points are on;
    the plain mean of their wrapped offsets from there is then exact, and for points
    away from the edges it is their ordinary mean."""
    angle = 2 * np.pi * coords / period
    rough = float(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())) * period / (2 * np.pi)
    return float((rough + wrapped(coords - rough, period).mean()) % period)


def centroid(mask: Mask) -> tuple[float, float] | None:
    """The object's centre ``(x, y)`` in pixels (circular means on the torus, in
    [0, W) × [0, H)), or ``None`` when the mask is empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    h, w = mask.shape
    return circular_mean(xs.astype(np.float64), w), circular_mean(ys.astype(np.float64), h)


# Where one object is relative to another at the first frame: the world's captions, its
# judge and the layer compositor all read it by this one rule.


def relation_of(dx: float, dy: float) -> str:
    """Where an object is relative to one ``(dx, dy)`` pixels from it (y grows downwards):
    along the axis they differ most on, the horizontal one on a tie."""
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def relation_lead(dx: npt.ArrayLike, dy: npt.ArrayLike, relation: str) -> npt.NDArray[np.float64]:
    """How far ``relation``'s axis leads the other for offsets ``(dx, dy)`` (elementwise):
    positive where ``relation_of`` reads ``relation`` clearly, by that many pixels."""
    x, y = np.asarray(dx, dtype=np.float64), np.asarray(dy, dtype=np.float64)
    lead = {"left of": x, "right of": -x, "above": y, "below": -y}[relation]
    other = np.abs(y) if relation in ("left of", "right of") else np.abs(x)
    return np.asarray(lead - other)
