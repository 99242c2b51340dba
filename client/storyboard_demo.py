"""``make storyboard-demo``: a 60 s, 4-shot storyboard through Triton, judged shot by shot.

Writes ``outputs/storyboard.mp4`` and prints, as Markdown tables (recorded in
docs/beyond-one-clip.md):

- per-shot accuracy: every shot is cut into consecutive clips of the model's length
  (``F`` frames; a shorter tail is dropped) and each clip is judged on its own; the
  accuracy of an attribute is the share of the shot's clips judged right;
- seam quality: mean absolute frame difference at window seams vs inside windows;
- image-to-video: PSNR of the first frame against the given image.

Starts its own tritonserver on the exported repository unless ``--url`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from cinetron.client.evaluate import ATTRIBUTES, Score
from cinetron.client.judge import judge
from cinetron.client.longvideo import (
    Composer,
    CompositionRequest,
    LongVideo,
    Shot,
    Transition,
    seam_report,
)
from cinetron.client.pipeline import Pipeline
from cinetron.client.request import GenerationRequest

Attributes = tuple[str, str, str, str]

# One red circle through four shots: it moves right, turns back without a cut, then two
# cuts to other backgrounds. 4 × 15 s = 60 s at 8 fps = 480 frames.
DEMO_SHOTS: tuple[tuple[Attributes, float, Transition], ...] = (
    (("black", "red", "circle", "right"), 15.0, "cut"),
    (("black", "red", "circle", "left"), 15.0, "continue"),
    (("white", "red", "circle", "still"), 15.0, "cut"),
    (("gray", "red", "circle", "grows"), 15.0, "cut"),
)


def caption(attributes: Attributes) -> str:
    from cinetron.models.captions import canonical_caption

    return canonical_caption(attributes)


def demo_shots() -> tuple[Shot, ...]:
    return tuple(Shot(caption(a), d, t) for a, d, t in DEMO_SHOTS)


def shot_segments(video: LongVideo) -> list[np.ndarray]:
    """The frames of each shot ``[N_s, H, W, 3]``."""
    ends = [*video.shot_starts[1:], len(video.frames)]
    return [video.frames[s:e] for s, e in zip(video.shot_starts, ends, strict=True)]


def judge_shot(frames: np.ndarray, expected: Attributes, clip: int) -> Score:
    """Judge every whole ``clip``-frame piece of a shot against ``expected``."""
    score = Score()
    for start in range(0, len(frames) - clip + 1, clip):
        score.add(expected, judge(frames[start : start + clip]).attributes)
    return score


def shot_table(video: LongVideo, expected: list[Attributes], clip: int) -> str:
    lines = [
        f"| shot | prompt | clips | {' | '.join(ATTRIBUTES)} | all four |",
        "|" + "---|" * (len(ATTRIBUTES) + 4),
    ]
    for i, (frames, attrs) in enumerate(zip(shot_segments(video), expected, strict=True)):
        row = judge_shot(frames, attrs, clip).row()
        cells = " | ".join(f"{100 * row[a]:.0f}%" for a in ATTRIBUTES)
        first = judge_shot(frames[:clip], attrs, clip).row()["all"]
        lines.append(
            f"| {i + 1} | {caption(attrs)} | {len(frames) // clip} | {cells} | "
            f"**{100 * row['all']:.0f}%** (first clip: {'yes' if first else 'no'}) |"
        )
    return "\n".join(lines)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def image_to_video_psnr(composer: Composer, seeds: range, steps: int | None) -> list[float]:
    """i2v from rendered first frames of the world: PSNR of frame 0 vs the image."""
    from cinetron.models import world

    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        attrs = world.all_combinations()[int(rng.integers(len(world.all_combinations())))]
        image = world.render(world.sample_scene(rng, *attrs))[0]
        base = GenerationRequest(caption(attrs), seed=seed, steps=steps)
        video = composer.generate(CompositionRequest(base, image=image))
        out.append(psnr(video.frames[0], image))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="storyboard-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--url", default=None, help="Triton gRPC host:port (default: start one)")
    p.add_argument("--repo", type=Path, default=Path("model_repository"))
    p.add_argument("--out", type=Path, default=Path("outputs/storyboard.mp4"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--i2v", type=int, default=8, help="image-to-video samples for the PSNR")
    args = p.parse_args(argv)

    from cinetron.client.transports.triton_grpc import TritonGrpcTransport
    from cinetron.client.video import write_mp4

    with ExitStack() as stack:
        url = args.url
        if url is None:
            from cinetron.tritonserver import TritonServer

            server = stack.enter_context(TritonServer(args.repo, ready_timeout=180))
            url = server.grpc_url
        transport = stack.enter_context(TritonGrpcTransport(url))
        composer = Composer(Pipeline(transport))
        started = time.perf_counter()
        request = CompositionRequest(
            GenerationRequest(caption(DEMO_SHOTS[0][0]), seed=args.seed, steps=args.steps),
            shots=demo_shots(),
        )
        video = composer.generate(request)
        seconds = time.perf_counter() - started
        write_mp4(args.out, video.frames, video.fps)
        n = len(video.frames)
        print(
            f"wrote {args.out}: {n} frames = {n / video.fps:.1f} s, {len(video.windows)} windows, "
            f"{len(DEMO_SHOTS)} shots, through Triton at {url}, in {seconds:.1f} s",
            file=sys.stderr,
        )
        print("\n### Per-shot accuracy (judge on each whole clip of the shot)\n")
        clip = transport.manifest.frames
        print(shot_table(video, [a for a, _, _ in DEMO_SHOTS], clip))
        print(f"\n### Seams\n\n{seam_report(video).line()}")
        if args.i2v:
            values = image_to_video_psnr(composer, range(args.i2v), args.steps)
            print(
                f"\n### Image-to-video\n\nfirst-frame PSNR over {len(values)} images: "
                f"mean {np.mean(values):.1f} dB, min {np.min(values):.1f} dB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
