"""The exported repository is self-contained: served from a Python environment made only
of ``deploy/docker/triton-requirements.txt`` — what the Triton image installs — every model
loads and a video generates, identical to the one made in-process.

That environment is ``.triton/image-env`` (``make install`` builds it; the test builds it
when missing). The stubs find their packages through the first ``python3`` on PATH, so
nothing of this venv, and nothing of Cinetron, is importable there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cinetron.contract.manifest import ModelManifest
from cinetron.contract.repository import encoder_spec, repository_spec
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.tools.tritonserver import TritonServer, image_env
from cinetron.transports.onnx_local import OnnxLocalTransport
from cinetron.transports.triton_grpc import TritonGrpcTransport

REQUIREMENTS = Path(__file__).resolve().parents[1] / "deploy" / "docker" / "triton-requirements.txt"


@pytest.fixture(scope="module")
def image_python() -> Path:
    return image_env(REQUIREMENTS)


@pytest.fixture(scope="module")
def image_server(model_repository: Path, image_python: Path) -> Iterator[TritonServer]:
    with TritonServer(model_repository, ready_timeout=180, python_env=image_python) as server:
        yield server


def test_the_image_environment_has_only_the_requirements(image_python: Path) -> None:
    code = (
        "import numpy, onnxruntime, tokenizers\n"
        "try:\n    import cinetron\nexcept ImportError:\n    print('no cinetron')\n"
    )
    done = subprocess.run(
        [str(image_python / "python3"), "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "no cinetron"


def test_every_python_model_imports_only_its_own_backend_copy(model_repository: Path) -> None:
    manifest = ModelManifest.load(model_repository)
    for spec in (*repository_spec(manifest), encoder_spec(manifest)):
        model_py = model_repository / spec.name / "1" / "model.py"
        if spec.kind == "ensemble":
            assert not model_py.exists()
            continue
        text = model_py.read_text()
        assert "from cinetron_backend." in text and "import cinetron." not in text
        assert (model_py.parent / "cinetron_backend" / "batching.py").exists()


@pytest.mark.triton
def test_a_video_generates_through_triton_with_only_the_image_requirements(
    image_server: TritonServer, model_repository: Path
) -> None:
    request = GenerationRequest("a red circle moving to the left on a black background", seed=5)
    with TritonGrpcTransport(image_server.grpc_url) as transport:
        assert transport.can_encode_video  # the optional encoder loaded too
        served = Pipeline(transport).generate(request)
    with OnnxLocalTransport(model_repository) as local:
        reference = Pipeline(local).generate(request)
    assert served.frames.shape == (16, 64, 64, 3)
    # onnxruntime in the image may be another version than this venv's: same graphs, float
    # rounding apart at most.
    diff = np.abs(served.frames.astype(np.int16) - reference.frames.astype(np.int16))
    assert diff.max() <= 2, diff.max()
