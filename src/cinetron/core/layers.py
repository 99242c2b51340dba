"""Scenes of several objects drawn as layers: one single-object video per object, each
on the same plain background, composed into one.

The model draws one object well and two together poorly (it does not bind each phrase of
a two-object caption to its own object: docs/model-v2.md). On a torus frame with a plain
background a layer can be moved anywhere without changing what it shows, so ``place``
rolls the second layer to where the prompt's relation puts it at the first frame
(``blobs.relation_of``'s rule: the axis the centres differ most on) and where the two
objects never overlap, and ``composite`` draws it over the first.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cinetron.core.blobs import centroid, grow, largest_blobs, relation_lead
from cinetron.core.request import Frames

# A pixel is the object's by how far it is from the background (max over channels):
# below LOW it is background, above HIGH the object, between them the decoder's soft edge.
LOW, HIGH = 12.0, 48.0
GAP_PX = 2  # background kept between the two objects at the first frame, at least
ROOM_PX = 6  # and as much as this where there is room (a judge, or an eye, tells them apart)
RELATION_MARGIN_PX = 4.0  # the relation's axis leads the other by at least this

Alpha = npt.NDArray[np.float32]  # [F, H, W] in [0, 1]


def background_colour(frames: Frames) -> npt.NDArray[np.float32]:
    """The plain background's RGB: the median pixel (the object covers far less than half)."""
    return np.median(frames.reshape(-1, 3), axis=0).astype(np.float32)


def alpha(frames: Frames) -> Alpha:
    """``[F, H, W, 3]`` → how much each pixel is the object's, ``[F, H, W]``."""
    away = np.abs(frames.astype(np.float32) - background_colour(frames)).max(axis=-1)
    return np.clip((away - LOW) / (HIGH - LOW), 0.0, 1.0).astype(np.float32)


def _overlaps(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """``[H, W]``: pixels where ``a`` meets ``b`` rolled by (dy, dx), summed over frames
    (circular cross-correlation, one FFT per frame)."""
    fa = np.fft.rfft2(a.astype(np.float64))
    fb = np.fft.rfft2(b.astype(np.float64))
    corr = np.fft.irfft2((fa * np.conj(fb)).sum(axis=0), s=a.shape[1:])
    return np.rint(corr)


Shift = tuple[int, int]  # a roll (dy, dx) in pixels

# Where the first object's centre goes on the relation's axis, as a share of the frame:
# room on the far side for the second one.
LEAD = {"left of": (None, 1 / 3), "right of": (None, 2 / 3), "above": (1 / 3, None),
        "below": (2 / 3, None)}  # fmt: skip


def lead(first: Alpha, relation: str | None) -> Shift:
    """The roll of the ``first`` layer that leaves room for the second where ``relation``
    puts it (none without one: the first object stays where it was drawn)."""
    drawn = first[0] > 0.5
    at = centroid(drawn)
    if relation is None or at is None:
        return (0, 0)
    _, h, w = first.shape
    share_y, share_x = LEAD[relation]
    dy = 0 if share_y is None else round(share_y * h - at[1])
    dx = 0 if share_x is None else round(share_x * w - at[0])
    # A relation is read with both objects inside the frame: one drawn across an edge
    # on the other axis (the torus allows it) is moved to the middle of that axis, or no
    # place of the second could make the relation hold.
    inside_y, _ = _boxes(np.asarray(drawn.any(axis=1)))
    inside_x, _ = _boxes(np.asarray(drawn.any(axis=0)))
    if share_y is None and not inside_y[0]:
        dy = round(h / 2 - at[1])
    if share_x is None and not inside_x[0]:
        dx = round(w / 2 - at[0])
    return (dy, dx)


def _boxes(
    occupied: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """For one axis of an object (``occupied``: which of its ``n`` rows, or columns, it
    covers) rolled by each of 0..n-1: whether it then keeps off both edges of the frame,
    and the middle of its extent there (the world's and the judge's place of an object)."""
    n = len(occupied)
    rows = np.nonzero(occupied)[0]
    if len(rows) == 0:
        return np.zeros(n, dtype=bool), np.zeros(n)
    moved = (rows[None, :] + np.arange(n)[:, None]) % n  # [shift, row]
    inside = ~((moved == 0) | (moved == n - 1)).any(axis=1)
    return inside, (moved.min(axis=1) + moved.max(axis=1)) / 2


def related(
    first: npt.NDArray[np.bool_], second: npt.NDArray[np.bool_], relation: str
) -> npt.NDArray[np.bool_]:
    """``[H, W]``: for each roll (dy, dx) of ``second``, whether both objects keep off the
    frame's edges and ``first`` is then ``relation`` ``second``, its axis leading the
    other by ``RELATION_MARGIN_PX``. In closed form from each one's extent per axis."""
    h, w = first.shape
    in_y, at_y = _boxes(np.asarray(first.any(axis=1)))
    in_x, at_x = _boxes(np.asarray(first.any(axis=0)))
    if not (in_y[0] and in_x[0]):
        return np.zeros((h, w), dtype=bool)
    in_y2, at_y2 = _boxes(np.asarray(second.any(axis=1)))
    in_x2, at_x2 = _boxes(np.asarray(second.any(axis=0)))
    lead = relation_lead(at_x2[None, :] - at_x[0], at_y2[:, None] - at_y[0], relation)
    return np.asarray(in_y2[:, None] & in_x2[None, :] & (lead >= RELATION_MARGIN_PX))


def place(first: Alpha, second: Alpha, relation: str | None = None) -> tuple[Shift, int]:
    """The roll (dy, dx) of the ``second`` layer, the best by, in turn: the ``relation``
    of the first object to the second holds at frame 0 with both inside the frame (a
    relation is read there); the two are apart at frame 0 (``GAP_PX`` of background);
    they come within ``ROOM_PX`` of each other least over the clip (objects that grow
    may have to); the smallest move. Also returns that closeness (pixel-frames; 0: they
    keep ``ROOM_PX`` apart all clip)."""
    a, b = first > 0.5, second > 0.5
    _, h, w = a.shape
    clash = _overlaps(grow(a, ROOM_PX), b)
    touch = _overlaps(grow(a[:1], GAP_PX), b[:1])
    ok = np.ones((h, w), dtype=bool) if relation is None else related(a[0], b[0], relation)
    dy, dx = np.mgrid[0:h, 0:w]
    sy, sx = np.minimum(dy, h - dy), np.minimum(dx, w - dx)
    # np.lexsort sorts by its last key first.
    keys = (dx, dy, sy * sy + sx * sx, clash, touch > 0, ~ok)
    best = int(np.lexsort([k.reshape(-1) for k in keys])[0])
    return (best // w, best % w), int(clash.reshape(-1)[best])


def matte(frames: Frames) -> Alpha:
    """The layer's object alone: ``alpha`` cut to each frame's largest blob (grown by a
    pixel for its soft edge). A layer brings its object, not specks elsewhere in it."""
    a = alpha(frames)
    main = largest_blobs(a > 0.5)
    return (a * grow(main, 1)).astype(np.float32)


def shrink(frames: Frames, scale: float) -> Frames:
    """The layer's object drawn ``scale`` times its size about its own centre in every
    frame: where it is and how it moves stay, there is more room beside it. Nearest
    pixels, not blends: a blend of an edge with the background is a colour of its own."""
    a = matte(frames)
    _, h, w, _ = frames.shape
    grid_y, grid_x = np.mgrid[0:h, 0:w]
    ys = np.rint(h / 2 + (grid_y - h / 2) / scale).astype(int)
    xs = np.rint(w / 2 + (grid_x - w / 2) / scale).astype(int)
    off = (ys < 0) | (ys >= h) | (xs < 0) | (xs >= w)
    ys, xs = ys.clip(0, h - 1), xs.clip(0, w - 1)
    background = np.rint(background_colour(frames)).astype(np.uint8)
    out = np.empty_like(frames)
    for f, frame in enumerate(frames):
        where = centroid(a[f] > 0.5)
        if where is None:
            out[f] = frame
            continue
        to_middle = (round(h / 2 - where[1]), round(w / 2 - where[0]))
        small = np.roll(frame, to_middle, axis=(0, 1))[ys, xs]
        small[off] = background  # what lay beyond the frame's edge is background
        out[f] = np.roll(small, (-to_middle[0], -to_middle[1]), axis=(0, 1))
    return out


def composite(under: Frames, over: Frames, shift: Shift = (0, 0)) -> Frames:
    """``over``'s object (its ``matte``, rolled by ``shift``) drawn on ``under``."""
    moved = np.roll(over, shift, axis=(1, 2))
    a = matte(moved)[..., None]
    mixed = under.astype(np.float32) * (1 - a) + moved.astype(np.float32) * a
    return np.rint(mixed).astype(np.uint8)


# How much smaller a layer's object is drawn when two at full size cannot keep apart
# (two growing objects): the world's pairs are 12-18 px against one object's 14-24.
SHRINK = 0.75


def arrange(videos: list[Frames], relation: str | None, clip: int) -> Frames:
    """The layers' videos (``[N, H, W, 3]`` each, one object each, the same background)
    as one: each object keyed from its layer onto the plain background, the first moved
    to leave room on the relation's side, the others where ``place`` puts them (judged
    on the first ``clip`` frames). Clips whose objects cannot keep apart at full size
    are composed again with every object ``SHRINK`` times smaller."""
    first, others = videos[0], videos[1:]
    if not others:
        return first
    canvas = np.broadcast_to(np.rint(background_colour(first)).astype(np.uint8), first.shape)
    for scale in (1.0, SHRINK):
        if scale != 1.0:
            if len(first) > clip:  # a long video's object may cross edges: keep its size
                break
            first, others = shrink(first, scale), [shrink(v, scale) for v in others]
        start = lead(matte(first[:1]), relation)
        out = composite(canvas, first, start)
        base = matte(out[:clip])
        closeness = 0
        for k, other in enumerate(others):
            shift, near = place(base, matte(other[:clip]), relation if k == 0 else None)
            out = composite(out, other, shift)
            base, closeness = matte(out[:clip]), closeness + near
        if closeness == 0:
            break
    return out
