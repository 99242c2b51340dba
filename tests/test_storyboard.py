"""Storyboards and the other "beyond one clip" requests over the cinetron.v1 gRPC API,
against the session's real tritonserver; each shot judged on its own segment.

The 60 s, 4-shot storyboard of ``make storyboard-demo`` runs here too (slow-marked).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from test_api import RunningApi, inference, start_api  # noqa: F401  (fixtures)

from cinetron.api_client import pb
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.core.video import decode_mp4, encode_png
from cinetron.models import world
from cinetron.models.captions import canonical_caption
from cinetron.tools.judge import judge
from cinetron.tools.storyboard_demo import DEMO_SHOTS, demo_shots, judge_shot, shot_segments
from cinetron.tools.storyboard_demo import shot_table as demo_table
from cinetron.transports.triton_grpc import TritonGrpcTransport

pytestmark = pytest.mark.triton

SHOT_A = ("black", "red", "circle", "right")
SHOT_B = ("white", "blue", "square", "still")
# H.264 (crf 12) costs the first frame a little PSNR over the in-process value.
API_I2V_MIN_PSNR_DB = 22.0
# Share of the 60 s storyboard's clips the judge accepts (one object, a clean background)
# with the right background and colour — over the whole video: later windows of a long
# shot still lose the object at the frame edge (docs/beyond-one-clip.md: 71% measured).
DEMO_MIN_IDENTITY = 0.5


@pytest.fixture(scope="session")
def inference_backend(triton_server, request):  # type: ignore[no-untyped-def]
    return request.getfixturevalue("inference")


@pytest.fixture
def api(start_api, inference_backend) -> RunningApi:  # type: ignore[no-untyped-def]  # noqa: F811
    return start_api()


def completed(api: RunningApi, request: pb.GenerateRequest) -> pb.Completed:
    events = list(api.stub().Generate(request, timeout=300))
    assert events[-1].WhichOneof("event") == "completed"
    return events[-1].completed


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def test_storyboard_over_the_api_cuts_between_shots_each_matching_its_prompt(
    api: RunningApi,
) -> None:
    request = pb.GenerateRequest(
        seed=3,
        shots=[
            pb.Shot(prompt=canonical_caption(SHOT_A), duration_seconds=2.0),
            pb.Shot(
                prompt=canonical_caption(SHOT_B),
                duration_seconds=2.0,
                transition=pb.SHOT_TRANSITION_CUT,
            ),
        ],
    )
    done = completed(api, request)
    assert (done.frames, done.fps, done.width, done.height, done.seed) == (32, 8, 64, 64, 3)
    frames = decode_mp4(done.video)
    assert frames.shape == (32, 64, 64, 3)
    verdicts = [judge(frames[:16]), judge(frames[16:])]
    print(f"shots {SHOT_A}, {SHOT_B} judged {verdicts}")
    assert [v.background for v in verdicts] == [SHOT_A[0], SHOT_B[0]]  # each shot its prompt


def test_image_to_video_over_the_api_keeps_the_first_frame(api: RunningApi) -> None:
    attrs = ("gray", "orange", "square", "left")
    image = world.render(world.sample_scene(np.random.default_rng(5), *attrs))[0]
    done = completed(
        api, pb.GenerateRequest(prompt=canonical_caption(attrs), seed=0, image=encode_png(image))
    )
    frames = decode_mp4(done.video)
    value = psnr(frames[0], image)
    print(f"API i2v first-frame PSNR after H.264: {value:.1f} dB")
    assert frames.shape[0] == 16 and value >= API_I2V_MIN_PSNR_DB


def test_a_long_video_job_streams_progress_over_all_windows_and_keeps_its_request(
    api: RunningApi,
) -> None:
    stub = api.stub()
    request = pb.GenerateRequest(prompt=canonical_caption(SHOT_A), steps=3, duration_seconds=3.0)
    job = stub.SubmitJob(pb.SubmitJobRequest(request=request), timeout=30).job
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), timeout=120))
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    # 2 windows: 3 steps, then 2 (the carried window starts at carry strength 0.9,
    # past the first of 3 sigmas: 1, 0.86, 0.6 at shift 3).
    assert [p.step for p in progress] == [1, 2, 3, 4, 5]
    assert {p.total for p in progress} == {3 + 2}
    assert events[-1].completed.frames == 24
    stored = stub.GetJob(pb.GetJobRequest(job_id=job.job_id), timeout=30).job
    assert stored.state == pb.JOB_STATE_SUCCEEDED
    assert stored.request.duration_seconds == 3.0


def test_list_models_reports_sizes_duration_and_image_input(api: RunningApi) -> None:
    (model,) = api.stub().ListModels(pb.ListModelsRequest(), timeout=30).models
    assert [(s.width, s.height) for s in model.sizes] == [(model.width, model.height)]
    assert model.max_duration_seconds == 60.0 and model.supports_image_input
    limits = api.stub().GetInfo(pb.GetInfoRequest(), timeout=30).limits
    assert limits.max_duration_seconds == 60.0 and limits.max_shots >= 4


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "x", "width": 96, "height": 64}, "96x64 is not a size"),
        ({"prompt": "x", "duration_seconds": 90.0}, "between 0.75 and 60 seconds"),
        ({"prompt": "x", "image": b"\x89PNG garbage"}, "image: is not a readable image"),
        ({"prompt": "x", "input_video": b"garbage"}, "input_video: is not a readable MP4"),
        ({"prompt": "x", "strength": 0.5}, "strength: applies to video-to-video"),
    ],
)
def test_bad_beyond_one_clip_requests_are_invalid_argument_before_admission(
    api: RunningApi, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as e:
        completed(api, pb.GenerateRequest(**fields))  # type: ignore[arg-type]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (e.value.details() or "")


@pytest.mark.slow
def test_sixty_second_four_shot_storyboard_through_triton_judged_per_shot(triton_server) -> None:  # type: ignore[no-untyped-def]
    with TritonGrpcTransport(triton_server.grpc_url) as transport:
        request = GenerationRequest("", seed=0, shots=demo_shots())  # prompt: the first shot's
        video = Pipeline(transport).generate(request)
    assert video.frames.shape == (480, 64, 64, 3) and len(video.shot_starts) == 4
    expected = [a for a, _, _ in DEMO_SHOTS]
    print("\n" + demo_table(video, expected, 16))
    kept = clips = 0
    for frames, attrs in zip(shot_segments(video), expected, strict=True):
        # every shot starts right, cut or continued
        assert judge_shot(frames[:16], attrs, 16).row()["all"] == 1.0, attrs
        score = judge_shot(frames, attrs, 16)
        row = score.row()
        kept += round(min(row["background"], row["color"]) * score.total)
        clips += score.total
    assert kept / clips >= DEMO_MIN_IDENTITY, (kept, clips)
