"""``cinetron eval``: generate a video per prompt and score it with the procedural judge.

Prompt sets (deterministic, built from ``cinetron.models.captions``):
- ``held-out``: every attribute combination training never saw, in training-style wording;
- ``paraphrase``: the same combinations in sentence shapes training never saw
  (``EVAL_TEMPLATES``) — the "unseen" set: held-out combinations × unseen wording;
- ``train``: combinations seen in training (a sanity check);
- ``two-objects``: 40 pairs of training triples with distinct colours, half with a stated
  relation ("a red circle to the left of a blue square"), and 4 identical twins;
- ``two-objects-unseen``: the same kind of pairs in sentence shapes training never saw
  (``EVAL_PAIR_TEMPLATES``);
- ``long``: 10 training combinations moving left, right, up, down or still, each a
  30-second video judged in 2-second windows.
A JSONL file works too: rows of ``{"prompt": ..., "attributes": [bg, colour, shape,
motion]}``, or ``{"prompt": ..., "background": bg, "objects": [[colour, shape, motion],
...], "relation": "left of" | null}``; either may add ``"seed"`` and ``"duration"``
(seconds: a long video).

One video per prompt judges a 46-prompt set to about +-7 points; ``--seeds 4`` generates
each prompt with four seeds so that a change of a few points can be told from noise.
Each table ends with the 95% (Wilson) interval of its "all" accuracy; the long-video
table gives one per column, over frames or windows — those of one video are not
independent, so read them as a lower bound on the uncertainty.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cinetron.core.errors import InvalidArgument
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.core.schedulers import SCHEDULERS
from cinetron.models import captions, world
from cinetron.tools.exits import read_input, run
from cinetron.tools.judge import (
    LongSummary,
    SceneMatch,
    Triple,
    judge,
    judge_scene,
    judge_windows,
    match_scene,
)
from cinetron.transports import TransportKind, open_transport

ATTRIBUTES = ("background", "color", "shape", "motion")
PROMPT_SETS = ("held-out", "paraphrase", "train", "two-objects", "two-objects-unseen", "long")
SEEDS = {s: i + 1 for i, s in enumerate(PROMPT_SETS)}  # one generator per set
PAIR_PROMPTS, PAIR_RELATED, PAIR_TWINS = 40, 20, 4
LONG_MOTIONS = ("left", "right", "up", "down", "still")
LONG_PER_MOTION = 2
LONG_SECONDS = 30.0

Attributes = tuple[str, str, str, str]
Kind = Literal["single", "pair", "long"]


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt and what its video must show: a background and one or more objects
    ((colour, shape, motion) each), the first's ``relation`` to the second if the prompt
    states one, and ``duration`` seconds for a long video (None: one clip)."""

    prompt: str
    background: str
    objects: tuple[Triple, ...]
    seed: int
    relation: str | None = None
    duration: float | None = None

    @classmethod
    def single(
        cls, prompt: str, attributes: Attributes, seed: int, duration: float | None = None
    ) -> EvalPrompt:
        background, color, shape, motion = attributes
        return cls(prompt, background, ((color, shape, motion),), seed, None, duration)

    @property
    def attributes(self) -> Attributes:
        """(background, colour, shape, motion) of a one-object prompt."""
        if len(self.objects) != 1:
            raise ValueError(f"a prompt of {len(self.objects)} objects has no single attributes")
        return (self.background, *self.objects[0])

    @property
    def kind(self) -> Kind:
        if self.duration is not None:
            return "long"
        return "pair" if len(self.objects) > 1 else "single"


def prompt_set(name: str, limit: int | None = None) -> list[EvalPrompt]:
    """The named set (``PROMPT_SETS``), the same every time; its first ``limit`` prompts."""
    rng = np.random.default_rng(SEEDS[name])
    if name in ("two-objects", "two-objects-unseen"):
        prompts = _pair_prompts(rng, held_out_wording=name == "two-objects-unseen")
    elif name == "long":
        prompts = _long_prompts(rng)
    else:
        prompts = _single_prompts(rng, name)
    return prompts[:limit] if limit else prompts


def _single_prompts(rng: np.random.Generator, name: str) -> list[EvalPrompt]:
    if name == "train":
        combos = captions.train_combinations()
        combos = [
            combos[i] for i in rng.permutation(len(combos))[: len(captions.held_out_combinations())]
        ]
    else:
        combos = captions.held_out_combinations()
    templates = captions.EVAL_TEMPLATES if name == "paraphrase" else captions.TRAIN_TEMPLATES
    return [
        EvalPrompt.single(captions.caption(rng, a, templates), a, seed=1000 + i)
        for i, a in enumerate(combos)
    ]


def _pair_prompts(rng: np.random.Generator, held_out_wording: bool) -> list[EvalPrompt]:
    """Pairs of training triples as training shows them: distinct colours (both unlike the
    background), the first ``PAIR_RELATED`` with a relation (each in turn), the last
    ``PAIR_TWINS`` identical twins."""
    triples = captions.train_triples()
    backgrounds = list(world.BACKGROUNDS)
    out = []
    for i in range(PAIR_PROMPTS):
        twin = i >= PAIR_PROMPTS - PAIR_TWINS
        relation = world.RELATIONS[i % len(world.RELATIONS)] if i < PAIR_RELATED else None
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        first, second = _two_triples(rng, triples, background, twin)
        text = captions.pair_caption(
            rng, background, first, second, relation, held_out=held_out_wording
        )
        out.append(EvalPrompt(text, background, (first, second), 1000 + i, relation))
    return out


def _two_triples(
    rng: np.random.Generator, triples: list[Triple], background: str, twin: bool
) -> tuple[Triple, Triple]:
    allowed = [t for t in triples if world.valid_combination(background, t[0])]
    first = allowed[int(rng.integers(len(allowed)))]
    if twin:
        return first, first
    others = [t for t in allowed if t[0] != first[0]]
    return first, others[int(rng.integers(len(others)))]


def _long_prompts(rng: np.random.Generator) -> list[EvalPrompt]:
    """Training combinations, ``LONG_PER_MOTION`` per motion of ``LONG_MOTIONS``: what a
    long video must keep (one object, on for ever on the torus) rather than new words."""
    combos = captions.train_combinations()
    out = []
    for i, motion in enumerate(LONG_MOTIONS * LONG_PER_MOTION):
        choices = [c for c in combos if c[3] == motion]
        attributes = choices[int(rng.integers(len(choices)))]
        text = captions.caption(rng, attributes)
        out.append(EvalPrompt.single(text, attributes, 1000 + i, duration=LONG_SECONDS))
    return out


def with_seeds(prompts: list[EvalPrompt], seeds: int) -> list[EvalPrompt]:
    """Each prompt ``seeds`` times, with seeds ``seed, seed + 1_000_000, ...`` (disjoint sets)."""
    return [
        dataclasses.replace(p, seed=p.seed + k * 1_000_000) for k in range(seeds) for p in prompts
    ]


ROW_FORMAT = (
    '{"prompt": "...", "attributes": [background, colour, shape, motion]} or '
    '{"prompt": "...", "background": "...", "objects": [[colour, shape, motion], ...], '
    '"relation": "left of" | null}'
)


def _row_prompt(row: dict[str, Any], line: int) -> EvalPrompt:
    seed = int(row.get("seed", 1000 + line))
    duration = None if row.get("duration") is None else float(row["duration"])
    if "attributes" in row:
        values = [str(a) for a in row["attributes"]]
        if len(values) != 4:
            raise ValueError(f"attributes has {len(values)} values, not 4")
        background, color, shape, motion = values
        return EvalPrompt.single(
            str(row["prompt"]), (background, color, shape, motion), seed, duration
        )
    listed = [[str(v) for v in o] for o in row["objects"]]
    if not listed or any(len(o) != 3 for o in listed):
        raise ValueError("objects must be one or more [colour, shape, motion]")
    objects = tuple((c, s, m) for c, s, m in listed)
    relation = row.get("relation")
    if relation is not None and (relation not in world.RELATIONS or len(objects) < 2):
        raise ValueError(
            f"relation {relation!r} needs two objects and one of {', '.join(world.RELATIONS)}"
        )
    return EvalPrompt(str(row["prompt"]), str(row["background"]), objects, seed, relation, duration)


def load_prompts(path: Path) -> list[EvalPrompt]:
    out = []
    text = read_input("--prompts", path).decode("utf-8", errors="replace")
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise TypeError(f"a row is a JSON object, got {type(row).__name__}")
            out.append(_row_prompt(row, i))
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgument(
                "--prompts", f"{path} line {i + 1}: {e}; expected {ROW_FORMAT}"
            ) from None
    return out


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of ``hits`` / ``n`` (sound for small n and p near 0 or 1)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Score:
    """One-object prompts: each attribute, and all four together."""

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
        """Wilson score interval of the all-four accuracy."""
        return wilson(self.all_correct, self.total, z)

    def summary(self) -> dict[str, object]:
        return self.row() | {"videos": self.total, "all_95": self.interval()}


@dataclass
class SceneScore:
    """Two-object prompts: the background per video; colour, shape and motion per object;
    the relation over the videos whose prompt states one; and "all" of it per video."""

    total: int = 0
    objects: int = 0
    related: int = 0
    hits: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("background", *ATTRIBUTES[1:], "relation"), 0)
    )
    all_correct: int = 0

    def add(self, match: SceneMatch) -> None:
        self.total += 1
        self.objects += len(match.color)
        self.hits["background"] += match.background
        for name in ATTRIBUTES[1:]:
            self.hits[name] += sum(getattr(match, name))
        if match.relation is not None:
            self.related += 1
            self.hits["relation"] += match.relation
        self.all_correct += match.all

    def row(self) -> dict[str, float]:
        per = {"background": self.total, "relation": self.related}
        row = {k: v / max(1, per.get(k, self.objects)) for k, v in self.hits.items()}
        return row | {"all": self.all_correct / max(1, self.total)}

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson score interval of the "all" accuracy."""
        return wilson(self.all_correct, self.total, z)

    def summary(self) -> dict[str, object]:
        return self.row() | {
            "videos": self.total,
            "objects": self.objects,
            "relation_videos": self.related,
            "all_95": self.interval(),
        }


LONG_COLUMNS = {  # column → (count, over)
    "frames present": ("present", "frames"),
    "identity-right windows": ("identity", "windows"),
    "asked-motion windows": ("asked_motion", "windows"),
    "wrong-motion windows": ("wrong_motion", "windows"),
}


@dataclass
class LongScore:
    """Long videos: summed over every video's frames and 2-second windows."""

    total: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("frames", "present", "windows", "identity", "asked_motion", "wrong_motion"), 0
        )
    )

    def add(self, summary: LongSummary) -> None:
        self.total += 1
        for name in self.counts:
            self.counts[name] += getattr(summary, name)

    def row(self) -> dict[str, float]:
        return {c: self.counts[k] / max(1, self.counts[n]) for c, (k, n) in LONG_COLUMNS.items()}

    def intervals(self, z: float = 1.96) -> dict[str, tuple[float, float]]:
        return {c: wilson(self.counts[k], self.counts[n], z) for c, (k, n) in LONG_COLUMNS.items()}

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson score interval of the asked-motion share of windows."""
        return self.intervals(z)["asked-motion windows"]

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {**self.row()}
        out |= {f"{c} 95": i for c, i in self.intervals().items()}
        return out | {"videos": self.total} | {k: self.counts[k] for k in ("frames", "windows")}


SetScore = Score | SceneScore | LongScore


def _request(p: EvalPrompt, settings: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest(p.prompt, seed=p.seed, duration=p.duration, **settings)


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
    """Score one-object prompts, one clip each."""
    settings = {"steps": steps, "guidance": guidance, "scheduler": scheduler, "shift": shift}
    score = Score()
    for p in prompts:
        verdict = judge(pipeline.generate(_request(p, settings)).frames)
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


def evaluate_scenes(
    pipeline: Pipeline,
    prompts: list[EvalPrompt],
    settings: dict[str, Any],
    failures: list[dict[str, object]] | None = None,
) -> SceneScore:
    """Score prompts of several objects (and a relation), one clip each."""
    score = SceneScore()
    for p in prompts:
        verdict = judge_scene(pipeline.generate(_request(p, settings)).frames, len(p.objects))
        match = match_scene(verdict, p.background, p.objects, p.relation)
        score.add(match)
        if failures is not None and not match.all:
            failures.append(
                {
                    "prompt": p.prompt,
                    "seed": p.seed,
                    "expected": {
                        "background": p.background,
                        "objects": p.objects,
                        "relation": p.relation,
                    },
                    "got": {  # in the asked order, as the judged objects were paired
                        "background": verdict.background,
                        "objects": [verdict.objects[i].attributes for i in match.pairing],
                        "relation": match.judged_relation,
                    },
                    "refused": verdict.problem,
                }
            )
    return score


def evaluate_long(
    pipeline: Pipeline,
    prompts: list[EvalPrompt],
    settings: dict[str, Any],
    failures: list[dict[str, object]] | None = None,
) -> LongScore:
    """Score one-object prompts as long videos, window by window."""
    score = LongScore()
    for p in prompts:
        verdict = judge_windows(pipeline.generate(_request(p, settings)).frames)
        summary = verdict.summary(p.attributes)
        score.add(summary)
        perfect = summary.present == summary.frames and (
            summary.identity == summary.asked_motion == summary.windows
        )
        if failures is not None and not perfect:
            failures.append(
                {
                    "prompt": p.prompt,
                    "seed": p.seed,
                    "expected": p.attributes,
                    "summary": dataclasses.asdict(summary),
                    "windows": [w.attributes for w in verdict.windows],
                    "refused": [w.problem for w in verdict.windows],
                }
            )
    return score


def evaluate_set(
    pipeline: Pipeline,
    prompts: list[EvalPrompt],
    settings: dict[str, Any],
    failures: list[dict[str, object]] | None = None,
) -> SetScore:
    """Score a set whose prompts are all of one kind (``EvalPrompt.kind``)."""
    kinds = {p.kind for p in prompts}
    if len(kinds) != 1:
        raise ValueError(f"a set holds one kind of prompt, got {sorted(kinds)}")
    kind = kinds.pop()
    if kind == "pair":
        return evaluate_scenes(pipeline, prompts, settings, failures)
    if kind == "long":
        return evaluate_long(pipeline, prompts, settings, failures)
    return evaluate(pipeline, prompts, **settings, failures=failures)


def _cell(share: float) -> str:
    return f"{100 * share:.1f}%"


def _span(interval: tuple[float, float]) -> str:
    return f"{100 * interval[0]:.0f}–{100 * interval[1]:.0f}%"


def _single_table(rows: dict[str, Score]) -> list[str]:
    header = f"| prompt set | videos | {' | '.join(ATTRIBUTES)} | all four | 95% interval |"
    lines = [header, "|" + "---|" * (len(ATTRIBUTES) + 4)]
    for name, score in rows.items():
        r = score.row()
        cells = " | ".join(_cell(r[a]) for a in ATTRIBUTES)
        lines.append(
            f"| {name} | {score.total} | {cells} | **{_cell(r['all'])}** "
            f"| {_span(score.interval())} |"
        )
    return lines


def _scene_table(rows: dict[str, SceneScore]) -> list[str]:
    lines = [
        "| prompt set | videos | background | colour | shape | motion | relation | all "
        "| 95% interval |",
        "|" + "---|" * 9,
    ]
    for name, score in rows.items():
        r = score.row()
        relation = f"{_cell(r['relation'])} of {score.related}" if score.related else "–"
        cells = " | ".join(_cell(r[k]) for k in ("background", *ATTRIBUTES[1:]))
        lines.append(
            f"| {name} | {score.total} | {cells} | {relation} | **{_cell(r['all'])}** "
            f"| {_span(score.interval())} |"
        )
    return lines


def _long_table(rows: dict[str, LongScore]) -> list[str]:
    lines = [
        f"| prompt set | videos | {' | '.join(LONG_COLUMNS)} |",
        "|" + "---|" * (len(LONG_COLUMNS) + 2),
    ]
    for name, score in rows.items():
        r, spans = score.row(), score.intervals()
        cells = " | ".join(f"{_cell(r[c])} ({_span(spans[c])})" for c in LONG_COLUMNS)
        lines.append(f"| {name} | {score.total} | {cells} |")
    return lines


def format_table(rows: dict[str, SetScore]) -> str:
    """One Markdown table per kind of set present (one object, two objects, long)."""
    single = {n: s for n, s in rows.items() if isinstance(s, Score)}
    scenes = {n: s for n, s in rows.items() if isinstance(s, SceneScore)}
    long = {n: s for n, s in rows.items() if isinstance(s, LongScore)}
    tables = [
        *([_single_table(single)] if single else []),
        *([_scene_table(scenes)] if scenes else []),
        *([_long_table(long)] if long else []),
    ]
    return "\n\n".join("\n".join(t) for t in tables)


def headline(score: SetScore) -> str:
    """The one number a set is watched by, as a progress line says it."""
    if isinstance(score, LongScore):
        return f"{_cell(score.row()['asked-motion windows'])} of windows with the asked motion"
    label = "all four" if isinstance(score, Score) else "all"
    return f"{_cell(score.row()['all'])} {label} correct"


PROG = "cinetron eval"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sets",
        nargs="+",
        default=["held-out", "paraphrase", "train"],
        choices=PROMPT_SETS,
        help="prompt sets (default: the three one-object sets; paraphrase is the unseen one)",
    )
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


FILE_SET: dict[Kind, str] = {"single": "file", "pair": "file: two objects", "long": "file: long"}


def by_kind(prompts: list[EvalPrompt]) -> dict[str, list[EvalPrompt]]:
    """A prompt file's rows as sets of one kind each (``FILE_SET`` names them)."""
    out: dict[str, list[EvalPrompt]] = {}
    for p in prompts:
        out.setdefault(FILE_SET[p.kind], []).append(p)
    return out


def run_eval(args: argparse.Namespace) -> None:
    if args.seeds < 1:
        raise InvalidArgument("--seeds", f"must be at least 1, got {args.seeds}")
    if args.limit is not None and args.limit < 1:
        raise InvalidArgument("--limit", f"must be at least 1, got {args.limit}")
    sets = (
        by_kind(load_prompts(args.prompts))
        if args.prompts
        else {name: prompt_set(name, args.limit) for name in args.sets}
    )
    if not sets:
        raise InvalidArgument("--prompts", f"{args.prompts} holds no prompt; expected {ROW_FORMAT}")
    sets = {name: with_seeds(prompts, args.seeds) for name, prompts in sets.items()}
    settings = {
        "steps": args.steps,
        "guidance": args.guidance,
        "scheduler": args.scheduler,
        "shift": args.shift,
    }
    results: dict[str, SetScore] = {}
    failures: list[dict[str, object]] = []
    kind: TransportKind = args.local or "triton"  # the same choice as `cinetron generate`
    with open_transport(kind, url=args.url, repo=args.repo) as transport:
        pipeline = Pipeline(transport)
        probe = sets[next(iter(sets))][0].prompt  # the settings fail now, not after a set
        pipeline.plan(GenerationRequest(probe, **settings))
        for name, prompts in sets.items():
            results[name] = evaluate_set(pipeline, prompts, settings, failures)
            print(f"{name}: {headline(results[name])}", file=sys.stderr)
    print(format_table(results))
    if args.json:
        payload = {name: score.summary() for name, score in results.items()}
        args.json.write_text(
            json.dumps({"results": payload, "failures": failures}, indent=2) + "\n"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 with a usage line on malformed options
    return run(PROG, lambda: run_eval(args))
