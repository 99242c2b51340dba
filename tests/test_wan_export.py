"""Wan2.1 from a diffusers folder → Triton repository → served video = diffusers' video.

A tiny random-weight Wan2.1 checkpoint (the configs of diffusers' own Wan tests) is
built offline, exported once per module (cpu flavour), served from the real
tritonserver, and sampled with our Pipeline over gRPC; diffusers' ``WanPipeline`` runs
the same checkpoint from the same initial latents with the same schedule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
import diffusers  # noqa: E402  (imported, not assigned: mypy takes its classes as bases)

from cinetron.contract.manifest import ModelManifest  # noqa: E402
from cinetron.contract.repository import model_names  # noqa: E402
from cinetron.core.pipeline import Pipeline  # noqa: E402
from cinetron.core.request import GenerationRequest  # noqa: E402
from cinetron.core.sampling import initial_noise  # noqa: E402
from cinetron.core.transport import PromptEmbeddings, Transport  # noqa: E402
from cinetron.export.cli import main as export_main  # noqa: E402
from cinetron.export.configs import RepositoryOptions, read_config  # noqa: E402
from cinetron.export.families.wan import (  # noqa: E402
    DEFAULT_NEGATIVE_PROMPT,
    WanGeometry,
    build_tiny_checkpoint,
    export_wan,
)
from cinetron.export.repository import ExportReport  # noqa: E402
from cinetron.triton_backend.sessions import cpu_session as ort_session  # noqa: E402
from cinetron.triton_backend.text import PromptTokenizer  # noqa: E402

if TYPE_CHECKING:
    from diffusers import WanPipeline

# Frames 5 = 2 latent frames: the VAE decoder's loop unrolls per latent frame, and two
# frames keep the export well under a minute while still crossing a frame boundary.
GEOMETRY = WanGeometry(frames=5, height=32, width=32, text_length=16, max_batch=4)
PROMPT = "a red ball dancing on the street"
STEPS = 4


@pytest.fixture(scope="module")
def wan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("wan") / "Wan2.1-T2V-tiny-Diffusers")


@pytest.fixture(scope="module")
def wan_export(wan_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("wan_repository")
    return export_wan(wan_checkpoint, out, RepositoryOptions(flavour="cpu"), GEOMETRY, log=print)


@pytest.fixture(scope="module")
def wan_server(wan_export: ExportReport) -> Iterator[object]:
    from cinetron.tools.tritonserver import TritonServer

    with TritonServer(wan_export.out) as server:
        yield server


@pytest.fixture(scope="module")
def diffusers_pipe(wan_checkpoint: Path) -> WanPipeline:
    pipe = diffusers.WanPipeline.from_pretrained(str(wan_checkpoint))
    pipe.set_progress_bar_config(disable=True)
    return pipe


class UniPCOnCinetronSchedule(diffusers.UniPCMultistepScheduler):
    """diffusers' UniPC on Cinetron's schedule: shifted linspace(1, 0) and float timesteps.

    Stock diffusers starts at sigma 0.999 (linspace(1, 1/1000)) and casts timesteps to
    int64; our client sends sigma × 1000 as float, so compare like with like.
    """

    def set_timesteps(self, num_inference_steps: int, device: object = None, **_: object) -> None:
        super().set_timesteps(
            sigmas=np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1], device=device
        )
        self.timesteps = self.sigmas[:-1].to(device=device) * 1000.0


class EulerOnCinetronSchedule(diffusers.FlowMatchEulerDiscreteScheduler):
    def set_timesteps(self, num_inference_steps: int, device: object = None, **_: object) -> None:
        super().set_timesteps(
            sigmas=np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1], device=device
        )


def diffusers_run(
    pipe: WanPipeline, manifest: ModelManifest, scheduler: str, seed: int, output_type: str
) -> np.ndarray:
    """WanPipeline started from our seed's noise: ``"latent"`` gives the final latents
    ``[1, C, T, H, W]``, ``"np"`` the video ``[F, H, W, 3]`` in 0..255 (float)."""
    if scheduler == "unipc":
        pipe.scheduler = UniPCOnCinetronSchedule(
            use_flow_sigmas=True,
            prediction_type="flow_prediction",
            flow_shift=manifest.scheduler.shift,
        )
    else:
        pipe.scheduler = EulerOnCinetronSchedule(shift=manifest.scheduler.shift)
    latents = torch.from_numpy(initial_noise(seed, (1, *manifest.latent_shape)))
    out = pipe(
        prompt=PROMPT,
        negative_prompt=manifest.negative_prompt,
        height=manifest.height,
        width=manifest.width,
        num_frames=manifest.frames,
        num_inference_steps=STEPS,
        guidance_scale=manifest.scheduler.guidance,
        latents=latents,
        output_type=output_type,
        max_sequence_length=manifest.text_length,
    ).frames
    if output_type == "latent":
        return out.numpy()
    return np.asarray(out[0], dtype=np.float64) * 255.0


class LatentRecorder(Transport):
    """Delegates to a real transport and keeps the latents the pipeline decodes."""

    def __init__(self, inner: Transport) -> None:
        self.inner, self.manifest = inner, inner.manifest
        self.decoded: list[np.ndarray] = []

    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        return self.inner.encode_prompt(prompts, request_id)

    def denoise(self, latents, timestep, text_embeds, text_mask, request_id=""):  # type: ignore[no-untyped-def]
        return self.inner.denoise(latents, timestep, text_embeds, text_mask, request_id)

    def decode_video(self, latents, request_id=""):  # type: ignore[no-untyped-def]
        self.decoded.append(latents.copy())
        return self.inner.decode_video(latents, request_id)


# --- the repository ----------------------------------------------------------------------


def test_export_writes_the_contract_repository_with_a_wan_manifest(
    wan_export: ExportReport,
) -> None:
    out = wan_export.out
    manifest = ModelManifest.load(out)
    assert manifest.family == "wan" and manifest.version.startswith("wan-")
    assert manifest.latent_shape == (16, 2, 4, 4)  # z_dim, (5-1)/4+1, 32/8, 32/8
    assert (manifest.frames, manifest.height, manifest.width) == (5, 32, 32)
    assert (manifest.text_length, manifest.text_dim) == (16, 32)
    assert manifest.patch == (1, 2, 2) and manifest.vae_scale == (4, 8, 8)
    assert manifest.scheduler.name == "unipc" and manifest.scheduler.shift == 3.0
    assert manifest.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert "fixed at export" in manifest.export_notes["vae_decoder"]
    for name in model_names(manifest):
        config = read_config(out / name / "config.pbtxt")
        assert config.name == name and config.max_batch_size == GEOMETRY.max_batch
    denoiser = read_config(out / "denoiser" / "config.pbtxt")
    served = json.loads(denoiser.parameters["cinetron_manifest"].string_value)
    assert served["version"] == manifest.version
    assert (out / "tokenizer" / "1" / "tokenizer" / "tokenizer.json").exists()


def test_every_onnx_model_matches_torch_within_float_error(wan_export: ExportReport) -> None:
    parity = {p.model: p for p in wan_export.parity}
    assert set(parity) == {"text_encoder", "denoiser", "vae_decoder"}
    for p in parity.values():
        assert p.max_abs < 1e-4, p.line()
        assert p.cases >= 3, "checked at batch 1, 2 and 3 and at a second size"


def test_served_graphs_take_only_a_dynamic_batch(wan_export: ExportReport) -> None:
    session = ort_session(wan_export.out / "denoiser" / "1" / "model.onnx")
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["latents"][1:] == [16, 2, 4, 4]
    assert isinstance(shapes["latents"][0], str), "batch must stay dynamic"
    video = ort_session(wan_export.out / "vae_decoder" / "1" / "model.onnx").get_outputs()[0]
    assert video.shape[1:] == [3, 5, 32, 32]


def test_tokenizer_and_text_encoder_reproduce_wan_prompt_embeddings(
    wan_export: ExportReport, diffusers_pipe: WanPipeline
) -> None:
    """Our tokenizer file + ONNX encoder = WanPipeline.encode_prompt (padding rows zeroed)."""
    out, manifest = wan_export.out, ModelManifest.load(wan_export.out)
    prompts = [PROMPT, "", "a cat " * 20]  # ordinary, empty, truncated
    tokens = PromptTokenizer(
        out / "tokenizer" / "1" / "tokenizer" / "tokenizer.json", manifest.text_length
    )(prompts)
    got = ort_session(out / "text_encoder" / "1" / "model.onnx").run(
        ["text_embeds"], {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
    )[0]
    with torch.inference_mode():
        want, _ = diffusers_pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=manifest.text_length
        )
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    assert tokens.token_counts[2] > manifest.text_length  # the long prompt was truncated


# --- served video = diffusers video -----------------------------------------------------------


@pytest.mark.triton
@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_served_wan_video_matches_diffusers_wan_pipeline(
    wan_server: object, diffusers_pipe: WanPipeline, scheduler: str
) -> None:
    from cinetron.transports.triton_grpc import TritonGrpcTransport

    with TritonGrpcTransport(wan_server.grpc_url) as served:  # type: ignore[attr-defined]
        transport = LatentRecorder(served)
        manifest = transport.manifest
        video = Pipeline(transport).generate(
            GenerationRequest(prompt=PROMPT, seed=3, steps=STEPS, scheduler=scheduler)
        )
    assert video.frames.shape == (5, 32, 32, 3) and video.fps == 16

    # The denoising loop: same final latents as diffusers (these carry the seed's signal;
    # the tiny random VAE maps every latent to a nearly identical gray clip).
    ours = transport.decoded[0]
    want = diffusers_run(diffusers_pipe, manifest, scheduler, seed=3, output_type="latent")
    np.testing.assert_allclose(ours, want, atol=1e-4)
    other = diffusers_run(diffusers_pipe, manifest, scheduler, seed=4, output_type="latent")
    assert np.abs(other - want).max() > 0.5, "another seed must give other latents"

    # The decoded frames: same uint8 video as WanPipeline(output_type="np").
    frames = diffusers_run(diffusers_pipe, manifest, scheduler, seed=3, output_type="np")
    diff = np.abs(video.frames.astype(np.float64) - frames)
    # uint8 rounding is 0.5; the rest is onnxruntime-vs-torch float error.
    assert diff.max() <= 1.0, f"max {diff.max():.2f}/255, mean {diff.mean():.3f}"
    assert diff.mean() <= 0.3


# --- CLI and validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [("--frames", "8", "4k+1"), ("--height", "40", "multiple of 16"), ("--width", "0", "multiple")],
)
def test_cli_rejects_a_clip_wan_cannot_make_and_names_valid_values(
    wan_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    expected: str,
) -> None:
    code = export_main(
        [
            "--from-diffusers",
            str(wan_checkpoint),
            "--family",
            "wan",
            "--out",
            str(tmp_path / "repo"),
            flag,
            value,
        ]
    )
    assert code == 1
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "repo" / "cinetron.json").exists()


def test_cli_reports_a_folder_that_is_not_a_diffusers_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = export_main(["--from-diffusers", str(tmp_path), "--family", "wan"])
    assert code == 1
    assert "model_index.json" in capsys.readouterr().err


def test_geometry_accepts_wan_clip_shapes() -> None:
    WanGeometry().validate(4, 8, (1, 2, 2))  # 81 frames at 832x480: Wan2.1's default
    WanGeometry(frames=1, height=16, width=16).validate(4, 8, (1, 2, 2))
    with pytest.raises(ValueError, match="try 81 or 85"):
        WanGeometry(frames=82).validate(4, 8, (1, 2, 2))


# --- gpu flavour (structure + fp16 numerics; no GPU needed) ------------------------------


@pytest.mark.slow
def test_gpu_flavour_stores_fp16_networks_close_to_fp32_and_engine_builds(
    wan_checkpoint: Path, wan_export: ExportReport, tmp_path: Path
) -> None:
    import onnx

    options = RepositoryOptions(flavour="gpu", gpu_backend="tensorrt_plan")
    gpu = export_wan(wan_checkpoint, tmp_path / "gpu", options, GEOMETRY, log=print)
    for name, want in (("text_encoder", True), ("denoiser", True), ("vae_decoder", False)):
        model = onnx.load(str(gpu.out / name / "1" / "model.onnx"))
        has_fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        assert has_fp16 == want, name
        config = read_config(gpu.out / name / "config.pbtxt")
        assert (
            config.platform == "tensorrt_plan" and not (gpu.out / name / "1" / "model.py").exists()
        )
    lines = (gpu.out / "build_engines.sh").read_text().splitlines()
    builds = {line.split("--onnx=")[1].split("/")[0]: line for line in lines if "trtexec" in line}
    assert "--fp16" in builds["denoiser"] and "--fp16" in builds["text_encoder"]
    assert "--fp16" not in builds["vae_decoder"]  # diffusers decodes Wan in fp32
    assert "--maxShapes=latents:4x16x2x4x4" in builds["denoiser"]

    # The fp16 denoiser approximates the fp32 one (served by the cpu flavour) on real inputs.
    rng = np.random.default_rng(0)
    feeds = {
        "latents": rng.standard_normal((2, 16, 2, 4, 4), dtype=np.float32),
        "timestep": np.array([999.0, 300.0], np.float32),
        "text_embeds": rng.standard_normal((2, 16, 32), dtype=np.float32),
        "text_mask": np.ones((2, 16), np.int64),
    }
    half = ort_session(gpu.out / "denoiser" / "1" / "model.onnx").run(["velocity"], feeds)[0]
    full = ort_session(wan_export.out / "denoiser" / "1" / "model.onnx").run(["velocity"], feeds)[0]
    assert np.abs(half - full).max() < 2e-2 * max(1.0, np.abs(full).max())
    assert ModelManifest.load(gpu.out).export_notes["precision"].startswith("text_encoder=fp16")
