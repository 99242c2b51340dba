"""``cinetron eval``: generate a video per prompt and score it with the procedural judge.

Prompt sets (deterministic, built from ``cinetron.models.captions``):
- ``held-out``: every attribute combination training never saw, in training-style wording;
- ``paraphrase``: the same combinations in sentence shapes training never saw;
- ``train``: combinations seen in training (a sanity check).
A JSONL file of ``{"prompt": ..., "attributes": [bg, colour, shape, motion]}`` works too.

One video per prompt judges a 46-prompt set to about +-7 points; ``--seeds 4`` generates each
prompt with four seeds so that a change of a few points can be told from noise. The table's
last column is the 95% (Wilson) interval of the all-four accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cinetron.core.errors import InvalidArgument
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.core.schedulers import SCHEDULERS
from cinetron.models import captions
from cinetron.tools.exits import read_input, run
from cinetron.tools.judge import judge
from cinetron.transports import TransportKind, open_transport

ATTRIBUTES = ("background", "color", "shape", "motion")
PROMPT_SETS = ("held-out", "paraphrase", "train")


@dataclass(frozen=True)
class EvalPrompt:
    prompt: str
    attributes: tuple[str, str, str, str]
    seed: int


def prompt_set(name: str, limit: int | None = None) -> list[EvalPrompt]:
    rng = np.random.default_rng({"held-out": 1, "paraphrase": 2, "train": 3}[name])
    if name == "train":
        combos = captions.train_combinations()
        combos = [
            combos[i] for i in rng.permutation(len(combos))[: len(captions.held_out_combinations())]
        ]
    else:
        combos = captions.held_out_combinations()
    templates = captions.EVAL_TEMPLATES if name == "paraphrase" else captions.TRAIN_TEMPLATES
    prompts = [
        EvalPrompt(captions.caption(rng, a, templates), a, seed=1000 + i)
        for i, a in enumerate(combos)
    ]
    return prompts[:limit] if limit else prompts


def with_seeds(prompts: list[EvalPrompt], seeds: int) -> list[EvalPrompt]:
    """Each prompt ``seeds`` times, with seeds ``seed, seed + 1_000_000, ...`` (disjoint sets)."""
    return [
        dataclasses.replace(p, seed=p.seed + k * 1_000_000) for k in range(seeds) for p in prompts
    ]


def load_prompts(path: Path) -> list[EvalPrompt]:
    out = []
    text = read_input("--prompts", path).decode("utf-8", errors="replace")
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            attributes = tuple(str(a) for a in row["attributes"])
            seed = int(row.get("seed", 1000 + i))
            out.append(EvalPrompt(str(row["prompt"]), attributes, seed))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgument(
                "--prompts",
                f"{path} line {i + 1}: {e}; expected "
                '{"prompt": "...", "attributes": [background, colour, shape, motion]}',
            ) from None
    return out


@dataclass
class Score:
    total: int = 0
    correct: dict[str, int] | None = None
    all_correct: int = 0

    def add(self, expected: Iterable[str], got: Iterable[str]) -> None:
        self.correct = self.correct or dict.fromkeys(ATTRIBUTES, 0)
        hits = [e == g for e, g in zip(expected, got, strict=True)]
        for name, hit in zip(ATTRIBUTES, hits, strict=True):
            self.correct[name] += hit
        self.all_correct += all(hits)
        self.total += 1

    def row(self) -> dict[str, float]:
        correct = self.correct or dict.fromkeys(ATTRIBUTES, 0)
        n = max(1, self.total)
        return {**{k: v / n for k, v in correct.items()}, "all": self.all_correct / n}

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson score interval of the all-four accuracy (sound for small n and p near 0/1)."""
        n = self.total
        if n == 0:
            return 0.0, 1.0
        p = self.all_correct / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(
    pipeline: Pipeline,
    prompts: list[EvalPrompt],
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    shift: float | None = None,
    *,
    failures: list[dict[str, object]] | None = None,
) -> Score:
    score = Score()
    for p in prompts:
        video = pipeline.generate(
            GenerationRequest(
                p.prompt,
                seed=p.seed,
                steps=steps,
                guidance=guidance,
                scheduler=scheduler,
                shift=shift,
            )
        )
        verdict = judge(video.frames)
        score.add(p.attributes, verdict.attributes)
        if failures is not None and verdict.attributes != p.attributes:
            failures.append(
                {
                    "prompt": p.prompt,
                    "seed": p.seed,
                    "expected": p.attributes,
                    "got": verdict.attributes,
                    "refused": verdict.problem,
                }
            )
    return score


def format_table(rows: dict[str, Score]) -> str:
    header = f"| prompt set | videos | {' | '.join(ATTRIBUTES)} | all four | 95% interval |"
    lines = [header, "|" + "---|" * (len(ATTRIBUTES) + 4)]
    for name, score in rows.items():
        r = score.row()
        lo, hi = score.interval()
        cells = " | ".join(f"{100 * r[a]:.1f}%" for a in ATTRIBUTES)
        lines.append(
            f"| {name} | {score.total} | {cells} | **{100 * r['all']:.1f}%** "
            f"| {100 * lo:.0f}–{100 * hi:.0f}% |"
        )
    return "\n".join(lines)


PROG = "cinetron eval"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sets", nargs="+", default=list(PROMPT_SETS), choices=PROMPT_SETS)
    p.add_argument("--prompts", type=Path, help="a JSONL prompt file instead of --sets")
    p.add_argument("--limit", type=int, help="first N prompts of each set")
    p.add_argument("--local", choices=("torch", "onnx"), help="run in-process instead of Triton")
    p.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    p.add_argument("--repo", type=Path, default=Path("model_repository"))
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--scheduler", choices=list(SCHEDULERS))
    p.add_argument("--shift", type=float)
    p.add_argument("--seeds", type=int, default=1, help="videos per prompt, each its own seed")
    p.add_argument("--json", type=Path, help="also write results (and failures) as JSON")
    return p


def run_eval(args: argparse.Namespace) -> None:
    if args.seeds < 1:
        raise InvalidArgument("--seeds", f"must be at least 1, got {args.seeds}")
    if args.limit is not None and args.limit < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {args.limit}")
    sets = (
        {"file": load_prompts(args.prompts)}
        if args.prompts
        else {name: prompt_set(name, args.limit) for name in args.sets}
    )
    sets = {name: with_seeds(prompts, args.seeds) for name, prompts in sets.items()}
    settings = {
        "steps": args.steps,
        "guidance": args.guidance,
        "scheduler": args.scheduler,
        "shift": args.shift,
    }
    results: dict[str, Score] = {}
    failures: list[dict[str, object]] = []
    kind: TransportKind = args.local or "triton"  # the same choice as `cinetron generate`
    with open_transport(kind, url=args.url, repo=args.repo) as transport:
        pipeline = Pipeline(transport)
        probe = sets[next(iter(sets))][0].prompt  # the settings fail now, not after a set
        pipeline.plan(GenerationRequest(probe, **settings))
        for name, prompts in sets.items():
            score = evaluate(pipeline, prompts, **settings, failures=failures)
            results[name] = score
            print(f"{name}: {100 * score.row()['all']:.1f}% all four correct", file=sys.stderr)
    print(format_table(results))
    if args.json:
        payload = {
            name: score.row() | {"videos": score.total, "all_95": score.interval()}
            for name, score in results.items()
        }
        args.json.write_text(
            json.dumps({"results": payload, "failures": failures}, indent=2) + "\n"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 with a usage line on malformed options
    return run(PROG, lambda: run_eval(args))
