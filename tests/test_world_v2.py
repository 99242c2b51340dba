"""World v2 (one or two objects on a torus) and its captions, without a model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cinetron.models import captions, train, world
from cinetron.models.text_encoder import TEXT_LENGTH, tokenizer_file
from cinetron.triton_backend.text import PromptTokenizer


def test_an_object_leaving_one_edge_comes_back_through_the_opposite_one():
    thing = world.Thing("red", "square", "left", x=4.0, y=32.0, size=16.0)
    frames = world.render(world.Scene("black", (thing,)))
    first, last = frames[0], frames[-1]
    red = np.array(world.COLORS["red"])
    on = np.all(first == red, axis=-1)
    assert on[:, :4].any() and on[:, -4:].any()  # split across the left/right edge
    assert int(on.sum()) == 16 * 16  # and all of it drawn, none lost off the frame
    # 24 px left of x=4 is x=-20 = 44 on the torus: the square is whole again, on the right.
    cols = np.nonzero(np.all(last == red, axis=-1).any(axis=0))[0]
    assert cols.min() >= 30 and cols.max() <= 56


def test_every_frame_of_a_wrapping_clip_shows_the_whole_object():
    rng = np.random.default_rng(0)
    for attrs in world.all_combinations()[::7]:
        scene = world.sample_scene(rng, *attrs, anywhere=True)
        thing = scene.things[0]
        frames = world.render(scene)
        for f, (x, y, size) in enumerate(world.object_track(thing)):
            alone = world.shape_mask(thing.shape, x, y, size)
            here = np.all(frames[f] == world.COLORS[thing.color], axis=-1)
            assert (here == alone).all()  # no pixel lost or added at the edges


def test_v1_placement_never_wraps():
    rng = np.random.default_rng(1)
    for attrs in world.all_combinations()[::5]:
        thing = world.sample_scene(rng, *attrs).things[0]
        for x, y, size in world.object_track(thing):
            assert size / 2 <= x <= world.SIZE - size / 2
            assert size / 2 <= y <= world.SIZE - size / 2


@pytest.mark.parametrize("relation", world.RELATIONS)
def test_pairs_hold_their_relation_and_start_apart(relation: str):
    rng = np.random.default_rng(2)
    for _ in range(50):
        scene = world.sample_pair(
            rng, "gray", ("red", "circle", "up"), ("blue", "triangle", "left"), relation
        )
        a, b = scene.things
        assert world.relation_of(a, b) == relation
        assert world.relation_of(b, a) != relation
        first = world.render(scene)[0]
        a_mask = world.shape_mask(a.shape, a.x, a.y, a.size)
        b_mask = world.shape_mask(b.shape, b.x, b.y, b.size)
        assert not (a_mask & b_mask).any()  # apart: neither covers the other
        assert np.all(first[a_mask] == world.COLORS["red"])
        assert np.all(first[b_mask] == world.COLORS["blue"])


def test_a_scene_of_two_has_no_single_attributes():
    scene = world.sample_pair(
        np.random.default_rng(3), "white", ("red", "circle", "up"), ("red", "circle", "up")
    )
    with pytest.raises(ValueError, match="2 objects"):
        _ = scene.attributes


def test_training_captions_fit_the_text_encoder_and_name_what_they_show():
    tok = PromptTokenizer(tokenizer_file(), TEXT_LENGTH)
    rng = np.random.default_rng(4)

    def fits(text: str) -> bool:
        return int(tok([text]).token_counts[0]) <= TEXT_LENGTH

    examples = [train.random_example(rng, fits) for _ in range(600)]
    texts = [t for _, t in examples]
    assert max(tok(texts).token_counts) <= TEXT_LENGTH
    pairs = [(s, t) for s, t in examples if len(s.things) == 2]
    assert 0.25 < len(pairs) / len(examples) < 0.45  # SCENE_MIX's 35%
    vocab = captions.vocabulary()
    for scene, text in pairs:
        for thing in scene.things:
            colours = vocab["color"][thing.color]
            assert any(re.search(rf"\b{re.escape(w)}\b", text.lower()) for w in colours), text
    related = [
        (s, t)
        for s, t in pairs
        if any(w in t.lower() for ws in captions.RELATION_WORDS.values() for w in ws)
    ]
    assert related  # some captions say where one object is
    for scene, text in related:
        said = [r for r, ws in captions.RELATION_WORDS.items() if any(f" {w} " in text for w in ws)]
        assert world.relation_of(*scene.things) in said, text


def test_training_never_sees_held_out_objects_or_sentence_shapes():
    rng = np.random.default_rng(5)
    for _ in range(400):
        scene, _ = train.random_example(rng)
        for thing in scene.things:
            assert thing.attributes not in captions.HELD_OUT_TRIPLES
    held_out_shapes = {*captions.EVAL_TEMPLATES, *captions.EVAL_PAIR_TEMPLATES}
    trained = {
        *captions.TRAIN_TEMPLATES,
        *captions.PAIR_TEMPLATES,
        *captions.PAIR_RELATION_TEMPLATES,
        *captions.TWIN_TEMPLATES,
    }
    assert not held_out_shapes & trained


def test_the_vocabulary_names_relations_and_plurals():
    vocab = captions.vocabulary()
    assert set(vocab["relation"]) == set(world.RELATIONS)
    assert "circles" in vocab["shape"]["circle"]
    assert {"two", "pair", "first", "second"} <= set(captions.filler_words())
