"""A real tritonserver on free loopback ports, called over gRPC with tritonclient.

Every model and ensemble is compared with the same computation in-process (onnxruntime
on the same ONNX files, the same tokenizer, the same uint8 conversion).
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from cinetron.contract.manifest import ModelManifest
from cinetron.core.transport import to_uint8_frames
from cinetron.tools.tritonserver import TritonServer, TritonStartError
from cinetron.tools.tritonserver import main as serve_main
from cinetron.triton_backend.sessions import cpu_session
from cinetron.triton_backend.text import PromptTokenizer

pytestmark = pytest.mark.triton

PROMPTS = ["a red circle moving to the left on a black background", "", "yellow square, grows"]
PARITY = 1e-4
MODELS = (
    "tokenizer", "text_encoder", "encode_prompt", "denoiser",
    "vae_decoder", "postprocess", "decode_video",
)  # fmt: skip


def infer(
    client: grpcclient.InferenceServerClient, model: str, **inputs: npt.NDArray[np.generic]
) -> grpcclient.InferResult:
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(model, tensors)


def prompts(texts: list[str]) -> npt.NDArray[np.object_]:
    return np.array([[t.encode()] for t in texts], dtype=object)


@pytest.fixture(scope="module")
def client(triton_server: TritonServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(triton_server.grpc_url)


@pytest.fixture(scope="module")
def manifest(model_repository: Path) -> ModelManifest:
    return ModelManifest.load(model_repository)


@pytest.fixture(scope="module")
def local(model_repository: Path) -> dict[str, ort.InferenceSession]:
    return {
        name: cpu_session(model_repository / name / "1" / "model.onnx")
        for name in ("text_encoder", "denoiser", "vae_decoder")
    }


@pytest.fixture(scope="module")
def tokenizer(model_repository: Path, manifest: ModelManifest) -> PromptTokenizer:
    path = model_repository / "tokenizer" / "1" / "tokenizer" / "tokenizer.json"
    return PromptTokenizer(path, manifest.text_length)


def denoiser_inputs(
    manifest: ModelManifest, batch: int, seed: int
) -> dict[str, npt.NDArray[np.generic]]:
    rng = np.random.default_rng(seed)
    L = manifest.text_length
    return {
        "latents": rng.standard_normal((batch, *manifest.latent_shape), dtype=np.float32),
        "timestep": rng.uniform(0, 1000, size=(batch, 1)).astype(np.float32),
        "text_embeds": rng.standard_normal((batch, L, manifest.text_dim), dtype=np.float32),
        "text_mask": (np.arange(L)[None] < rng.integers(1, L + 1, (batch, 1))).astype(np.int64),
    }


def local_denoise(
    local: dict[str, ort.InferenceSession], inputs: dict[str, npt.NDArray[np.generic]]
) -> npt.NDArray[np.float32]:
    feeds = dict(inputs, timestep=inputs["timestep"].reshape(-1))  # the graph takes [B]
    return local["denoiser"].run(["velocity"], feeds)[0]


def metric(server: TritonServer, name: str, model: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert match, f"{name} for {model} not in the metrics"
    return float(match.group(1))


def test_server_start_brings_all_seven_models_ready(
    triton_server: TritonServer, client: grpcclient.InferenceServerClient
) -> None:
    print(f"server start → ready: {triton_server.startup_seconds:.1f} s")
    assert client.is_server_ready()
    for model in MODELS:
        assert client.is_model_ready(model), model
    assert Path(f"/proc/{triton_server.pid}/exe").resolve().name == "tritonserver"


def test_tokenizer_matches_prompt_tokenizer(client, tokenizer) -> None:
    result = infer(client, "tokenizer", PROMPT=prompts(PROMPTS))
    want = tokenizer(PROMPTS)
    np.testing.assert_array_equal(result.as_numpy("input_ids"), want.input_ids)
    np.testing.assert_array_equal(result.as_numpy("attention_mask"), want.attention_mask)
    np.testing.assert_array_equal(result.as_numpy("token_count")[:, 0], want.token_counts)


def test_text_encoder_and_encode_prompt_match_onnxruntime(client, local, tokenizer) -> None:
    t = tokenizer(PROMPTS)
    want = local["text_encoder"].run(
        ["text_embeds"], {"input_ids": t.input_ids, "attention_mask": t.attention_mask}
    )[0]
    served = infer(client, "text_encoder", input_ids=t.input_ids, attention_mask=t.attention_mask)
    np.testing.assert_allclose(served.as_numpy("text_embeds"), want, atol=PARITY, rtol=0)

    ensemble = infer(client, "encode_prompt", PROMPT=prompts(PROMPTS))
    np.testing.assert_allclose(ensemble.as_numpy("text_embeds"), want, atol=PARITY, rtol=0)
    np.testing.assert_array_equal(ensemble.as_numpy("text_mask"), t.attention_mask)
    np.testing.assert_array_equal(ensemble.as_numpy("token_count")[:, 0], t.token_counts)
    err = float(np.abs(ensemble.as_numpy("text_embeds") - want).max())
    print(f"parity served-vs-ort text_encoder max_abs={err:.2e}")


def test_denoiser_matches_onnxruntime(client, local, manifest) -> None:
    inputs = denoiser_inputs(manifest, batch=2, seed=0)
    served = infer(client, "denoiser", **inputs).as_numpy("velocity")
    want = local_denoise(local, inputs)
    np.testing.assert_allclose(served, want, atol=PARITY, rtol=0)
    print(f"parity served-vs-ort denoiser max_abs={float(np.abs(served - want).max()):.2e}")


def test_concurrent_denoiser_requests_each_get_their_own_velocity(
    client, local, manifest, triton_server
) -> None:
    """Requests the dynamic batcher merges into one onnxruntime call are split back right."""
    requests = [denoiser_inputs(manifest, batch=2, seed=100 + i) for i in range(8)]
    before = metric(triton_server, "nv_inference_exec_count", "denoiser")
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda r: infer(client, "denoiser", **r), requests))
    for inputs, result in zip(requests, served, strict=True):
        np.testing.assert_allclose(
            result.as_numpy("velocity"), local_denoise(local, inputs), atol=PARITY, rtol=0
        )
    executions = metric(triton_server, "nv_inference_exec_count", "denoiser") - before
    print(f"8 concurrent batch-2 requests ran in {executions:.0f} executions")


def test_vae_decoder_and_decode_video_match_onnxruntime(client, local, manifest) -> None:
    latents = np.random.default_rng(1).standard_normal((2, *manifest.latent_shape), np.float32)
    want = local["vae_decoder"].run(["video"], {"latents": latents})[0]
    served = infer(client, "vae_decoder", latents=latents).as_numpy("video")
    np.testing.assert_allclose(served, want, atol=PARITY, rtol=0)
    print(f"parity served-vs-ort vae_decoder max_abs={float(np.abs(served - want).max()):.2e}")

    frames = infer(client, "decode_video", latents=latents).as_numpy("frames")
    assert frames.dtype == np.uint8
    assert frames.shape == (2, manifest.frames, manifest.height, manifest.width, 3)
    np.testing.assert_array_equal(frames, to_uint8_frames(want))


def test_postprocess_is_to_uint8_frames(client, manifest) -> None:
    shape = (2, 3, manifest.frames, manifest.height, manifest.width)
    video = np.random.default_rng(2).uniform(-1.3, 1.3, size=shape).astype(np.float32)
    frames = infer(client, "postprocess", video=video).as_numpy("frames")
    np.testing.assert_array_equal(frames, to_uint8_frames(video))


def bad_requests(manifest: ModelManifest) -> dict[str, tuple[str, dict[str, npt.NDArray]]]:
    good = denoiser_inputs(manifest, batch=2, seed=3)
    too_big = denoiser_inputs(manifest, batch=manifest.max_denoiser_batch + 1, seed=4)
    return {
        "wrong_dtype": ("denoiser", dict(good, latents=good["latents"].astype(np.float64))),
        "wrong_rank": ("denoiser", dict(good, latents=good["latents"][:, 0])),
        "batch_over_max": ("denoiser", too_big),
        "empty_prompt_tensor": ("encode_prompt", {"PROMPT": np.empty((0, 1), dtype=object)}),
        "prompt_not_utf8": ("encode_prompt", {"PROMPT": np.array([[b"\xff\xfe"]], dtype=object)}),
    }


@pytest.mark.parametrize(
    "case",
    ["wrong_dtype", "wrong_rank", "batch_over_max", "empty_prompt_tensor", "prompt_not_utf8"],
)
def test_bad_input_returns_triton_error_and_server_keeps_serving(
    client, local, manifest, case: str
) -> None:
    model, inputs = bad_requests(manifest)[case]
    with pytest.raises(InferenceServerException) as error:
        infer(client, model, **inputs)
    assert "INVALID_ARG" in str(error.value.status()), error.value
    print(f"{case}: {error.value.status()} {error.value.message()}")

    good = denoiser_inputs(manifest, batch=2, seed=5)
    velocity = infer(client, "denoiser", **good).as_numpy("velocity")
    np.testing.assert_allclose(velocity, local_denoise(local, good), atol=PARITY, rtol=0)
    assert infer(client, "encode_prompt", PROMPT=prompts(["a blue square"])).as_numpy(
        "text_embeds"
    ).shape == (1, manifest.text_length, manifest.text_dim)


def test_metrics_count_inferences(client, manifest, triton_server) -> None:
    before = metric(triton_server, "nv_inference_count", "denoiser")
    infer(client, "denoiser", **denoiser_inputs(manifest, batch=2, seed=6))
    infer(client, "denoiser", **denoiser_inputs(manifest, batch=3, seed=7))
    # nv_inference_count counts samples (batch rows), not requests. The Python backend
    # records a request's statistics just after sending its response, so the counter
    # can trail the client by a moment: poll briefly (an unchanged count still fails).
    deadline = time.monotonic() + 10
    while (after := metric(triton_server, "nv_inference_count", "denoiser")) != before + 5:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after == before + 5


def test_model_that_fails_to_load_stops_start_with_its_log_tail(
    model_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "repo"
    broken.mkdir()
    shutil.copy(model_repository / "cinetron.json", broken)
    shutil.copytree(model_repository / "postprocess", broken / "postprocess")
    model_py = broken / "postprocess" / "1" / "model.py"
    model_py.write_text(
        model_py.read_text()
        + "\nTritonPythonModel.initialize = lambda self, args: 1 / 0  # broken on purpose\n"
    )
    with pytest.raises(TritonStartError, match="ZeroDivisionError"):
        TritonServer(broken, ready_timeout=120).start()

    code = serve_main(
        ["--repository", str(broken), "--http-port", "0", "--grpc-port", "0",
         "--metrics-port", "0", "--quiet"]
    )  # fmt: skip
    assert code != 0
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_stop_sends_sigterm_and_the_server_exits(model_repository: Path) -> None:
    server = TritonServer(model_repository).start()
    pid = server.pid
    assert server.stop() in (0, -15)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
