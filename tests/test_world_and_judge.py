"""The procedural world and its judge: the judge must read back what the renderer drew."""

from __future__ import annotations

import numpy as np
import pytest

from cinetron.models import captions, world
from cinetron.tools.judge import judge


def test_judge_reads_back_every_rendered_attribute_combination() -> None:
    rng = np.random.default_rng(0)
    combos = world.all_combinations()
    wrong = []
    for attrs in combos[::3]:
        got = judge(world.render(world.sample_scene(rng, *attrs))).attributes
        if got != attrs:
            wrong.append((attrs, got))
    assert wrong == []


def test_object_stays_inside_the_frame_for_its_whole_path() -> None:
    rng = np.random.default_rng(1)
    for attrs in world.all_combinations()[::5]:
        scene = world.sample_scene(rng, *attrs)
        for x, y, size in world.object_track(scene):
            assert size / 2 <= x <= world.SIZE - size / 2
            assert size / 2 <= y <= world.SIZE - size / 2


def test_object_never_has_the_background_colour() -> None:
    for background, color, _, _ in world.all_combinations():
        assert world.BACKGROUNDS[background] != world.COLORS[color]


def test_judge_refuses_an_empty_clip_saying_there_is_no_object() -> None:
    frames = np.zeros((world.FRAMES, world.SIZE, world.SIZE, 3), np.uint8)
    verdict = judge(frames)
    assert verdict.problem is not None and verdict.problem.startswith("no object")
    assert verdict.shape == "none" and verdict.motion == "none"


def test_held_out_combinations_are_never_in_the_training_split() -> None:
    train = set(captions.train_combinations())
    held = set(captions.held_out_combinations())
    assert held and not train & held
    assert train | held == set(world.all_combinations())


def test_every_attribute_value_still_appears_in_training() -> None:
    train = captions.train_combinations()
    for i, values in enumerate((world.BACKGROUNDS, world.COLORS, world.SHAPES, world.MOTIONS)):
        assert {c[i] for c in train} == set(values)


def test_caption_variety_meets_the_brief() -> None:
    assert len(captions.TRAIN_TEMPLATES) >= 30
    rng = np.random.default_rng(2)
    attrs = ("black", "red", "circle", "left")
    texts = {captions.caption(rng, attrs) for _ in range(300)}
    assert len(texts) > 200


@pytest.mark.parametrize("name", ["circle", "square", "triangle"])
def test_shape_mask_area_matches_geometry(name: str) -> None:
    size = 40.0
    area = world.shape_mask(name, 32, 32, size).sum()
    expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}[name] * size**2
    assert abs(area - expected) / expected < 0.06


def test_eval_seeds_repeat_every_prompt_with_distinct_seeds() -> None:
    from cinetron.tools.evaluate import prompt_set, with_seeds

    prompts = prompt_set("held-out", limit=5)
    repeated = with_seeds(prompts, 3)
    assert len(repeated) == 15
    assert len({p.seed for p in repeated}) == 15
    assert [p.prompt for p in repeated[5:10]] == [p.prompt for p in prompts]


def test_eval_interval_brackets_the_accuracy_and_narrows_with_more_videos() -> None:
    from cinetron.tools.evaluate import Score

    def score(hits: int, n: int) -> Score:
        s = Score()
        for i in range(n):
            truth = ("black", "red", "circle", "left")
            s.add(truth, truth if i < hits else ("black", "red", "circle", "right"))
        return s

    small, large = score(6, 10), score(60, 100)
    lo, hi = small.interval()
    assert lo < 0.6 < hi
    lo2, hi2 = large.interval()
    assert lo < lo2 < 0.6 < hi2 < hi
    assert score(0, 10).interval()[0] == 0.0 and score(10, 10).interval()[1] == 1.0


def _clip_of(color: tuple[int, int, int]) -> np.ndarray:
    return np.full((world.FRAMES, world.SIZE, world.SIZE, 3), color, np.uint8)


@pytest.mark.parametrize("color", ["yellow", "red", "cyan"])
def test_judge_refuses_a_solid_frame_instead_of_calling_it_an_object(color: str) -> None:
    """A solid yellow clip was once judged gray / yellow / square / still."""
    verdict = judge(_clip_of(world.COLORS[color]))
    assert verdict.problem is not None and "no clean background" in verdict.problem
    assert verdict.attributes == ("none", "none", "none", "none")


def test_judge_refuses_an_object_that_fills_the_frame() -> None:
    frames = _clip_of(world.BACKGROUNDS["gray"])
    frames[:, 2:-2, 2:-2] = world.COLORS["red"]  # a clean border, and red everywhere else
    verdict = judge(frames)
    assert verdict.problem is not None and "covers over" in verdict.problem


def test_judge_refuses_noise_and_two_objects() -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, size=(world.FRAMES, world.SIZE, world.SIZE, 3), dtype=np.uint8)
    assert judge(noise).problem is not None
    one = world.render(world.sample_scene(rng, "black", "red", "circle", "still"))
    assert judge(one).problem is None
    two = one.copy()
    other = world.shape_mask("square", 12, 12, 14)
    for f in two:
        f[other] = world.COLORS["red"]
    verdict = judge(two)
    assert verdict.problem == "more than one object in most frames"
