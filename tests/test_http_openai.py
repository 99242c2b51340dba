"""The HTTP API through the official ``openai`` package, against a real ``cinetron serve-api``
process in front of the session's tritonserver: create, create_and_poll, retrieve, list,
delete, download_content, the same job over gRPC, auth, bad inputs, 409, 429 and 503.

Nothing is mocked: the SDK speaks HTTP to the server process; the server runs the denoising
loop against Triton; videos are decoded with PyAV and judged.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import openai
import pytest
from support import ApiProcess, free_port

from cinetron.api_client import pb
from cinetron.core.video import decode_image, decode_mp4, encode_png
from cinetron.models import world
from cinetron.models.captions import canonical_caption
from cinetron.tools.judge import judge
from cinetron.tools.tritonserver import TritonServer

# OpenAI marks its Videos API deprecated (the Sora service is to shut down); the SDK's
# methods still work and are what every OpenAI-compatible video server speaks.
pytestmark = [pytest.mark.triton, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TOKEN = "sdk-test-token"
RED_CIRCLE = "a red circle moving to the left on a black background"
API_I2V_MIN_PSNR_DB = 22.0  # as tests/test_storyboard.py over gRPC: H.264 on top of the VAE


@pytest.fixture(scope="module")
def api(
    triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    tmp = tmp_path_factory.mktemp("http-openai")
    tokens = tmp / "tokens"
    tokens.write_text(f"# the suite's token\n{TOKEN}\n")
    process = ApiProcess(
        tmp / "data",
        tmp / "serve-api.log",
        ["--triton-url", triton_server.grpc_url, "--auth-tokens-file", str(tokens)],
    )
    try:
        process.wait_serving()
        yield process
    finally:
        process.stop()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Extra API processes with their own flags (no auth), killed at the end."""
    started: list[ApiProcess] = []

    def start(*args: str, ready: bool = True) -> ApiProcess:
        p = ApiProcess(tmp_path / f"data{len(started)}", tmp_path / "serve-api.log", args)
        started.append(p)
        if ready:
            p.wait_serving()
        return p

    yield start
    for p in started:
        p.stop(signal.SIGKILL)


def sdk(api: ApiProcess, key: str = TOKEN, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.http_url}/v1", api_key=key, max_retries=retries)


def grpc_metadata() -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKEN}")]


def wait_done(client: openai.OpenAI, video_id: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        video = client.videos.retrieve(video_id)
        if video.status in ("completed", "failed"):
            return video
        time.sleep(0.05)
    raise AssertionError(f"video {video_id} not done after {timeout}s")


# -- create, poll, download -------------------------------------------------------------------


def test_create_returns_a_queued_video_the_sdk_parses_with_cinetron_fields(api: ApiProcess):
    client = sdk(api)
    # The SDK's types list Sora's values (seconds 4/8/12, 720p sizes); at run time it sends
    # any string, and each server says which it makes (GET /v1/models).
    video = client.videos.create(
        prompt=RED_CIRCLE,
        seconds="2",  # type: ignore[arg-type]
        size="64x64",  # type: ignore[arg-type]
        extra_body={"seed": 7, "steps": 4},
    )
    assert isinstance(video, openai.types.Video)
    assert video.object == "video" and video.status in ("queued", "in_progress")
    assert (video.model, video.seconds, video.size, video.prompt) == (
        "shapes",
        "2",
        "64x64",
        RED_CIRCLE,
    )
    assert 0 <= video.progress < 100 and video.error is None and video.completed_at is None
    extra = video.model_extra or {}
    assert (extra["seed"], extra["steps"], extra["total_steps"]) == (7, 4, 4)
    assert extra["scheduler"] == "euler" and extra["guidance"] == 4.0  # the model's defaults
    done = wait_done(client, video.id)
    assert done.status == "completed" and done.progress == 100
    assert done.completed_at is not None and done.completed_at >= done.created_at


def test_create_and_poll_then_download_gives_the_grpc_mp4_byte_for_byte(api: ApiProcess):
    client = sdk(api)
    api.wait_idle()  # bit-identical frames need the same denoiser batches as the gRPC run
    video = client.videos.create_and_poll(
        prompt=RED_CIRCLE, extra_body={"seed": 11, "steps": 8}, poll_interval_ms=50
    )
    assert video.status == "completed" and video.progress == 100, video
    mp4 = client.videos.download_content(video.id).read()
    frames = decode_mp4(mp4)
    assert frames.shape == (16, 64, 64, 3)
    verdict = judge(frames)
    assert (verdict.background, verdict.color) == ("black", "red"), verdict
    assert video.model_extra and video.model_extra["video_size_bytes"] == len(mp4)

    api.wait_idle()
    request = pb.GenerateRequest(prompt=RED_CIRCLE, seed=11, steps=8)
    events = list(api.stub.Generate(request, metadata=grpc_metadata(), timeout=60))
    assert events[-1].completed.video == mp4  # one engine: the seed reproduces the file


def test_progress_comes_from_real_steps_and_unfinished_videos_carry_a_poll_hint(api: ApiProcess):
    client = sdk(api)
    video = client.videos.create(prompt="a blue square growing", extra_body={"steps": 150})
    seen: list[tuple[int, int, str]] = []
    hints: set[str] = set()
    end = time.monotonic() + 120
    while time.monotonic() < end:
        raw = client.videos.with_raw_response.retrieve(video.id)
        v = raw.parse()
        extra = v.model_extra or {}
        seen.append((v.progress, extra["step"], v.status))
        if v.status == "completed":
            assert "openai-poll-after-ms" not in raw.headers
            break
        hints.add(raw.headers["openai-poll-after-ms"])
        time.sleep(0.02)
    progress = [p for p, _, _ in seen]
    assert progress == sorted(progress) and progress[-1] == 100, seen
    assert any(0 < p < 100 for p in progress), seen  # seen mid-way, not just before/after
    # progress is the share of the 150 steps done (stored every 0.5 s while running)
    assert all(p == min(99, 100 * step // 150) for p, step, s in seen if s == "in_progress")
    assert hints and all(100 <= int(h) <= 2000 for h in hints), hints


def test_thumbnail_and_spritesheet_are_pngs_of_the_frames(api: ApiProcess):
    client = sdk(api)
    video = client.videos.create_and_poll(prompt=RED_CIRCLE, extra_body={"steps": 2, "seed": 1})
    frames = decode_mp4(client.videos.download_content(video.id).read())
    thumb = decode_image(client.videos.download_content(video.id, variant="thumbnail").read())
    sheet = decode_image(client.videos.download_content(video.id, variant="spritesheet").read())
    assert (thumb == frames[len(frames) // 2]).all()
    assert sheet.shape == (2 * 64, 8 * 64, 3) and (sheet[64:128, 64:128] == frames[9]).all()


def test_image_upload_starts_the_video_from_that_image(api: ApiProcess):
    attrs = ("gray", "orange", "square", "left")
    image = world.render(world.sample_scene(np.random.default_rng(5), *attrs))[0]
    client = sdk(api)
    video = client.videos.create_and_poll(
        prompt=canonical_caption(attrs),
        input_reference=("first-frame.png", encode_png(image), "image/png"),
        extra_body={"seed": 0},
    )
    assert video.status == "completed", video
    assert video.model_extra and video.model_extra["has_input_reference"]
    first = decode_mp4(client.videos.download_content(video.id).read())[0]
    mse = float(np.mean((first.astype(np.float64) - image.astype(np.float64)) ** 2))
    assert 10 * np.log10(255.0**2 / max(mse, 1e-9)) >= API_I2V_MIN_PSNR_DB


# -- list, delete, gRPC ------------------------------------------------------------------------


def test_list_pages_newest_first_or_oldest_first_with_after_and_limit(api: ApiProcess):
    client = sdk(api)
    mine = [
        client.videos.create(prompt=f"a white circle number {i}", extra_body={"steps": 1}).id
        for i in range(5)
    ]
    first = client.videos.list(limit=2)
    assert [v.id for v in first.data] == mine[::-1][:2]
    assert first.has_more and first.last_id == mine[3]
    newest_first = [v.id for v in client.videos.list(limit=2)]  # the SDK follows last_id
    assert [i for i in newest_first if i in mine] == mine[::-1]
    assert len(newest_first) == len(set(newest_first))
    oldest_first = [v.id for v in client.videos.list(limit=3, order="asc")]
    assert [i for i in oldest_first if i in mine] == mine
    after = client.videos.list(after=mine[2], limit=10, order="asc")
    assert [v.id for v in after.data][:2] == mine[3:]


def test_delete_removes_a_finished_video_and_its_file_and_refuses_an_unfinished_one(
    api: ApiProcess,
):
    client = sdk(api)
    video = client.videos.create_and_poll(prompt=RED_CIRCLE, extra_body={"steps": 1})
    path = api.data_dir / "videos" / f"{video.id}.mp4"
    assert path.is_file()
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    assert not path.exists()
    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.retrieve(video.id)
    assert missing.value.code == "video_not_found" and video.id in missing.value.message
    with pytest.raises(grpc.RpcError) as rpc:
        api.stub.GetJob(pb.GetJobRequest(job_id=video.id), metadata=grpc_metadata())
    assert rpc.value.code() == grpc.StatusCode.NOT_FOUND

    running = client.videos.create(prompt=RED_CIRCLE, extra_body={"steps": 200})
    with pytest.raises(openai.ConflictError) as busy:
        client.videos.delete(running.id)
    assert busy.value.code == "video_not_finished" and "cancel it first" in busy.value.message
    cancelled = client.post(f"/videos/{running.id}/cancel", cast_to=openai.types.Video)
    ended = wait_done(client, cancelled.id)
    assert ended.status == "failed" and ended.error and ended.error.code == "cancelled"
    assert client.videos.delete(running.id).deleted


def test_a_video_made_over_http_is_the_same_job_over_grpc_and_back(api: ApiProcess):
    client = sdk(api)
    video = client.videos.create(prompt="a green triangle falling", extra_body={"seed": 5})
    job = api.stub.GetJob(pb.GetJobRequest(job_id=video.id), metadata=grpc_metadata()).job
    assert (job.request.prompt, job.seed) == ("a green triangle falling", 5)
    done = wait_done(client, video.id)
    job = api.stub.GetJob(
        pb.GetJobRequest(job_id=video.id, include_video=True), metadata=grpc_metadata()
    ).job
    assert job.state == pb.JOB_STATE_SUCCEEDED and done.status == "completed"
    assert job.result.video == client.videos.download_content(video.id).read()

    submitted = api.stub.SubmitJob(
        pb.SubmitJobRequest(request=pb.GenerateRequest(prompt="a yellow circle", steps=2)),
        metadata=grpc_metadata(),
    ).job
    over_http = wait_done(client, submitted.job_id)
    assert over_http.prompt == "a yellow circle" and over_http.status == "completed"
    assert over_http.model_extra and over_http.model_extra["seed"] == submitted.seed


def test_request_id_is_echoed_and_reaches_the_job_log(api: ApiProcess):
    raw = sdk(api).videos.with_raw_response.create(
        prompt=RED_CIRCLE, extra_body={"steps": 1}, extra_headers={"x-request-id": "sdk-req-42"}
    )
    assert raw.headers["x-request-id"] == "sdk-req-42"
    video = raw.parse()
    assert f"event=job_submitted request_id=sdk-req-42 job_id={video.id}" in api.log_text()


# -- errors ------------------------------------------------------------------------------------


def test_a_wrong_or_missing_token_is_401_in_openais_shape(api: ApiProcess):
    with pytest.raises(openai.AuthenticationError) as wrong:
        sdk(api, key="not-the-token").videos.list()
    err = wrong.value
    assert err.status_code == 401 and err.code == "invalid_api_key"
    assert err.type == "authentication_error" and "bearer token" in err.message
    assert err.response.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(openai.AuthenticationError):
        sdk(api, key="not-the-token").videos.create(prompt=RED_CIRCLE)
    assert "not-the-token" not in api.log_text()  # tokens never reach the log


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        ({"extra_body": {"steps": 0}}, "steps", "steps: must be between 1 and 200, got 0"),
        ({"extra_body": {"steps": "many"}}, "steps", "steps: must be an integer, got 'many'"),
        ({"extra_body": {"guidance": 31}}, "guidance", "guidance: must be between 0 and 30"),
        ({"extra_body": {"seed": -1}}, "seed", "seed: must be between 0 and"),
        ({"extra_body": {"scheduler": "ddim"}}, "scheduler", "unknown scheduler 'ddim'"),
        ({"extra_body": {"fps": 24}}, "fps", "fps: unknown field"),
        ({"seconds": "100"}, "seconds", "seconds: must be between 0.75 and 60 seconds"),
        ({"seconds": "four"}, "seconds", 'must be a number of seconds such as "4"'),
        ({"size": "1280x720"}, "size", "1280x720 is not a size the 'shapes' model makes"),
        ({"size": "huge"}, "size", "must be WIDTHxHEIGHT"),
        ({"model": "sora-2"}, "model", "unknown model 'sora-2'; this server serves 'shapes'"),
        ({"prompt": "   "}, "prompt", "prompt: must not be empty or only whitespace"),
        ({"prompt": "x" * 2001}, "prompt", "prompt: must be at most 2000 characters"),
        (
            {"input_reference": ("not.png", b"not an image", "image/png")},
            "input_reference",
            "input_reference: is not a readable image",
        ),
    ],
)
def test_bad_inputs_are_400_naming_the_field_in_the_grpc_words(
    api: ApiProcess, kwargs: dict[str, object], param: str, words: str
):
    args: dict[str, object] = {"prompt": RED_CIRCLE, **kwargs}
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(api).videos.create(**args)  # type: ignore[arg-type]
    err = bad.value
    assert (err.status_code, err.param, err.type) == (400, param, "invalid_request_error")
    assert words in err.message, err.message


def test_the_same_idempotency_key_replays_and_a_different_request_is_409(api: ApiProcess):
    client = sdk(api)
    headers = {"Idempotency-Key": "http-key-1"}
    first = client.videos.create(prompt=RED_CIRCLE, extra_body={"seed": 3}, extra_headers=headers)
    raw = client.videos.with_raw_response.create(
        prompt=RED_CIRCLE, extra_body={"seed": 3}, extra_headers=headers
    )
    assert raw.parse().id == first.id and raw.headers["idempotent-replayed"] == "true"
    with pytest.raises(openai.ConflictError) as conflict:
        client.videos.create(prompt="something else", extra_headers=headers)
    err = conflict.value
    assert err.status_code == 409 and err.code == "idempotency_key_reused"
    assert err.param == "Idempotency-Key" and first.id in err.message
    assert err.response.headers["x-should-retry"] == "false"


def test_a_full_queue_is_429_with_retry_after(spawn, triton_server: TritonServer):
    api = spawn(
        "--triton-url", triton_server.grpc_url, "--max-queue", "0", "--max-concurrency", "1"
    )
    client = sdk(api)
    busy = client.videos.create(prompt=RED_CIRCLE, extra_body={"steps": 200})
    with pytest.raises(openai.RateLimitError) as full:
        client.videos.create(prompt=RED_CIRCLE)
    err = full.value
    assert err.status_code == 429 and err.code == "queue_full" and err.type == "rate_limit_error"
    assert "queue is full" in err.message
    assert int(err.response.headers["retry-after"]) >= 1
    assert int(err.response.headers["retry-after-ms"]) >= 100
    client.post(f"/videos/{busy.id}/cancel", cast_to=openai.types.Video)
    assert wait_done(client, busy.id).status == "failed"


def test_triton_down_is_503_with_retry_after_and_readyz_says_why(spawn):
    api = spawn("--triton-url", f"127.0.0.1:{free_port()}", ready=False)  # nothing listens there
    deadline = time.monotonic() + 60
    while api.log_text().count("event=http_listening") == 0:
        assert time.monotonic() < deadline and api.proc.poll() is None, api.log_tail()
        time.sleep(0.1)
    with pytest.raises(openai.InternalServerError) as down:
        sdk(api).videos.create(prompt=RED_CIRCLE)
    err = down.value
    assert err.status_code == 503 and err.code == "backend_unavailable"
    assert "inference server unavailable" in err.message and "retry" in err.message
    assert err.response.headers["retry-after"] == "2"
    assert not api.http_ready()
    assert sdk(api).videos.list().data == []  # the job store still answers
