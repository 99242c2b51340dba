"""The evaluator's prompt sets and scoring, with the world's renderer standing in for the
model: a "pipeline" that draws exactly what each prompt asks must score 100%, so every
miss in a real run is the model's, not the evaluator's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from test_world_and_judge import long_video

from cinetron.core.errors import InvalidArgument
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.models import captions, world
from cinetron.tools.evaluate import (
    PROMPT_SETS,
    EvalPrompt,
    LongScore,
    SceneScore,
    Score,
    by_kind,
    evaluate_set,
    format_table,
    load_prompts,
    prompt_set,
    with_seeds,
)


def _fits(text: str, templates: list[str]) -> bool:
    """Whether ``text`` is one of ``templates`` with its placeholders filled in."""
    for t in templates:
        pattern = "".join(
            ".+" if re.fullmatch(r"\{[A-Za-z0-9]+\}", part) else re.escape(part)
            for part in re.split(r"(\{[A-Za-z0-9]+\})", t)
        )
        if re.fullmatch(pattern, text[0].lower() + text[1:]):
            return True
    return False


@pytest.mark.parametrize("name", PROMPT_SETS)
def test_every_prompt_set_is_the_same_every_time_with_distinct_prompts(name: str) -> None:
    prompts = prompt_set(name)
    assert prompts == prompt_set(name)
    assert len({p.prompt for p in prompts}) == len(prompts)
    assert len({p.kind for p in prompts}) == 1
    for p in prompts:
        assert all(world.valid_combination(p.background, c) for c, _, _ in p.objects)


def test_paraphrase_is_the_unseen_set_held_out_combinations_in_unseen_wording() -> None:
    prompts = prompt_set("paraphrase")
    assert {p.attributes for p in prompts} == set(captions.held_out_combinations())
    assert all(_fits(p.prompt, captions.EVAL_TEMPLATES) for p in prompts)


def test_two_object_sets_pair_training_triples_half_of_them_related() -> None:
    train = set(captions.train_triples())
    trained_shapes = [
        *captions.PAIR_TEMPLATES,
        *captions.PAIR_RELATION_TEMPLATES,
        *captions.TWIN_TEMPLATES,
    ]
    for name, templates in (
        ("two-objects", trained_shapes),
        ("two-objects-unseen", captions.EVAL_PAIR_TEMPLATES),
    ):
        prompts = prompt_set(name)
        assert len(prompts) == 40 and {p.kind for p in prompts} == {"pair"}
        twins = [p for p in prompts if p.objects[0] == p.objects[1]]
        assert len(twins) == 4 and all(p.relation is None for p in twins)
        others = [p for p in prompts if p not in twins]
        assert all(p.objects[0][0] != p.objects[1][0] for p in others)
        assert sum(p.relation is not None for p in prompts) == 20
        assert {p.relation for p in prompts} == {*world.RELATIONS, None}
        assert all(set(p.objects) <= train for p in prompts)
        assert all(_fits(p.prompt, templates) for p in prompts), name
        unseen = name == "two-objects-unseen"
        assert all(_fits(p.prompt, captions.EVAL_PAIR_TEMPLATES) == unseen for p in prompts)


def test_long_set_asks_each_translation_and_still_for_thirty_seconds() -> None:
    prompts = prompt_set("long")
    assert {p.kind for p in prompts} == {"long"} and {p.duration for p in prompts} == {30.0}
    motions = [p.attributes[3] for p in prompts]
    assert sorted(set(motions)) == sorted(["left", "right", "up", "down", "still"])
    assert all(motions.count(m) == 2 for m in set(motions))
    assert all(p.attributes in captions.train_combinations() for p in prompts)


class _Video:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames


class _Renderer:
    """Draws what each prompt asks (looked up by its text), as a perfect model would."""

    def __init__(self, prompts: list[EvalPrompt]) -> None:
        self.asked = {p.prompt: p for p in prompts}
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> _Video:
        self.requests.append(request)
        p = self.asked[str(request.prompt)]
        rng = np.random.default_rng(p.seed)
        if p.kind == "pair":
            first, second = p.objects
            pair = world.sample_pair(rng, p.background, first, second, p.relation)
            return _Video(world.render(pair))
        scene = world.sample_scene(rng, *p.attributes, anywhere=p.kind == "long")
        if p.kind == "long":
            windows = round((p.duration or 0) * world.FPS / world.FRAMES)
            return _Video(long_video(scene.things[0], p.background, windows))
        return _Video(world.render(scene))


def _score(prompts: list[EvalPrompt]) -> tuple[Score | SceneScore | LongScore, _Renderer]:
    renderer = _Renderer(prompts)
    failures: list[dict[str, object]] = []
    score = evaluate_set(cast(Pipeline, renderer), prompts, {"steps": 4}, failures)
    assert failures == []
    return score, renderer


def test_a_perfect_two_object_model_scores_every_column_full() -> None:
    score, renderer = _score(prompt_set("two-objects", limit=24))
    assert isinstance(score, SceneScore)
    assert score.total == 24 and score.objects == 48 and score.related == 20
    assert set(score.row().values()) == {1.0}
    assert all(r.steps == 4 and r.duration is None for r in renderer.requests)


def test_a_perfect_long_video_model_keeps_every_window_and_asks_for_thirty_seconds() -> None:
    score, renderer = _score(prompt_set("long", limit=3))
    assert isinstance(score, LongScore)
    assert score.counts["frames"] == 3 * 240 and score.counts["windows"] == 3 * 15
    assert score.row() == {
        "frames present": 1.0,
        "identity-right windows": 1.0,
        "asked-motion windows": 1.0,
        "wrong-motion windows": 0.0,
    }
    assert [r.duration for r in renderer.requests] == [30.0] * 3


def test_the_table_has_one_block_per_kind_and_the_json_summary_serialises() -> None:
    rows = {
        "held-out": _score(prompt_set("held-out", limit=3))[0],
        "two-objects": _score(prompt_set("two-objects", limit=4))[0],
        "long": _score(prompt_set("long", limit=1))[0],
    }
    table = format_table(rows)
    blocks = table.split("\n\n")
    assert len(blocks) == 3
    assert "all four" in blocks[0] and "| held-out | 3 |" in blocks[0]
    assert "| relation |" in blocks[1] and "100.0% of 4" in blocks[1]
    assert "wrong-motion windows" in blocks[2] and "0.0% (0–" in blocks[2]
    payload = json.loads(json.dumps({n: s.summary() for n, s in rows.items()}))
    assert payload["two-objects"]["relation_videos"] == 4
    assert payload["long"]["windows"] == 15


def test_a_missed_relation_is_a_failure_listed_in_the_asked_order(tmp_path: Path) -> None:
    p = prompt_set("two-objects", limit=1)[0]
    assert p.relation == "left of"
    flipped = EvalPrompt(p.prompt, p.background, p.objects, p.seed, "right of")
    renderer = _Renderer([p])  # draws "left of"; the prompt now asks "right of"
    failures: list[dict[str, object]] = []
    score = evaluate_set(cast(Pipeline, renderer), [flipped], {}, failures)
    assert isinstance(score, SceneScore) and score.row()["relation"] == 0.0
    assert score.row()["color"] == 1.0 and score.row()["all"] == 0.0
    assert len(failures) == 1
    got = cast(dict[str, object], failures[0]["got"])
    assert got["relation"] == "left of" and got["objects"] == list(p.objects)


def test_prompt_files_take_both_row_formats_and_split_by_kind(tmp_path: Path) -> None:
    up = ["black", "red", "circle", "up"]
    rows = [
        {"prompt": "a red circle moving up on a black background", "attributes": up},
        {"prompt": "a red circle left of a blue square", "background": "gray",
         "objects": [["red", "circle", "still"], ["blue", "square", "up"]], "relation": "left of"},
        {"prompt": "a red circle moving up, for long", "attributes": up, "duration": 30, "seed": 7},
    ]  # fmt: skip
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sets = by_kind(load_prompts(path))
    assert list(sets) == ["file", "file: two objects", "file: long"]
    pair = sets["file: two objects"][0]
    assert pair.objects == (("red", "circle", "still"), ("blue", "square", "up"))
    assert pair.relation == "left of" and pair.background == "gray"
    assert sets["file: long"][0].duration == 30.0 and sets["file: long"][0].seed == 7
    assert with_seeds(sets["file"], 2)[1].seed == sets["file"][0].seed + 1_000_000


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"prompt": "x", "background": "gray", "objects": [["red", "circle"]]}, "objects must"),
        ({"prompt": "x", "background": "gray", "objects": [["red", "circle", "up"]] * 2,
          "relation": "left"}, "relation 'left' needs"),
        ({"prompt": "x", "attributes": ["gray", "red"]}, "attributes has 2 values"),
        ({"prompt": "x"}, "'objects'"),
    ],
)  # fmt: skip
def test_a_bad_prompt_row_says_which_line_and_what_was_expected(
    tmp_path: Path, row: dict[str, object], fragment: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(InvalidArgument) as e:
        load_prompts(path)
    message = str(e.value)
    assert "line 2" in message and fragment in message and '"objects"' in message
