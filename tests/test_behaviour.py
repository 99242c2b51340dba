"""Behaviour pinned down: fixed requests of every kind make the same MP4, byte for byte,
as before the redesign — through Triton and in-process.

``behaviour_hashes.json`` holds SHA-256s recorded before the engine was rewritten (one
sampling loop, one request type, one plan), re-recorded when prompts began to be read as
scenes (issue 21). A change that moves a single pixel of any of these videos fails here;
new weights or a new way of drawing mean re-recording the file, on purpose:
``CINETRON_RECORD_BEHAVIOUR=1 pytest tests/test_behaviour.py`` (then say so in the commit).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest, Shot
from cinetron.core.transport import Transport
from cinetron.core.video import encode_mp4
from cinetron.models import world
from cinetron.transports import open_transport

HASHES = Path(__file__).with_name("behaviour_hashes.json")
RECORDED = json.loads(HASHES.read_text())["hashes"]
RED_LEFT = "a red circle moving to the left on a black background"


def cases() -> dict[str, GenerationRequest]:
    rng = np.random.default_rng(42)
    clip = world.render(world.sample_scene(rng, "black", "blue", "square", "right"))
    image = world.render(world.sample_scene(rng, "white", "green", "circle", "still"))[0]
    up = "a blue triangle moving up on a white background"
    return {
        "plain": GenerationRequest(RED_LEFT, seed=7),
        "long_10s": GenerationRequest(RED_LEFT, seed=11, duration=10.0),
        "storyboard_2shot": GenerationRequest(
            RED_LEFT, seed=13, shots=(Shot(RED_LEFT, 3.0, "cut"), Shot(up, 3.0, "continue"))
        ),
        "image_to_video": GenerationRequest(
            "a green circle moving right on a white background", seed=17, image=image
        ),
        "video_to_video": GenerationRequest(
            "a red square moving right on a black background", seed=19, video=clip, strength=0.6
        ),
        "extension": GenerationRequest(
            "a blue square moving right on a black background", seed=23, video=clip
        ),
        "two_objects": GenerationRequest(
            "a green triangle moving up to the left of a red circle moving down, on black",
            seed=29,
        ),
    }


def hashes(transport: Transport) -> dict[str, str]:
    pipeline = Pipeline(transport)
    out = {}
    for name, request in cases().items():
        video = pipeline.generate(request)
        out[name] = hashlib.sha256(encode_mp4(video.frames, video.fps)).hexdigest()
    return out


@pytest.fixture(params=["triton", "triton-shm", "onnx", "torch"])
def transport(request: pytest.FixtureRequest, model_repository: Path) -> Iterator[Transport]:
    kind = request.param
    if kind.startswith("triton"):
        server = request.getfixturevalue("triton_server")
        with open_transport(kind, url=server.grpc_url) as t:
            yield t
    else:
        with open_transport(kind, repo=model_repository) as t:
            yield t


@pytest.mark.triton
def test_every_kind_of_request_makes_the_recorded_mp4(
    transport: Transport, request: pytest.FixtureRequest
) -> None:
    kind = request.node.callspec.params["transport"]
    got = hashes(transport)
    if os.environ.get("CINETRON_RECORD_BEHAVIOUR"):
        recorded = json.loads(HASHES.read_text())
        recorded["hashes"][kind] = got
        HASHES.write_text(json.dumps(recorded, indent=2) + "\n")
        return
    changed = {k: v for k, v in got.items() if v != RECORDED[kind][k]}
    assert not changed, f"{kind}: these videos changed: {sorted(changed)}"
