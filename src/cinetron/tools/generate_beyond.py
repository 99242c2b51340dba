"""``cinetron generate`` options beyond one clip: --duration, --shot/--storyboard, --image,
--video/--strength, --width/--height. ``cli.py`` adds the options and hands requests that
use any of them to ``generate`` here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cinetron.core.compose import DEFAULT_CARRY_STRENGTH, DEFAULT_OVERLAP
from cinetron.core.errors import InvalidArgument
from cinetron.transports.base import Transport

STORYBOARD_HELP = (
    'JSON file: [{"prompt": "...", "duration": 15, "transition": "cut"|"continue"}, ...]'
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("beyond one clip (composed from overlapping windows)")
    g.add_argument("--duration", type=float, default=None, help="seconds, up to 60")
    g.add_argument(
        "--shot",
        action="append",
        default=None,
        metavar="SECONDS:PROMPT",
        help='a storyboard shot, e.g. --shot "15:a red circle moving left" (repeat; cuts '
        'between shots; "+15:..." continues the previous shot instead)',
    )
    g.add_argument("--storyboard", type=Path, default=None, help=STORYBOARD_HELP)
    g.add_argument("--image", type=Path, default=None, help="first frame (PNG/JPEG)")
    g.add_argument("--video", type=Path, default=None, help="MP4 to extend (or re-render)")
    g.add_argument(
        "--strength", type=float, default=None, help="with --video: re-render it, 0..1 (SDEdit)"
    )
    g.add_argument("--width", type=int, default=None, help="output width (model's buckets)")
    g.add_argument("--height", type=int, default=None, help="output height")
    g.add_argument(
        "--overlap", type=int, default=DEFAULT_OVERLAP, help="latent frames shared by windows"
    )
    g.add_argument(
        "--carry-strength",
        type=float,
        default=DEFAULT_CARRY_STRENGTH,
        help="where a carried window starts from its continuation guess, 0..1 (1: noise)",
    )
    g.add_argument("--seams", action="store_true", help="print the seam-quality report")


def requested(args: argparse.Namespace) -> bool:
    names = ("duration", "shot", "storyboard", "image", "video", "strength", "width", "height")
    return any(getattr(args, n, None) is not None for n in names)


def _parse_shot(text: str):  # type: ignore[no-untyped-def]
    from cinetron.core.compose import Shot

    seconds, sep, prompt = text.partition(":")
    transition = "continue" if seconds.startswith("+") else "cut"
    try:
        duration = float(seconds.lstrip("+"))
    except ValueError:
        duration = float("nan")
    if not sep or duration != duration:
        raise InvalidArgument("--shot", f"must be SECONDS:PROMPT, got {text!r}")
    return Shot(prompt.strip(), duration, transition)  # type: ignore[arg-type]


def load_storyboard(path: Path):  # type: ignore[no-untyped-def]
    """Shots from a JSON list of ``{"prompt", "duration", "transition"}``."""
    from cinetron.core.compose import Shot

    try:
        rows = json.loads(path.read_text())
        return tuple(
            Shot(str(r["prompt"]), float(r["duration"]), r.get("transition", "cut")) for r in rows
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidArgument("--storyboard", f"{path}: {e}; expected {STORYBOARD_HELP}") from None


def composition(args: argparse.Namespace, base):  # type: ignore[no-untyped-def]
    from cinetron.core.compose import CompositionRequest
    from cinetron.core.conditioning import decode_image
    from cinetron.core.video import decode_mp4

    shots = load_storyboard(args.storyboard) if args.storyboard is not None else ()
    shots += tuple(_parse_shot(s) for s in args.shot or ())
    if shots and not base.prompt:
        base = type(base)(**{**base.__dict__, "prompt": shots[0].prompt})
    return CompositionRequest(
        base=base,
        duration=args.duration,
        shots=shots,
        image=decode_image(args.image.read_bytes()) if args.image else None,
        video=decode_mp4(args.video) if args.video else None,
        strength=args.strength,
        width=args.width,
        height=args.height,
        overlap=args.overlap,
        carry_strength=args.carry_strength,
    )


def generate(
    args: argparse.Namespace, base, connect: Callable[[argparse.Namespace], Transport]
) -> Path:  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    from cinetron.core.compose import Composer, seam_report
    from cinetron.core.conditioning import OnnxEncoder
    from cinetron.core.pipeline import Pipeline, Progress
    from cinetron.core.video import write_gif, write_mp4

    started = time.perf_counter()
    request = composition(args, base)
    with connect(args) as transport:
        encoder = OnnxEncoder(args.repo) if getattr(args, "local", None) == "onnx" else None
        composer = Composer(Pipeline(transport), encoder)
        total = composer.total_steps(request)  # bad input fails before the bar
        bar = tqdm(total=total, unit="step", desc="denoising", disable=args.quiet, file=sys.stderr)

        def on_progress(p: Progress) -> None:
            bar.update(p.step - bar.n)

        try:
            video = composer.generate(request, on_progress=on_progress)
        finally:
            bar.close()
    out = write_mp4(args.out, video.frames, video.fps)
    if args.gif is not None:
        write_gif(args.gif, video.frames, video.fps)
    n, h, w, _ = video.frames.shape
    print(
        f"wrote {out} ({n} frames = {n / video.fps:.1f} s, {w}x{h}, {video.fps} fps; "
        f"{len(video.windows)} windows, {len(video.shot_starts)} shots, seed={video.request.seed}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    if request.image is not None:
        print(f"first frame PSNR vs --image: {psnr(video.frames[0], request.image):.1f} dB")
    if args.seams and video.seams:
        print(seam_report(video).line())
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))
