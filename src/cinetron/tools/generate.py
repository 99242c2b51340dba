"""``cinetron generate "prompt" [options]``: a video from a prompt, over Triton or in-process.

One clip by default; ``--duration``, ``--shot``/``--storyboard``, ``--image``, ``--video``
(``--strength``) and ``--width``/``--height`` make longer or conditioned videos — all one
request, one plan, one sampling loop. Exit codes and errors: ``tools/exits.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cinetron.core.errors import InvalidArgument
from cinetron.core.request import (
    DEFAULT_CARRY_STRENGTH,
    DEFAULT_OVERLAP,
    GenerationRequest,
    Shot,
    Transition,
)
from cinetron.core.schedulers import SCHEDULERS
from cinetron.core.transport import Transport
from cinetron.tools.exits import read_input, run
from cinetron.transports import open_transport

PROG = "cinetron generate"
STORYBOARD_HELP = (
    'JSON file: [{"prompt": "...", "duration": 15, "transition": "cut"|"continue"}, ...]'
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Generate a video from a text prompt and write it as H.264 MP4.",
    )
    p.add_argument("prompt", help='what the video shows, e.g. "a red circle moving left"')
    p.add_argument("--negative-prompt", default=None, help="what to steer away from")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="default 0: the same command makes the same video (the API picks one at random)",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps (model default)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default=None, help="sampler")
    p.add_argument("--shift", type=float, default=None, help="timestep shift (>1: more noise)")
    p.add_argument("--out", type=Path, default=Path("outputs/video.mp4"), help="MP4 path")
    p.add_argument("--gif", type=Path, default=None, help="also write an animated GIF here")
    p.add_argument("--frames-dir", type=Path, default=None, help="also write PNG frames here")
    where = p.add_argument_group("where the models run")
    where.add_argument(
        "--url",
        default=os.environ.get("CINETRON_TRITON_URL", "127.0.0.1:8001"),
        help="Triton gRPC host:port (default: $CINETRON_TRITON_URL or %(default)s)",
    )
    where.add_argument(
        "--shm", action="store_true", help="pass latents through system shared memory (same host)"
    )
    where.add_argument(
        "--local",
        choices=["onnx", "torch"],
        default=None,
        help="run in-process instead of over Triton: the exported ONNX files or torch weights",
    )
    where.add_argument(
        "--repo",
        type=Path,
        default=Path("model_repository"),
        help="model repository for --local onnx (default: %(default)s)",
    )
    where.add_argument("--threads", type=int, default=1, help="threads for --local (default 1)")
    p.add_argument(
        "--judge",
        action="store_true",
        help="shapes model: print what the procedural judge sees in the video",
    )
    p.add_argument("--request-id", default="", help="sent to Triton as the request id")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("beyond one clip (composed from overlapping windows)")
    g.add_argument(
        "--duration",
        type=float,
        default=None,
        help="length of the output in seconds, up to 60 (with --video: input included)",
    )
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
    return p


def parse_shot(text: str) -> Shot:
    seconds, sep, prompt = text.partition(":")
    transition: Transition = "continue" if seconds.startswith("+") else "cut"
    try:
        duration = float(seconds.lstrip("+"))
    except ValueError:
        duration = float("nan")
    if not sep or duration != duration:
        raise InvalidArgument("--shot", f"must be SECONDS:PROMPT, got {text!r}")
    return Shot(prompt.strip(), duration, transition)


def load_storyboard(path: Path) -> tuple[Shot, ...]:
    """Shots from a JSON list of ``{"prompt", "duration", "transition"}``."""
    try:
        rows: list[dict[str, Any]] = json.loads(path.read_text())
        # the transition is checked with every other field, by the plan
        return tuple(
            Shot(str(r["prompt"]), float(r["duration"]), r.get("transition", "cut")) for r in rows
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidArgument("--storyboard", f"{path}: {e}; expected {STORYBOARD_HELP}") from None


def request_from(args: argparse.Namespace) -> GenerationRequest:
    from cinetron.core.video import decode_image, decode_video

    shots = load_storyboard(args.storyboard) if args.storyboard is not None else ()
    shots += tuple(parse_shot(s) for s in args.shot or ())
    image = video = None
    if args.image is not None:
        image = decode_image(read_input("--image", args.image), field="--image")
    if args.video is not None:
        video = decode_video(read_input("--video", args.video), field="--video")
    return GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        shift=args.shift,
        request_id=args.request_id,
        duration=args.duration,
        shots=shots,
        image=image,
        video=video,
        strength=args.strength,
        width=args.width,
        height=args.height,
        overlap=args.overlap,
        carry_strength=args.carry_strength,
    )


def connect(args: argparse.Namespace) -> Transport:
    if args.local is not None:
        if args.shm:
            raise InvalidArgument("--shm", "applies to Triton only; drop it or drop --local")
        return open_transport(args.local, repo=args.repo, threads=args.threads)
    return open_transport("triton-shm" if args.shm else "triton", url=args.url)


def generate(args: argparse.Namespace) -> Path:
    from tqdm import tqdm

    from cinetron.core.pipeline import Pipeline, Progress
    from cinetron.core.video import write_frames, write_gif, write_mp4

    started = time.perf_counter()
    request = request_from(args)
    with connect(args) as transport:
        pipeline = Pipeline(transport)
        plan = pipeline.plan(request)  # bad input fails before the bar
        steps = plan.total_steps
        bar = tqdm(total=steps, unit="step", desc="denoising", disable=args.quiet, file=sys.stderr)

        def on_progress(p: Progress) -> None:
            bar.update(p.step - bar.n)

        try:
            video = pipeline.run(plan, on_progress=on_progress)
        finally:
            bar.close()
    for warning in plan.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    if video.prompt_truncated:
        print(
            f"{PROG}: warning: the prompt has {video.prompt_tokens} tokens and the model reads "
            f"only the first {pipeline.manifest.text_length}; the rest was ignored",
            file=sys.stderr,
        )
    out = write_mp4(args.out, video.frames, video.fps)
    extras = []
    if args.gif is not None:
        extras.append(str(write_gif(args.gif, video.frames, video.fps)))
    if args.frames_dir is not None:
        write_frames(args.frames_dir, video.frames)
        extras.append(f"{args.frames_dir}/frame_*.png")
    if args.judge:
        print(describe(video.frames, pipeline.manifest.family))
    n, h, w, _ = video.frames.shape
    r = video.request
    shape = f"{n} frames = {n / video.fps:.1f} s, {w}x{h}, {video.fps} fps"
    if len(video.windows) > 1 or plan.image is not None or plan.video is not None:
        shape += f"; {len(video.windows)} windows, {len(video.shot_starts)} shots"
    print(
        f"wrote {out} ({shape}; seed={r.seed} steps={r.steps} guidance={r.guidance:g} "
        f"scheduler={r.scheduler}) in {time.perf_counter() - started:.1f} s"
        + "".join(f"\nwrote {e}" for e in extras)
    )
    if plan.image is not None:
        print(f"first frame PSNR vs --image: {psnr(video.frames[0], plan.image):.1f} dB")
    if args.seams and video.seams:
        print(video.seam_report().line())
    return out


def psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def describe(frames: npt.NDArray[np.uint8], family: str) -> str:
    """One line of what the shapes world's judge reads back from the frames."""
    if family != "shapes":
        return f"judge: only the built-in shapes model can be judged (this is {family!r})"
    from cinetron.tools.judge import judge

    v = judge(frames)
    if v.problem is not None:
        return f"judge: refused: {v.problem}"
    return f"judge: background={v.background} color={v.color} shape={v.shape} motion={v.motion}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 with a usage line on malformed options
    return run(PROG, lambda: generate(args))


if __name__ == "__main__":
    sys.exit(main())
