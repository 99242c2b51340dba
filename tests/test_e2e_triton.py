"""The thin client against a real tritonserver on free loopback ports: served video ==
in-process ONNX Runtime video, shared memory == plain gRPC, the prompt cache skips the
encoder, clear errors when Triton is unreachable, and ``cinetron generate`` end to end."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import free_port

from cinetron.core.errors import InvalidArgument, Unavailable
from cinetron.core.pipeline import Pipeline, Video
from cinetron.core.request import GenerationRequest
from cinetron.core.video import decode_mp4
from cinetron.tools.tritonserver import TritonServer
from cinetron.transports import Transport
from cinetron.transports.onnx_local import OnnxLocalTransport
from cinetron.transports.triton_grpc import TritonGrpcTransport
from cinetron.transports.triton_shm import TritonShmTransport

pytestmark = pytest.mark.triton

PROMPT = "a red circle moving to the left on a black background"
STEPS = 8  # enough to exercise the loop; the schedulers' accuracy is tested elsewhere


def request(seed: int = 0, **kwargs: object) -> GenerationRequest:
    fields: dict[str, object] = {"steps": STEPS, "guidance": 4.0, **kwargs}
    return GenerationRequest(PROMPT, seed=seed, **fields)  # type: ignore[arg-type]


def encoder_inferences(url: str) -> int:
    """Inferences Triton's ``encode_prompt`` ensemble has run (its statistics counter)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics("encode_prompt")
        return int(stats.model_stats[0].inference_count)
    finally:
        client.close()


@pytest.fixture(scope="module")
def grpc_transport(triton_server: TritonServer) -> Iterator[TritonGrpcTransport]:
    with TritonGrpcTransport(triton_server.grpc_url) as transport:
        yield transport


@pytest.fixture(scope="module")
def onnx_transport(model_repository: Path) -> Iterator[OnnxLocalTransport]:
    with OnnxLocalTransport(model_repository) as transport:
        yield transport


def generate(transport: Transport, req: GenerationRequest) -> Video:
    return Pipeline(transport).generate(req)


def test_served_video_matches_in_process_onnx_runtime(
    grpc_transport: TritonGrpcTransport, onnx_transport: OnnxLocalTransport
) -> None:
    served, local = generate(grpc_transport, request(3)), generate(onnx_transport, request(3))
    assert served.frames.shape == local.frames.shape == (16, 64, 64, 3)
    diff = np.abs(served.frames.astype(np.int16) - local.frames.astype(np.int16)).max()
    assert diff <= 2, f"served frames differ from in-process ONNX Runtime by {diff}/255"
    assert served.frames.std() > 0, "a blank video proves nothing"


def test_served_manifest_is_the_repository_manifest(
    grpc_transport: TritonGrpcTransport, onnx_transport: OnnxLocalTransport
) -> None:
    assert grpc_transport.manifest == onnx_transport.manifest


def test_shared_memory_transport_gives_the_same_video_as_plain_grpc(
    triton_server: TritonServer,
    grpc_transport: TritonGrpcTransport,
) -> None:
    with TritonShmTransport(triton_server.grpc_url) as shm:
        via_shm = generate(shm, request(5, scheduler="unipc"))
        # a second generation reuses the registered regions (and rewrites the text region)
        other = generate(shm, GenerationRequest("a blue square moving up", seed=5, steps=STEPS))
    via_grpc = generate(grpc_transport, request(5, scheduler="unipc"))
    assert np.array_equal(via_shm.frames, via_grpc.frames)
    other_grpc = generate(
        grpc_transport, GenerationRequest("a blue square moving up", seed=5, steps=STEPS)
    )
    assert np.array_equal(other.frames, other_grpc.frames)


def test_shared_memory_regions_are_unregistered_on_close(triton_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    before = len(client.get_system_shared_memory_status().regions)
    shm = TritonShmTransport(triton_server.grpc_url)
    assert len(client.get_system_shared_memory_status().regions) == before + 3
    shm.close()
    assert len(client.get_system_shared_memory_status().regions) == before
    client.close()


@pytest.mark.parametrize("scheduler", ["euler", "heun", "dpmpp2m", "unipc"])
def test_same_seed_and_options_give_bit_identical_frames(
    grpc_transport: TritonGrpcTransport, scheduler: str
) -> None:
    first = generate(grpc_transport, request(11, scheduler=scheduler))
    again = generate(grpc_transport, request(11, scheduler=scheduler))
    other_seed = generate(grpc_transport, request(12, scheduler=scheduler))
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other_seed.frames)


def test_repeated_prompt_skips_the_encoder(triton_server: TritonServer) -> None:
    with TritonGrpcTransport(triton_server.grpc_url) as transport:
        pipeline = Pipeline(transport)
        start = encoder_inferences(triton_server.grpc_url)
        pipeline.generate(request(1, negative_prompt="blurry"))
        after_first = encoder_inferences(triton_server.grpc_url)
        pipeline.generate(request(2, negative_prompt="blurry"))
        after_second = encoder_inferences(triton_server.grpc_url)
    assert after_first > start, "the first generation must run the encoder"
    assert after_second == after_first, "the repeated prompt went to the encoder again"
    assert pipeline.prompt_cache.hits == 2  # prompt and negative prompt


def test_unreachable_triton_raises_unavailable_naming_the_address() -> None:
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(Unavailable, match=f"unreachable at {url}.*serve-triton"):
        TritonGrpcTransport(url, connect_timeout_s=5)


def test_unknown_model_is_reported_as_unavailable_not_a_traceback(
    grpc_transport: TritonGrpcTransport,
) -> None:
    x = grpcclient.InferInput("latents", [1, 1], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1), np.float32))
    with pytest.raises(Unavailable, match="no_such_model"):
        grpc_transport._infer("no_such_model", [x], [], "rid")


def test_out_of_range_request_is_rejected_before_any_inference(
    grpc_transport: TritonGrpcTransport,
) -> None:
    with pytest.raises(InvalidArgument, match="steps: must be between 1 and 200"):
        generate(grpc_transport, request(0, steps=500))


# --- the CLI, as a user runs it -----------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cinetron", "generate", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_an_mp4_that_decodes_to_16_frames(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    out, gif = tmp_path / "video.mp4", tmp_path / "video.gif"
    done = cli(PROMPT, "--seed", "0", "--steps", "6", "--guidance", "4", "--url",
               triton_server.grpc_url, "--out", str(out), "--gif", str(gif),
               "--frames-dir", str(tmp_path / "frames"), "--judge")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    assert "judge: background=" in done.stdout
    frames = decode_mp4(out)
    assert frames.shape == (16, 64, 64, 3)
    assert decode_mp4(gif).shape == (16, 64, 64, 3)
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 16
    assert not list(tmp_path.glob(".*.part")), "a temporary file was left behind"


def test_cli_over_shared_memory_writes_the_same_frames(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    url = triton_server.grpc_url
    assert cli(PROMPT, "--steps", "4", "--url", url, "--out", str(a), "--quiet").returncode == 0
    done = cli(PROMPT, "--steps", "4", "--url", url, "--shm", "--out", str(b), "--quiet")
    assert done.returncode == 0, done.stderr
    assert a.read_bytes() == b.read_bytes()


def test_cli_warns_when_the_prompt_was_truncated(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    long_prompt = " ".join(["a red circle moving to the left"] * 12)
    done = cli(long_prompt, "--steps", "2", "--url", triton_server.grpc_url, "--quiet",
               "--out", str(tmp_path / "v.mp4"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning: the prompt has" in done.stderr and "rest was ignored" in done.stderr


def test_cli_unreachable_triton_exits_3_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    done = cli(PROMPT, "--url", f"127.0.0.1:{free_port()}", "--out", str(out))
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "unreachable" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps: must be between 1 and 200"),
        (["--guidance", "nan"], "guidance: must be between 0 and 30"),
        (["--seed", "-1"], "seed: must be between 0"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_field(
    triton_server: TritonServer,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    done = cli(PROMPT, *args, "--url", triton_server.grpc_url, "--out", str(tmp_path / "v.mp4"))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_cli_empty_prompt_exits_2(triton_server: TritonServer, tmp_path: Path) -> None:
    done = cli("   ", "--url", triton_server.grpc_url, "--out", str(tmp_path / "v.mp4"))
    assert done.returncode == 2 and "prompt: must not be empty" in done.stderr


def test_evaluation_through_triton_scores_the_same_as_in_process(
    grpc_transport: TritonGrpcTransport, onnx_transport: OnnxLocalTransport
) -> None:
    from cinetron.tools.evaluate import evaluate, prompt_set

    prompts = prompt_set("held-out", limit=8)
    served = evaluate(Pipeline(grpc_transport), prompts, steps=10)
    local = evaluate(Pipeline(onnx_transport), prompts, steps=10)
    assert served.total == local.total == 8
    assert served.row() == local.row()


def test_serve_triton_on_a_busy_port_says_so_before_loading_any_model(
    model_repository: Path,
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cinetron", "serve-triton", "--repository",
             str(model_repository), "--grpc-port", str(port), "--http-port", "0",
             "--metrics-port", "0"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"grpc port {port} already in use" in done.stderr
    assert "successfully loaded" not in done.stdout + done.stderr  # it never started Triton
    assert "Traceback" not in done.stderr


def test_serve_api_says_at_start_when_triton_is_unreachable(tmp_path: Path) -> None:
    from support import ApiProcess

    dead = f"127.0.0.1:{free_port()}"
    api = ApiProcess(tmp_path / "data", tmp_path / "api.log", ["--triton-url", dead])
    try:
        for _ in range(100):
            if "event=backend_not_ready" in api.log_text():
                break
            time.sleep(0.1)
        line = next(ln for ln in api.log_text().splitlines() if "backend_not_ready" in ln)
        assert "level=warning" in line and dead in line
    finally:
        api.stop()


def test_the_api_data_dir_is_git_ignored() -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["git", "check-ignore", "-q", ".cinetron-data/jobs.sqlite3"], cwd=root, check=False
    )
    assert done.returncode == 0, "add .cinetron-data/ to .gitignore"


def test_loading_the_torch_text_encoder_prints_nothing() -> None:
    """`--local torch` used to print transformers' weight report and a progress bar."""
    code = "from cinetron.models.text_encoder import TextEncoder; TextEncoder()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout == "" and "LOAD REPORT" not in done.stderr, done.stderr
    assert "Loading weights" not in done.stderr, done.stderr
