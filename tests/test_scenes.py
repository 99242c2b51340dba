"""Prompts read as scenes (``core/scene.py``), scenes of two objects drawn as layers
(``core/layers.py``), and long videos drawn re-centred on their object — from the
reader, to rendered clips judged by the procedural judge, to a real tritonserver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from cinetron.contract.manifest import ModelManifest
from cinetron.core import blobs, layers
from cinetron.core.blobs import centroid
from cinetron.core.pipeline import Pipeline
from cinetron.core.plan import LAYER_SEED_STRIDE, duration_of, plan
from cinetron.core.request import GenerationRequest, Shot
from cinetron.core.scene import Scene, read_scene
from cinetron.models import captions, train, world
from cinetron.models.loading import shapes_manifest
from cinetron.tools import evaluate
from cinetron.tools.judge import judge_scene, judge_windows, match_scene
from cinetron.tools.tritonserver import TritonServer
from cinetron.transports.triton_grpc import TritonGrpcTransport


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return shapes_manifest()


def as_tuple(scene: Scene | None) -> object:
    if scene is None:
        return None
    objects = tuple(tuple(o.attributes.values()) for o in scene.objects)
    return scene.background, objects, scene.relation


@pytest.mark.parametrize("name", evaluate.PROMPT_SETS)
def test_every_eval_prompt_reads_as_the_scene_it_was_written_from(
    manifest: ModelManifest, name: str
) -> None:
    for p in evaluate.prompt_set(name):
        want = (p.background, tuple(tuple(o) for o in p.objects), p.relation)
        assert as_tuple(read_scene(p.prompt, manifest)) == want, p.prompt


def test_training_captions_of_one_and_two_objects_read_as_their_scenes(
    manifest: ModelManifest,
) -> None:
    rng = np.random.default_rng(11)
    for _ in range(1500):
        scene, text = train.random_example(rng)
        got = read_scene(text, manifest)
        assert got is not None, text
        assert got.background == scene.background, text
        assert [tuple(o.attributes.values()) for o in got.objects] == [
            t.attributes for t in scene.things
        ], text


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle moving to the left",  # no background
        "a red blue circle moving left on a black background",  # two colours, one object
        "a red circle, a blue square and a green triangle moving up on black",  # three
        "two red circles and a blue square moving up on a black background",  # three
        "a red circle moving left and a blue square moving up on a gray background, "
        "then falling",  # three motions for two objects
        "a red circle above a blue square, below it, moving up on black",  # two relations
        "a shape on a black background",  # no object named
    ],
)
def test_a_prompt_the_reader_cannot_read_whole_is_left_as_written(
    manifest: ModelManifest, prompt: str
) -> None:
    assert read_scene(prompt, manifest) is None
    drawn = plan(GenerationRequest(prompt, seed=3), manifest)
    assert not drawn.layers and drawn.windows[0].prompt == prompt


def test_an_attribute_said_once_is_every_objects(manifest: ModelManifest) -> None:
    scene = read_scene("a red circle and a blue square, both moving left, on gray", manifest)
    assert as_tuple(scene) == (
        "gray", (("red", "circle", "left"), ("blue", "square", "left")), None
    )  # fmt: skip


def test_a_model_without_a_scene_grammar_reads_no_scene(manifest: ModelManifest) -> None:
    plain = replace(manifest, scene=None)
    prompt = "a red circle to the left of a blue square, both moving up, on black"
    assert read_scene(prompt, plain) is None
    assert plan(GenerationRequest(prompt), plain).windows[0].prompt == prompt


def test_any_wording_of_one_object_is_drawn_from_the_plainest_caption(
    manifest: ModelManifest,
) -> None:
    attributes = ("gray", "purple", "triangle", "up")
    rng = np.random.default_rng(0)
    wordings = {captions.caption(rng, attributes, captions.EVAL_TEMPLATES) for _ in range(8)}
    drawn = {plan(GenerationRequest(w, seed=1), manifest).windows[0].prompt for w in wordings}
    assert len(wordings) > 4 and drawn == {captions.canonical_caption(attributes)}


def test_a_storyboard_draws_each_shot_from_its_own_plain_caption(manifest: ModelManifest) -> None:
    from cinetron.core.request import Shot

    shots = (
        Shot("on a dark canvas a scarlet ball rolls left", 2.0),
        Shot("then a golden box, still, over black", 2.0, "continue"),
    )
    windows = plan(GenerationRequest("", shots=shots, seed=2), manifest).windows
    assert {w.prompt for w in windows} == {
        captions.canonical_caption(("black", "red", "circle", "left")),
        captions.canonical_caption(("black", "yellow", "square", "still")),
    }


def test_two_objects_plan_one_layer_each_with_its_own_seed_and_the_relation(
    manifest: ModelManifest,
) -> None:
    prompt = "a crimson disc sinking to the left of an azure box that rises, on a snowy canvas"
    p = plan(GenerationRequest(prompt, seed=5, duration=4.0), manifest)
    assert p.windows == () and p.relation == "left of" and len(p.layers) == 2
    assert [layer.windows[0].prompt for layer in p.layers] == [
        captions.canonical_caption(("white", "red", "circle", "down")),
        captions.canonical_caption(("white", "blue", "square", "up")),
    ]
    assert [layer.request.seed for layer in p.layers] == [5, 5 + LAYER_SEED_STRIDE]
    assert p.total_steps == sum(layer.total_steps for layer in p.layers) > 0
    assert p.request.prompt == prompt  # what was asked stays what the job reports


TWO_SHOTS = (
    Shot("a red circle to the left of a blue square, both still, on a black background", 2.0),
    Shot("a yellow triangle moving up above a green circle moving left, on a black canvas", 2.0),
)


def test_a_storyboard_of_two_objects_per_shot_is_one_layer_per_object(
    manifest: ModelManifest,
) -> None:
    """Object k of every shot is drawn in layer k, shot by shot, with each shot's relation."""
    p = plan(GenerationRequest("", shots=TWO_SHOTS, seed=4), manifest)
    assert p.windows == () and len(p.layers) == 2 and p.relations == ("left of", "above")
    assert [[w.prompt for w in layer.windows] for layer in p.layers] == [
        [
            captions.canonical_caption(("black", "red", "circle", "still")),
            captions.canonical_caption(("black", "yellow", "triangle", "up")),
        ],
        [
            captions.canonical_caption(("black", "blue", "square", "still")),
            captions.canonical_caption(("black", "green", "circle", "left")),
        ],
    ]
    assert [layer.request.seed for layer in p.layers] == [4, 4 + LAYER_SEED_STRIDE]
    assert duration_of(p, manifest) == 4.0


def test_a_storyboard_of_mixed_object_counts_is_drawn_as_written_and_says_so(
    manifest: ModelManifest,
) -> None:
    shots = (TWO_SHOTS[0], Shot("a red circle moving up on a black background", 2.0))
    p = plan(GenerationRequest("", shots=shots, seed=4), manifest)
    assert p.layers == () and len(p.windows) == 2
    assert p.windows[0].prompt == TWO_SHOTS[0].prompt
    assert any("one layer per object" in w for w in p.warnings)


def test_two_growing_objects_are_drawn_smaller_to_keep_apart() -> None:
    """Full size, two growing squares cannot keep apart; smaller, each is still a square
    that grows, in its own place, and the two never touch."""
    a = rendered(("black", "red", "square", "grows"), 3)
    b = rendered(("black", "blue", "square", "grows"), 4)
    _, full = layers.place(layers.matte(a), layers.matte(b))
    composed = layers.arrange([a, b], "left of", world.FRAMES)
    shown = layers.alpha(composed) > 0.5
    assert full > 0 and shown.sum() < (layers.alpha(a) > 0.5).sum() + (layers.alpha(b) > 0.5).sum()
    asked = [("red", "square", "grows"), ("blue", "square", "grows")]
    match = match_scene(judge_scene(composed, 2), "black", asked, "left of")
    assert match.all, match


def test_a_layer_brings_its_object_not_its_specks() -> None:
    a = rendered(("white", "green", "circle", "still"), 5)
    b = rendered(("white", "purple", "triangle", "still"), 6)
    b[:, 2:4, 2:4] = world.COLORS["purple"]  # a speck far from the triangle
    composed = layers.arrange([a, b], None, world.FRAMES)
    verdict = judge_scene(composed, 2)
    assert verdict.problem is None
    assert sorted(o.attributes for o in verdict.objects) == [
        ("green", "circle", "still"), ("purple", "triangle", "still"),
    ]  # fmt: skip


def rendered(attributes: tuple[str, str, str, str], seed: int) -> np.ndarray:
    return world.render(world.sample_scene(np.random.default_rng(seed), *attributes))


@pytest.mark.parametrize("relation", world.RELATIONS)
def test_layers_composed_show_both_objects_where_the_relation_puts_them(relation: str) -> None:
    """Rendered single-object clips (the world's, so the judge is exact) as layers: placed
    and composed, the judge sees both objects with their own attributes and the relation."""
    rng = np.random.default_rng(hash(relation) % 2**32)
    triples = captions.train_triples()
    hits = 0
    for trial in range(12):
        background = "black"
        first = triples[int(rng.integers(len(triples)))]
        others = [t for t in triples if t[0] != first[0]]
        second = others[int(rng.integers(len(others)))]
        a = rendered((background, *first), 100 + trial)
        b = rendered((background, *second), 200 + trial)
        composed = layers.arrange([a, b], relation, world.FRAMES)
        match = match_scene(judge_scene(composed, 2), background, [first, second], relation)
        hits += match.relation is True
        # Both drawn, each as it was.
        assert all(match.color) and all(match.shape) and all(match.motion), (first, second)
    assert hits >= 11  # the relation holds (growing objects may leave no room once)


@pytest.mark.parametrize("relation", world.RELATIONS)
def test_the_relation_of_every_roll_is_read_as_the_rolled_frame_shows_it(relation: str) -> None:
    """``layers.related`` reads all 64x64 rolls at once from the objects' extents; here
    each roll is made and read directly: both off the edges, bounding-box centres, the
    shared rule (``blobs.relation_lead``). Objects across an edge are among them."""
    rng = np.random.default_rng(len(relation))
    for _ in range(3):
        a, b = (
            world.shape_mask(str(rng.choice(world.SHAPES)), x, y, rng.uniform(8, 24))
            for x, y in rng.uniform(0, 64, (2, 2))
        )
        fast = layers.related(a, b, relation)
        for dy in range(0, 64, 3):
            for dx in range(0, 64, 3):
                moved = np.roll(b, (dy, dx), axis=(0, 1))
                edges = [m[[0, -1]].any() or m[:, [0, -1]].any() for m in (a, moved)]
                (ya, xa), (yb, xb) = (
                    [(i.min() + i.max()) / 2 for i in np.nonzero(m)] for m in (a, moved)
                )
                lead = blobs.relation_lead(xb - xa, yb - ya, relation)
                slow = not any(edges) and float(lead) >= layers.RELATION_MARGIN_PX
                assert bool(fast[dy, dx]) == slow, (dy, dx)


def test_twins_are_drawn_apart() -> None:
    a = rendered(("gray", "yellow", "square", "still"), 1)
    b = rendered(("gray", "yellow", "square", "still"), 2)
    composed = layers.arrange([a, b], None, world.FRAMES)
    verdict = judge_scene(composed, 2)
    assert verdict.problem is None
    assert [o.attributes for o in verdict.objects] == [("yellow", "square", "still")] * 2


@pytest.fixture(scope="module")
def pipeline(triton_server: TritonServer) -> Iterator[Pipeline]:
    with TritonGrpcTransport(triton_server.grpc_url) as transport:
        yield Pipeline(transport)


@pytest.mark.triton
def test_two_objects_through_triton_are_both_drawn_with_the_relation(pipeline: Pipeline) -> None:
    prompt = "a green triangle moving up to the left of a red circle moving down, black background"
    steps: list[int] = []
    video = pipeline.generate(GenerationRequest(prompt, seed=0), lambda p: steps.append(p.step))
    match = match_scene(
        judge_scene(video.frames, 2),
        "black",
        [("green", "triangle", "up"), ("red", "circle", "down")],
        "left of",
    )
    assert match.all, match
    assert steps == list(range(1, video.plan.total_steps + 1))  # one count over both layers


@pytest.mark.triton
def test_a_storyboard_of_two_objects_per_shot_draws_both_in_every_shot(
    pipeline: Pipeline,
) -> None:
    """Cut between shots: each shot composed on its own, both objects and its relation."""
    video = pipeline.generate(GenerationRequest("", shots=TWO_SHOTS, seed=4))
    assert video.shot_starts == [0, 16] and video.cuts == [16]
    asked = [
        ([("red", "circle", "still"), ("blue", "square", "still")], "left of"),
        ([("yellow", "triangle", "up"), ("green", "circle", "left")], "above"),
    ]
    for start, (objects, relation) in zip(video.shot_starts, asked, strict=True):
        shot = video.frames[start : start + 16]
        match = match_scene(judge_scene(shot, 2), "black", objects, relation)
        assert match.all, (start, match)


@pytest.mark.triton
def test_a_long_video_keeps_its_object_across_the_edges(pipeline: Pipeline) -> None:
    """8 s of a circle moving left: carried past the left edge it comes back on the right
    (the frame is a torus), whole, still a red circle, still moving left."""
    video = pipeline.generate(
        GenerationRequest("a red circle moving to the left on a black background", duration=8.0)
    )
    verdict = judge_windows(video.frames)
    summary = verdict.summary(("black", "red", "circle", "left"))
    assert summary.present == summary.frames
    assert summary.identity == summary.windows
    assert summary.asked_motion >= summary.windows - 1
    # It travelled further than one frame is wide, so it crossed an edge on the way.
    xs = [centroid(layers.alpha(f[None])[0] > 0.5) for f in video.frames]
    steps = np.diff([x[0] for x in xs if x is not None])
    assert float(np.sum(np.mod(steps + 32, 64) - 32)) < -64


@pytest.mark.parametrize("relation", ["left of", "right of", "above", "below"])
def test_a_first_object_drawn_across_an_edge_is_moved_inside_so_the_relation_can_hold(
    relation: str,
) -> None:
    """The torus lets a layer's object lie across the frame's edge; a relation is read
    with both inside, so the first is moved off the edge on the relation's other axis too,
    and a place for the second is then found where the relation holds."""
    from cinetron.core.layers import lead, place, related
    from cinetron.models import world as w

    corner = w.shape_mask("triangle", 62.0, 62.0, 16.0)  # across the bottom and right edges
    first = np.repeat(corner[None], 4, axis=0).astype(np.float32)
    second = np.repeat(w.shape_mask("circle", 20.0, 20.0, 14.0)[None], 4, axis=0).astype(np.float32)
    dy, dx = lead(first, relation)
    moved = np.roll(first, (dy, dx), axis=(1, 2))
    rows, cols = moved[0].any(axis=1), moved[0].any(axis=0)
    assert not (rows[0] or rows[-1] or cols[0] or cols[-1])  # inside the frame
    assert related(moved[0] > 0.5, second[0] > 0.5, relation).any()
    (sy, sx), _ = place(moved, second, relation)
    assert related(moved[0] > 0.5, second[0] > 0.5, relation)[sy, sx]
