"""A procedural judge for the shapes world: reads background, colour, shape and motion
back from frames, using the world's own rules. numpy only.

The world's frame is a torus (``world.wrapped``): an object that crosses an edge shows
its two parts at opposite sides and is still one object. So blobs are 4-connected with
wrap-around, centres are circular means, and motion is the wrapped displacement (an
object travels ``TRAVEL_PX`` = 24 px a clip, less than half the frame, so the shorter
way round is the way it went).

Three judges:
- ``judge(frames)``: one clip of ONE object on a clean, solid background. Anything else
  is refused with the reason (``Verdict.problem``; every attribute is then "none"): a
  solid frame, noise, or two blobs are not "a yellow square on gray, still".
- ``judge_scene(frames, count)``: a clip of ``count`` objects, told apart by colour and
  then by blob (two identical objects are one colour, two blobs), with where the first
  is relative to the second at the first frame; ``match_scene`` scores it against a
  caption's objects.
- ``judge_windows(frames)``: a long video, one ``judge`` per 2-second window, and per
  frame whether an object is there at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import permutations

import numpy as np
import numpy.typing as npt

from cinetron.core.blobs import centroid, grow, label, largest_blobs, relation_of, wrapped
from cinetron.models.world import BACKGROUNDS, COLORS, FRAMES, SHAPES, SIZE, TRAVEL_PX

Frames = npt.NDArray[np.uint8]  # [F, H, W, 3]
Mask = npt.NDArray[np.bool_]
Triple = tuple[str, str, str]  # (colour, shape, motion) of one object


# A clean background: the pixels that are not the object(s) have a median within this
# distance (0..441 in RGB) of one of the world's backgrounds, and at least CLEAN_SHARE of
# them are that close. Decoded edges are soft, so a 1-pixel ring around each object
# counts as neither.
BACKGROUND_TOLERANCE = 48.0
CLEAN_SHARE = 0.85
MIN_OBJECT_PX = 6  # a blob smaller than this is a speck, not an object
MAX_OBJECT_SHARE = 0.65  # the world's biggest object covers 41% of a frame; near-solid is not one
SECOND_OBJECT_SHARE = 0.25  # a second blob this big next to the first: two objects
ENDS = 3  # frames averaged at each end of a clip to tell its motion
SHORT_SPAN = 2  # frames: the least an object must be seen clear of others to tell its motion
WINDOW = FRAMES  # a long video is judged in windows of one clip: 2 s at 8 fps


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


def _distance(
    pixels: npt.NDArray[np.float64], rgb: tuple[int, int, int]
) -> npt.NDArray[np.float64]:
    return np.asarray(np.sqrt(np.sum((pixels - np.array(rgb, dtype=np.float64)) ** 2, axis=-1)))


def _nearest(rgb: npt.NDArray[np.float64], palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    dists = [float(np.sum((rgb - np.array(palette[n], dtype=np.float64)) ** 2)) for n in names]
    return names[int(np.argmin(dists))]


def judge_background(frames: Frames) -> str:
    """The world's background that most pixels are close to. Not the border: on the torus
    an object may lie across it. When no pixel is near any, the one nearest the median
    (the clean-background check then refuses the clip)."""
    pixels = frames.reshape(-1, 3).astype(np.int32)
    close = {
        name: int(np.sum(np.sum((pixels - rgb) ** 2, axis=-1) < BACKGROUND_TOLERANCE**2))
        for name, rgb in BACKGROUNDS.items()
    }
    best = max(close, key=lambda name: close[name])
    if close[best]:
        return best
    return _nearest(np.median(pixels.astype(np.float64), axis=0), BACKGROUNDS)


def object_masks(frames: Frames, background: str) -> Mask:
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


def components(mask: Mask) -> list[int]:
    """Sizes of the 4-connected blobs of an ``[H, W]`` mask on the torus, largest first."""
    return blob_sizes(mask[None])[0]


def blob_sizes(masks: Mask) -> list[list[int]]:
    """Per frame of ``[F, H, W]`` masks, the sizes of its blobs on the torus, largest first."""
    labels = label(masks)
    ids, counts = np.unique(labels[masks], return_counts=True)
    per_frame: list[list[int]] = [[] for _ in masks]
    for i, c in zip(ids // (masks.shape[1] * masks.shape[2]), counts, strict=True):
        per_frame[int(i)].append(int(c))
    return [sorted(sizes, reverse=True) for sizes in per_frame]


def judge_color(frames: Frames, masks: Mask, background: str) -> str:
    if not masks.any():
        return "none"
    pixels = frames[masks].astype(np.float64)
    candidates = {n: c for n, c in COLORS.items() if c != BACKGROUNDS[background]}
    return _nearest(np.median(pixels, axis=0), candidates)


def shape_templates(
    x0: float, y0: float, width: float, height: float, shape: tuple[int, int]
) -> dict[str, Mask]:
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


def judge_shape(mask: Mask) -> str:
    """Best intersection-over-union against each shape fitted to the blob's bounding box.
    The blob is first moved to the middle of the frame, so one across an edge is whole."""
    centre = centroid(mask)
    if centre is None:
        return "none"
    mask = _centred(mask, centre)
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


def _centred(mask: Mask, centre: tuple[float, float]) -> Mask:
    """``mask`` rolled on the torus so that ``centre`` lands in the middle of the frame."""
    h, w = mask.shape
    shift = (round(h / 2 - centre[1]), round(w / 2 - centre[0]))
    return np.asarray(np.roll(mask, shift, axis=(0, 1)))


@dataclass(frozen=True)
class Sighting:
    """One object in one frame: its centroid, bounding-box centre (where the world puts
    ``Thing.x, Thing.y``: a triangle's centroid lies lower) and area, all in pixels."""

    x: float
    y: float
    box_x: float
    box_y: float
    area: float


def sighting(mask: Mask) -> Sighting | None:
    centre = centroid(mask)
    if centre is None:
        return None
    h, w = mask.shape
    ys, xs = (a.astype(np.float64) for a in np.nonzero(mask))
    u, v = wrapped(xs - centre[0], w), wrapped(ys - centre[1], h)
    box_x = (centre[0] + (u.min() + u.max()) / 2) % w
    box_y = (centre[1] + (v.min() + v.max()) / 2) % h
    return Sighting(centre[0], centre[1], float(box_x), float(box_y), float(len(xs)))


def _mean_place(
    seen: Sequence[Sighting], frame: tuple[int, int] = (SIZE, SIZE)
) -> tuple[float, float, float]:
    """Mean centroid (on the ``frame`` = (H, W) torus, around the first) and mean area."""
    x0, y0 = seen[0].x, seen[0].y
    dx = float(np.mean(wrapped(np.array([s.x - x0 for s in seen]), frame[1])))
    dy = float(np.mean(wrapped(np.array([s.y - y0 for s in seen]), frame[0])))
    return x0 + dx, y0 + dy, float(np.mean([s.area for s in seen]))


def motion_of(
    track: Sequence[Sighting | None],
    frame: tuple[int, int] = (SIZE, SIZE),
    ends: int = ENDS,
    min_span: float | None = None,
) -> str:
    """The world's motion of one object seen (or not, ``None``) in each frame of a clip
    of ``frame`` = (H, W) pixels.

    The first and last ``ends`` sightings are compared: a wrapped displacement over a
    third of the travel is a move, else the change of area says grows, shrinks or
    still. When the object is missing at an end (hidden, or out of most frames) the
    change is scaled up to the clip's length; seen over a span of less than
    ``min_span`` frames (default: half the clip), "none". With every frame seen this is
    v1's rule exactly.
    """
    full = len(track) - ends  # the span when every frame is seen
    seen = [(t, s) for t, s in enumerate(track) if s is not None]
    ends = min(ends, len(seen) // 2)  # the two ends never share a sighting
    if not ends:
        return "none"
    head, tail = seen[:ends], seen[-ends:]
    span = float(np.mean([t for t, _ in tail]) - np.mean([t for t, _ in head]))
    if span < (full / 2 if min_span is None else min_span):
        return "none"
    x0, y0, a0 = _mean_place([s for _, s in head], frame)
    x1, y1, a1 = _mean_place([s for _, s in tail], frame)
    scale_up = full / span
    dx = float(wrapped(np.array(x1 - x0), frame[1])) * scale_up
    dy = float(wrapped(np.array(y1 - y0), frame[0])) * scale_up
    if max(abs(dx), abs(dy)) > TRAVEL_PX / 3:
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    scale = np.sqrt(a1 / a0) ** scale_up
    if scale > 1.25:
        return "grows"
    if scale < 0.8:
        return "shrinks"
    return "still"


def judge_motion(masks: Mask) -> str:
    """The motion of the object drawn by ``[F, H, W]`` masks (one blob each)."""
    return motion_of([sighting(m) for m in masks], (masks.shape[1], masks.shape[2]))


def background_problem(frames: Frames, background: str, masks: Mask) -> str | None:
    """Why the pixels that are not the object(s) (``masks``, ``[F, H, W]``) are not a clean
    ``background``, or None. Judged around the objects, not on the border: objects on the
    torus may touch or cross it."""
    rest = frames[~grow(masks)].astype(np.float64)
    if not len(rest):
        return f"no clean background: no pixel is left around the objects to be {background}"
    distance = _distance(rest, BACKGROUNDS[background])
    median = float(np.median(distance))
    close = float(np.mean(distance < BACKGROUND_TOLERANCE))
    if median > BACKGROUND_TOLERANCE or close < CLEAN_SHARE:
        return (
            f"no clean background: the pixels around the objects are {median:.0f} levels "
            f"from {background}, the nearest of the world's backgrounds ({100 * close:.0f}% "
            "of them are close)"
        )
    return None


def _covers_too_much(masks: Mask) -> str | None:
    area = masks.shape[1] * masks.shape[2]
    if max(float(m.sum()) / area for m in masks) > MAX_OBJECT_SHARE:
        return f"no object on a background: something covers over {MAX_OBJECT_SHARE:.0%} of a frame"
    return None


def problem(frames: Frames, background: str, masks: Mask) -> str | None:
    """Why ``frames`` are not one object on a clean background, or None."""
    why = background_problem(frames, background, masks)
    if why is not None:
        return why
    blobs = blob_sizes(masks)
    present = [b for b in blobs if b and b[0] >= MIN_OBJECT_PX]
    if len(present) * 2 < len(frames):
        return "no object: most frames are only background"
    why = _covers_too_much(masks)
    if why is not None:
        return why
    # A second object: another blob of the object's colour, or a blob of another colour
    # (the mask follows one colour; the world's scenes may hold two).
    stray = blob_sizes((colour_labels(frames, background)[1] >= 0) & ~grow(masks))
    doubled = sum(
        1
        for b, other in zip(blobs, stray, strict=True)
        if b
        and b[0] >= MIN_OBJECT_PX
        and max([*b[1:2], *other[:1], 0]) >= max(MIN_OBJECT_PX * 2, SECOND_OBJECT_SHARE * b[0])
    )
    if doubled * 2 > len(frames):
        return "more than one object in most frames"
    return None


def _majority(values: Sequence[str]) -> str:
    return Counter(values).most_common(1)[0][0] if values else "none"


def judge(frames: Frames) -> Verdict:
    """Classify a clip ``[F, H, W, 3]`` uint8 into the world's four attributes, or refuse it
    (``Verdict.problem``) when it is not ONE object on one of the world's backgrounds."""
    background = judge_background(frames)
    masks = object_masks(frames, background)
    why = problem(frames, background, masks)
    if why is not None:
        return refused(why)
    masks = largest_blobs(masks)
    shape = _majority([judge_shape(m) for m in masks if m.sum() >= MIN_OBJECT_PX])
    return Verdict(background, judge_color(frames, masks, background), shape, judge_motion(masks))


# --- scenes of several objects ------------------------------------------------------------


@dataclass(frozen=True)
class ObjectVerdict:
    """One object of a scene; (x, y) is its bounding-box centre where first seen."""

    color: str
    shape: str
    motion: str
    x: float
    y: float

    @property
    def attributes(self) -> Triple:
        return (self.color, self.shape, self.motion)


@dataclass(frozen=True)
class SceneVerdict:
    """What ``judge_scene`` read: objects ordered by x (then y) where first seen."""

    background: str
    objects: tuple[ObjectVerdict, ...]
    problem: str | None = None  # why the frames were refused; then there are no objects

    def relation_of(self, i: int, j: int) -> str:
        """Where object ``i`` is relative to object ``j`` at the first frame, by the
        world's rule (``blobs.relation_of``: the axis their centres differ most on)."""
        a, b = self.objects[i], self.objects[j]
        return relation_of(b.x - a.x, b.y - a.y)

    @property
    def relation(self) -> str | None:
        """``objects[0]`` relative to ``objects[1]``; None with fewer than two objects."""
        return self.relation_of(0, 1) if len(self.objects) >= 2 else None


def colour_labels(frames: Frames, background: str) -> tuple[list[str], npt.NDArray[np.int64]]:
    """The candidate colours (the world's, less the background's) and ``[F, H, W]``: the
    index of each pixel's colour, -1 for pixels not clearly away from the background.

    A pixel's colour is the one whose blend with the background it lies nearest to
    (the residual off the line background→colour), counted when it is past the middle
    of that line: a soft decoded edge is such a blend, and the plain nearest colour
    would call a pale blue edge on white cyan.
    """
    bg = np.array(BACKGROUNDS[background], dtype=np.float64)
    names = [n for n, rgb in COLORS.items() if rgb != BACKGROUNDS[background]]
    directions = np.array([COLORS[n] for n in names], dtype=np.float64) - bg  # [K, 3]
    out = np.full(frames.shape[:-1], -1, dtype=np.int64)
    offset = frames.reshape(-1, 3).astype(np.float64) - bg
    # Past the middle of a line means at least half its length away: only those pixels.
    reach = 0.5 * float(np.sqrt(np.sum(directions**2, axis=1)).min())
    away = np.flatnonzero(np.sum(offset**2, axis=1) > reach**2)
    offset = offset[away]
    along = offset @ directions.T / np.sum(directions**2, axis=1)  # [P, K]
    residual = np.sum((offset[:, None, :] - along[..., None] * directions) ** 2, axis=-1)
    residual[along <= 0.5] = np.inf
    best = np.argmin(residual, axis=1)
    counted = np.isfinite(residual[np.arange(len(away)), best])
    out.reshape(-1)[away[counted]] = best[counted]
    return names, out


def _blobs(masks: Mask) -> list[list[Mask]]:
    """Per frame of one colour's ``[F, H, W]`` masks, the blobs that are objects: at least
    MIN_OBJECT_PX and SECOND_OBJECT_SHARE of the frame's largest (smaller ones are specks
    or the slivers an occluding object leaves)."""
    labels = label(masks)
    ids, counts = np.unique(labels[masks], return_counts=True)
    frame_of = ids // (masks.shape[1] * masks.shape[2])
    out: list[list[Mask]] = [[] for _ in masks]
    for f in np.unique(frame_of):
        on = frame_of == f
        least = max(MIN_OBJECT_PX, SECOND_OBJECT_SHARE * float(counts[on].max()))
        out[int(f)] = [np.asarray(labels[f] == i) for i in ids[on][counts[on] >= least]]
    return out


def _distance_between(a: Sighting, b: Sighting, shape: tuple[int, int]) -> float:
    h, w = shape
    return float(np.hypot(wrapped(np.array(a.x - b.x), w), wrapped(np.array(a.y - b.y), h)))


@dataclass
class _Track:
    """One object of one colour followed through the frames: per frame its sighting (or
    None), whether it was clear of other objects then, and its own mask (for its shape;
    None where it shared a blob with an identical object)."""

    sightings: list[Sighting | None] = field(default_factory=list)
    clear: list[bool] = field(default_factory=list)
    masks: list[Mask | None] = field(default_factory=list)

    def last(self) -> Sighting | None:
        return next((s for s in reversed(self.sightings) if s is not None), None)

    def add(self, seen: Sighting | None, clear: bool = True, mask: Mask | None = None) -> None:
        self.sightings.append(seen)
        self.clear.append(clear)
        self.masks.append(mask)

    def verdict(self, color: str, frame: tuple[int, int]) -> ObjectVerdict | None:
        """Where another object touches this one it may hide part of it, so those frames
        tell neither its shape nor its size and centre, unless there are too few others."""
        first = next((s for s in self.sightings if s is not None), None)
        if first is None:
            return None
        clear = [s if c else None for s, c in zip(self.sightings, self.clear, strict=True)]
        motion = motion_of(clear, frame)
        if motion == "none":  # touched most of the clip: a short clear view beats a hidden one
            motion = motion_of(clear, frame, min_span=SHORT_SPAN)
        if motion == "none":
            motion = motion_of(self.sightings, frame)
        own = [(m, c) for m, c in zip(self.masks, self.clear, strict=True) if m is not None]
        shapes = [judge_shape(m) for m, c in own if c] or [judge_shape(m) for m, _ in own]
        return ObjectVerdict(color, _majority(shapes), motion, first.box_x, first.box_y)


def _follow(per_frame: list[list[Mask]], others: Mask, count: int) -> list[_Track]:
    """``count`` objects of one colour through frames of blobs ``[[H, W], ...]`` per frame;
    ``others`` ``[F, H, W]`` are the pixels of the other colours' objects.

    Blobs go to the nearest track (the pairing with the least total distance when
    there are as many blobs as tracks). Several blobs near one track are one object
    cut by another in front of it; one blob near several tracks is identical objects
    touching: each then keeps its place relative to their common centre and its share
    of their area, and no shape is read from it.
    """
    shape = (others.shape[1], others.shape[2])
    tracks = [_Track() for _ in range(count)]
    for blobs, other in zip(per_frame, others, strict=True):
        seen = [s for b in blobs if (s := sighting(b)) is not None]
        lasts = [t.last() for t in tracks]
        if not seen:
            for t in tracks:
                t.add(None)
            continue
        if all(last is None for last in lasts):  # the first frame with this colour
            order = sorted(range(len(seen)), key=lambda i: -seen[i].area)[:count]
            owner = {i: [k] for k, i in enumerate(order)}
        elif len(seen) == count:
            pairing = min(
                permutations(range(count)),
                key=lambda p: sum(_cost(lasts[k], seen[p[k]], shape) for k in range(count)),
            )
            owner = {pairing[k]: [k] for k in range(count)}
        else:
            owner = _nearest_owners(lasts, seen, shape)
        _record(tracks, blobs, seen, owner, lasts, other)
    return tracks


def _cost(last: Sighting | None, now: Sighting, shape: tuple[int, int]) -> float:
    return 0.0 if last is None else _distance_between(last, now, shape)


def _nearest_owners(
    lasts: list[Sighting | None], seen: list[Sighting], shape: tuple[int, int]
) -> dict[int, list[int]]:
    """Blob → the tracks it belongs to: with more blobs than tracks each blob joins its
    nearest track; with fewer, each track takes its nearest blob."""
    known = [k for k, last in enumerate(lasts) if last is not None]
    owner: dict[int, list[int]] = {}
    if len(seen) > len(lasts):
        for i, s in enumerate(seen):
            k = min(known, key=lambda k: _cost(lasts[k], s, shape))
            owner.setdefault(i, []).append(k)
        return owner
    for k in known:
        i = min(range(len(seen)), key=lambda i: _cost(lasts[k], seen[i], shape))
        owner.setdefault(i, []).append(k)
    return owner


def _record(
    tracks: list[_Track],
    blobs: list[Mask],
    seen: list[Sighting],
    owner: dict[int, list[int]],
    lasts: list[Sighting | None],
    other: Mask,
) -> None:
    """Add this frame's sighting (or None) to every track, per ``owner`` (blob → tracks)."""
    mine: dict[int, list[int]] = {}  # track → its blobs, when it has them alone
    shared: dict[int, int] = {}  # track → the blob it shares with identical objects
    for i, ks in owner.items():
        if len(ks) == 1:
            mine.setdefault(ks[0], []).append(i)
        else:
            shared.update(dict.fromkeys(ks, i))
    for k, track in enumerate(tracks):
        if k in mine:
            mask = np.asarray(np.logical_or.reduce([blobs[i] for i in mine[k]]))
            touched = bool((grow(mask) & other).any())
            track.add(sighting(mask), not touched, mask)
        elif k in shared:
            group = [j for j, i in shared.items() if i == shared[k]]
            track.add(_share(seen[shared[k]], lasts[k], [lasts[j] for j in group], other.shape))
        else:
            track.add(None)


def _share(
    blob: Sighting, last: Sighting | None, group: list[Sighting | None], shape: tuple[int, ...]
) -> Sighting | None:
    """One of ``group`` (identical objects, last seen apart) in the blob they now make:
    at its last offset from their common centre, with an even share of the area."""
    places = [p for p in group if p is not None]
    if last is None or not places:
        return None
    h, w = shape
    mean_x, mean_y, _ = _mean_place(places, (h, w))
    dx = float(wrapped(np.array(last.x - mean_x), w))
    dy = float(wrapped(np.array(last.y - mean_y), h))
    x, y = (blob.x + dx) % w, (blob.y + dy) % h
    return Sighting(x, y, last.box_x, last.box_y, blob.area / len(group))


def judge_scene(frames: Frames, count: int) -> SceneVerdict:
    """Read ``count`` objects from a clip ``[F, H, W, 3]`` uint8: the background, each
    object's colour, shape and motion, and where each is at the first frame.

    Pixels are sorted by colour first, then each colour into blobs; a colour seen in
    fewer than half the frames is flicker, not an object, and a colour's number of
    objects is how many blobs it has at the first frames (where the world keeps
    objects apart). Refused (``problem``, no objects) when the background is not clean,
    something covers most of a frame, or the number of objects is not ``count``.
    """
    background = judge_background(frames)
    names, labels = colour_labels(frames, background)
    objects_mask = labels >= 0
    why = background_problem(frames, background, objects_mask) or _covers_too_much(objects_mask)
    if why is not None:
        return SceneVerdict("none", (), why)
    found: list[ObjectVerdict] = []
    for k, name in enumerate(names):
        mine = labels == k
        per_frame = _blobs(mine)
        with_colour = [len(b) for b in per_frame if b]
        if len(with_colour) * 2 < len(frames):
            continue
        tracks = _follow(per_frame, objects_mask & ~mine, _mode_largest(with_colour[:ENDS]))
        found.extend(
            v
            for t in tracks
            if (v := t.verdict(name, (frames.shape[1], frames.shape[2]))) is not None
        )
    if len(found) != count:
        if not found:
            return SceneVerdict("none", (), "no object: most frames are only background")
        said = ", ".join(sorted(o.color for o in found))
        return SceneVerdict("none", (), f"found {len(found)} objects ({said}), expected {count}")
    return SceneVerdict(background, tuple(sorted(found, key=lambda o: (o.x, o.y))))


def _mode_largest(values: Sequence[int]) -> int:
    """The most common value; the larger on a tie."""
    counts = Counter(values)
    return max(counts, key=lambda v: (counts[v], v))


@dataclass(frozen=True)
class SceneMatch:
    """A scene verdict scored against what was asked; per asked object, in its order."""

    background: bool
    color: tuple[bool, ...]
    shape: tuple[bool, ...]
    motion: tuple[bool, ...]
    relation: bool | None  # None: nothing was asked of the relation
    refused: str | None = None
    pairing: tuple[int, ...] = ()  # per asked object, the judged object it was paired with
    judged_relation: str | None = None  # of the objects paired with the first two asked

    @property
    def all(self) -> bool:
        """Background, every object's three attributes, and the relation when asked."""
        return (
            self.background
            and all(self.color)
            and all(self.shape)
            and all(self.motion)
            and self.relation is not False
        )


def match_scene(
    verdict: SceneVerdict, background: str, expected: Sequence[Triple], relation: str | None
) -> SceneMatch:
    """Score ``verdict`` against the asked background, objects and relation (of the
    first asked object to the second).

    Judged objects are paired with asked ones to agree first on colour, then shape,
    then motion, then relation (the best of every pairing), so the scores do not
    depend on the order either side lists them in.
    """
    n = len(expected)
    if verdict.problem is not None or len(verdict.objects) != n:
        miss = (False,) * n
        why = verdict.problem or f"judged {len(verdict.objects)} objects, asked {n}"
        return SceneMatch(False, miss, miss, miss, None if relation is None else False, why)

    def agreement(p: tuple[int, ...]) -> tuple[int, int, int, bool]:
        got = [verdict.objects[i].attributes for i in p]
        hits = [sum(g[a] == e[a] for g, e in zip(got, expected, strict=True)) for a in range(3)]
        related = relation is not None and n >= 2 and verdict.relation_of(p[0], p[1]) == relation
        return (hits[0], hits[1], hits[2], related)

    best = max(permutations(range(n)), key=agreement)
    got = [verdict.objects[i].attributes for i in best]
    judged = verdict.relation_of(best[0], best[1]) if n >= 2 else None
    return SceneMatch(
        verdict.background == background,
        tuple(g[0] == e[0] for g, e in zip(got, expected, strict=True)),
        tuple(g[1] == e[1] for g, e in zip(got, expected, strict=True)),
        tuple(g[2] == e[2] for g, e in zip(got, expected, strict=True)),
        None if relation is None else judged == relation,
        pairing=best,
        judged_relation=judged,
    )


# --- long videos -------------------------------------------------------------------------


@dataclass(frozen=True)
class LongSummary:
    """Counts over one long video judged against one asked (background, colour, shape,
    motion). A refused window has neither the asked motion nor a wrong one."""

    frames: int
    present: int  # frames with an object on a clean background
    windows: int
    identity: int  # windows with the asked background, colour and shape
    asked_motion: int  # windows with the asked motion
    wrong_motion: int  # windows with another motion; "still" is not wrong unless still was asked


@dataclass(frozen=True)
class WindowsVerdict:
    """A long video judged window by window, and frame by frame for presence."""

    windows: tuple[Verdict, ...]
    present: tuple[bool, ...]  # per frame

    def summary(self, expected: tuple[str, str, str, str]) -> LongSummary:
        background, color, shape, motion = expected
        moves = [w.motion for w in self.windows]
        return LongSummary(
            frames=len(self.present),
            present=sum(self.present),
            windows=len(self.windows),
            identity=sum(
                (w.background, w.color, w.shape) == (background, color, shape) for w in self.windows
            ),
            asked_motion=sum(m == motion for m in moves),
            wrong_motion=sum(_wrong_motion(m, motion) for m in moves),
        )


def _wrong_motion(got: str, asked: str) -> bool:
    """A motion that contradicts the asked one. Standing still is a lapse, not a
    contradiction, unless still was asked; a refused window ("none") is neither."""
    if got in ("none", asked):
        return False
    return asked == "still" or got != "still"


def frame_present(frames: Frames) -> list[bool]:
    """Per frame of ``[F, H, W, 3]``: an object blob of at least MIN_OBJECT_PX on a clean
    background (each frame judged alone, its own background)."""
    out = []
    for frame in frames[:, None]:
        background = judge_background(frame)
        mask = object_masks(frame, background)
        blobs = components(mask[0])
        out.append(
            background_problem(frame, background, mask) is None
            and _covers_too_much(mask) is None
            and bool(blobs)
            and blobs[0] >= MIN_OBJECT_PX
        )
    return out


def judge_windows(frames: Frames, window: int = WINDOW) -> WindowsVerdict:
    """Judge a long video ``[N, H, W, 3]`` uint8 in consecutive windows of ``window``
    frames (``judge`` each; a last, shorter window is left out), and each frame for an
    object."""
    starts = range(0, len(frames) - window + 1, window)
    return WindowsVerdict(
        tuple(judge(frames[s : s + window]) for s in starts), tuple(frame_present(frames))
    )
