"""``make storyboard-demo``: a 60 s, 4-shot storyboard through Triton, judged shot by shot.

Writes ``outputs/storyboard.mp4`` and prints, as Markdown tables (recorded in
docs/beyond-one-clip.md):

- per-shot accuracy: every shot is cut into consecutive clips of the model's length
  (``F`` frames; a shorter tail is dropped) and each clip is judged on its own; the
  accuracy of an attribute is the share of the shot's clips judged right;
- seam quality: mean absolute frame difference at window seams vs inside windows;
- image-to-video: PSNR of the first frame against the given image;
- extension: rendered clips of every motion extended by one window under a few
  (overlap, carry strength) settings side by side, each extension judged on its last
  clip, with the object's jump at the seam.

Starts its own tritonserver on the exported repository unless ``--url`` is given.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from cinetron.core.blobs import centroid
from cinetron.core.pipeline import Pipeline, Video
from cinetron.core.request import GenerationRequest, Shot, Transition
from cinetron.tools.evaluate import ATTRIBUTES, Score
from cinetron.tools.generate import psnr
from cinetron.tools.judge import judge, object_masks

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


def shot_segments(video: Video) -> list[np.ndarray]:
    """The frames of each shot ``[N_s, H, W, 3]``."""
    ends = [*video.shot_starts[1:], len(video.frames)]
    return [video.frames[s:e] for s, e in zip(video.shot_starts, ends, strict=True)]


def judge_shot(frames: np.ndarray, expected: Attributes, clip: int) -> Score:
    """Judge every whole ``clip``-frame piece of a shot against ``expected``."""
    score = Score()
    for start in range(0, len(frames) - clip + 1, clip):
        score.add(expected, judge(frames[start : start + clip]).attributes)
    return score


def shot_table(video: Video, expected: list[Attributes], clip: int) -> str:
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


def image_to_video_psnr(pipeline: Pipeline, seeds: range, steps: int | None) -> list[float]:
    """i2v from rendered first frames of the world: PSNR of frame 0 vs the image."""
    from cinetron.models import world

    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        attrs = world.all_combinations()[int(rng.integers(len(world.all_combinations())))]
        image = world.render(world.sample_scene(rng, *attrs))[0]
        video = pipeline.generate(
            GenerationRequest(caption(attrs), seed=seed, steps=steps, image=image)
        )
        out.append(psnr(video.frames[0], image))
    return out


# (overlap, carry_strength): the earlier default, each change alone, the default now.
EXTENSION_SETTINGS = ((2, 1.0), (3, 1.0), (2, 0.9), (3, 0.9))
MOTIONS = ("left", "right", "up", "down")
EXTENSION_BACKGROUNDS = ("black", "white", "gray")
EXTENSION_COLORS = ("red", "blue", "green")
EXTENSION_SHAPES = ("circle", "square", "triangle")


def _centre(frame: np.ndarray, background: str) -> np.ndarray | None:
    centre = centroid(object_masks(frame[None], background)[0])
    return None if centre is None else np.array(centre)


def extension_sources(scenes: int, seed: int = 3000) -> list[tuple[Attributes, np.ndarray]]:
    """Rendered clips that move left/right/up/down and end with room to go on
    (≥ 20 px to the edge they head for): an extension can then keep the motion."""
    from cinetron.models import world

    out: list[tuple[Attributes, np.ndarray]] = []
    for k in range(scenes * len(MOTIONS)):
        attrs = (
            EXTENSION_BACKGROUNDS[k % 3],
            EXTENSION_COLORS[(k // 3) % 3],
            EXTENSION_SHAPES[(k // 9) % 3],
            MOTIONS[k % len(MOTIONS)],
        )
        clip = world.render(world.sample_scene(np.random.default_rng(seed + k), *attrs))
        end = _centre(clip[-1], attrs[0])
        if end is None:
            continue
        height, width = clip.shape[1:3]
        x, y = end
        room = {"left": x, "right": width - x, "up": y, "down": height - y}[attrs[3]]
        if room >= 20:
            out.append((attrs, clip))
    return out


def extension_table(pipeline: Pipeline, scenes: int, seeds: int, steps: int | None) -> str:
    sources = extension_sources(scenes)
    lines = [
        f"{len(sources)} rendered clips × {seeds} seeds, one extension window each; judged on "
        "the last clip of the result\n",
        "| overlap | carry strength | motion kept | background, colour, shape kept | "
        "median jump at the seam (px) | s per extension |",
        "|---|---|---|---|---|---|",
    ]
    for overlap, strength in EXTENSION_SETTINGS:
        motion, looks, jumps, started = [], [], [], time.perf_counter()
        for attrs, clip in sources:
            for seed in range(seeds):
                request = GenerationRequest(
                    caption(attrs),
                    seed=seed,
                    steps=steps,
                    video=clip,
                    overlap=overlap,
                    carry_strength=strength,
                )
                video = pipeline.generate(request)
                verdict = judge(video.frames[-len(clip) :])
                motion.append(verdict.motion == attrs[3])
                looks.append((verdict.background, verdict.color, verdict.shape) == attrs[:3])
                a = _centre(video.frames[len(clip) - 1], attrs[0])
                b = _centre(video.frames[len(clip)], attrs[0])
                lost = float(max(clip.shape[1:3]))  # the object vanished: a whole frame
                jumps.append(lost if a is None or b is None else float(np.abs(a - b).max()))
        each = (time.perf_counter() - started) / len(motion)
        lines.append(
            f"| {overlap} | {strength:g} | {np.mean(motion):.0%} | {np.mean(looks):.0%} | "
            f"{np.median(jumps):.1f} | {each:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="storyboard-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--url", default=None, help="Triton gRPC host:port (default: start one)")
    p.add_argument("--repo", type=Path, default=Path("model_repository"))
    p.add_argument("--out", type=Path, default=Path("outputs/storyboard.mp4"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--i2v", type=int, default=8, help="image-to-video samples for the PSNR")
    p.add_argument(
        "--extension-scenes", type=int, default=16, help="rendered clips per motion to extend"
    )
    args = p.parse_args(argv)

    from cinetron.core.video import write_mp4
    from cinetron.transports.triton_grpc import TritonGrpcTransport

    with ExitStack() as stack:
        url = args.url
        if url is None:
            from cinetron.tools.tritonserver import TritonServer

            server = stack.enter_context(TritonServer(args.repo, ready_timeout=180))
            url = server.grpc_url
        transport = stack.enter_context(TritonGrpcTransport(url))
        pipeline = Pipeline(transport)
        started = time.perf_counter()
        request = GenerationRequest(
            caption(DEMO_SHOTS[0][0]), seed=args.seed, steps=args.steps, shots=demo_shots()
        )
        video = pipeline.generate(request)
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
        report = video.seam_report()
        print(f"\n### Seams\n\n{report.line()}")
        if args.i2v:
            values = image_to_video_psnr(pipeline, range(args.i2v), args.steps)
            print(
                f"\n### Image-to-video\n\nfirst-frame PSNR over {len(values)} images: "
                f"mean {np.mean(values):.1f} dB, min {np.min(values):.1f} dB"
            )
        if args.extension_scenes:
            table = extension_table(pipeline, args.extension_scenes, 2, args.steps)
            print(f"\n### Extension (overlap and carry strength side by side)\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
