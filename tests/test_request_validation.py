"""Bad input is rejected with a message naming the parameter and its valid range."""

from __future__ import annotations

import pytest

from cinetron.contract.manifest import ModelManifest
from cinetron.core.errors import InvalidArgument
from cinetron.core.request import GenerationRequest, Shot, resolve

MANIFEST = ModelManifest(
    family="test",
    version="v",
    latent_channels=4,
    latent_frames=8,
    latent_height=16,
    latent_width=16,
    frames=16,
    height=64,
    width=64,
    fps=8,
    text_length=32,
    text_dim=384,
)


@pytest.mark.parametrize(
    ("overrides", "field", "phrase"),
    [
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": "   \t\n"}, "prompt", "must not be empty"),
        ({"prompt": b"\xff\xfe red"}, "prompt", "UTF-8"),
        ({"prompt": "a\x00b"}, "prompt", "NUL"),
        ({"prompt": "x" * 5000}, "prompt", "at most 2000"),
        ({"steps": 0}, "steps", "between 1 and 200"),
        ({"steps": 201}, "steps", "between 1 and 200"),
        ({"steps": 2.5}, "steps", "integer"),
        ({"guidance": -0.1}, "guidance", "between 0 and 30"),
        ({"guidance": 30.5}, "guidance", "between 0 and 30"),
        ({"guidance": float("nan")}, "guidance", "between 0 and 30"),
        ({"guidance": float("inf")}, "guidance", "between 0 and 30"),
        ({"scheduler": "ddim"}, "scheduler", "expected one of"),
        ({"seed": -1}, "seed", "between 0 and"),
        ({"shift": 0.0}, "shift", "between 0.1 and 20"),
        ({"negative_prompt": b"\xc3\x28"}, "negative_prompt", "UTF-8"),
    ],
)
def test_bad_field_is_named_with_its_valid_range(overrides: dict, field: str, phrase: str) -> None:
    request = GenerationRequest(**{"prompt": "a red circle", **overrides})
    with pytest.raises(InvalidArgument) as info:
        resolve(request, MANIFEST)
    assert info.value.field == field
    assert phrase in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_defaults_come_from_the_manifest() -> None:
    params = resolve(GenerationRequest(prompt="  a red circle  "), MANIFEST)
    assert params.prompt == "a red circle"
    assert params.steps == MANIFEST.scheduler.steps
    assert params.guidance == MANIFEST.scheduler.guidance
    assert params.scheduler == MANIFEST.scheduler.name


def test_utf8_bytes_and_right_to_left_text_are_accepted() -> None:
    params = resolve(GenerationRequest(prompt="دائرة حمراء".encode()), MANIFEST)
    assert params.prompt == "دائرة حمراء"


def test_a_prompt_the_model_cannot_follow_is_refused_naming_what_it_draws() -> None:
    from cinetron.core.plan import plan
    from cinetron.models.loading import shapes_manifest

    shapes = shapes_manifest()
    for prompt in ("红色圆形向左移动", "🔴➡️", "a cat playing the piano", "sunset over the ocean"):
        with pytest.raises(InvalidArgument, match=r"knows none of the words.*shape: circle"):
            plan(GenerationRequest(prompt), shapes)
    partly = plan(GenerationRequest("a red cat moving to the left"), shapes)
    assert len(partly.warnings) == 1 and "'cat'" in partly.warnings[0]
    assert plan(GenerationRequest("a red circle moving to the left"), shapes).warnings == ()
    storyboard = plan(
        GenerationRequest("", shots=(Shot("a red circle", 2.0), Shot("a red dog", 2.0))), shapes
    )
    assert storyboard.warnings and storyboard.warnings[0].startswith("shots[1].prompt")


def test_a_model_without_a_vocabulary_takes_any_prompt() -> None:
    from cinetron.core.plan import plan

    assert MANIFEST.vocabulary == {}
    assert plan(GenerationRequest("a cat playing the piano"), MANIFEST).warnings == ()


def test_a_named_scheduler_runs_at_its_recommended_settings_unless_the_request_says() -> None:
    from cinetron.models.loading import shapes_manifest

    shapes = shapes_manifest()
    preset = shapes.samplers["dpmpp2m"]
    params = resolve(GenerationRequest("a red circle", scheduler="dpmpp2m"), shapes)
    assert (params.steps, params.guidance) == (preset.steps, preset.guidance)
    own = resolve(GenerationRequest("a red circle", scheduler="dpmpp2m", steps=7), shapes)
    assert own.steps == 7 and own.guidance == preset.guidance
    default = resolve(GenerationRequest("a red circle"), shapes)
    assert (default.steps, default.guidance) == (shapes.scheduler.steps, shapes.scheduler.guidance)
    measured = {n: p.held_out_accuracy for n, p in shapes.samplers.items()}
    assert all(a is not None for a in measured.values())  # measured: bench samplers
    assert not shapes.samplers[shapes.scheduler.name].experimental
