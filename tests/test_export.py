"""The exported ONNX models and the generated repository (no server needed).

Parity numbers are measured by the export itself (``export/component.py``: onnxruntime vs
torch at batch 1, 2 and 3 on random inputs, and on real prompts/clips) and bounded here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cinetron.contract.manifest import ModelManifest
from cinetron.contract.repository import ONNX_MODELS, repository_spec
from cinetron.export.configs import RepositoryOptions, read_config
from cinetron.export.families.shapes import write_repository
from cinetron.models.loading import DEFAULT_WEIGHTS
from cinetron.triton_backend.sessions import cpu_session

ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.INT64: "TYPE_INT64",
}


def graph_io(path: Path) -> dict[str, tuple[str, tuple[int | str, ...]]]:
    """name → (Triton dtype, shape) of every graph input and output; symbolic dims as str."""
    graph = onnx.load(str(path), load_external_data=False).graph
    io = {}
    for value in [*graph.input, *graph.output]:
        t = value.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim)
        io[value.name] = (ONNX_TO_TRITON[t.elem_type], dims)
    return io


@pytest.fixture(scope="module")
def manifest(model_repository: Path) -> ModelManifest:
    return ModelManifest.load(model_repository)


@pytest.fixture(scope="module")
def gpu_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model_repository_gpu")
    write_repository(
        out, DEFAULT_WEIGHTS, RepositoryOptions(flavour="gpu"), onnx_from=model_repository
    )
    return out


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_model_passes_checker_with_only_the_batch_axis_dynamic(
    model_repository: Path, name: str
) -> None:
    path = model_repository / name / "1" / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    for tensor, (_, dims) in graph_io(path).items():
        assert isinstance(dims[0], str), f"{name}.{tensor}: batch axis is fixed at {dims[0]}"
        assert all(isinstance(d, int) and d > 0 for d in dims[1:]), f"{name}.{tensor}: {dims}"


def test_onnx_matches_torch_for_every_model(exported_repository) -> None:
    parity = {p.model: p for p in exported_repository.parity}
    assert set(parity) == {*ONNX_MODELS, "vae_encoder"}
    for p in parity.values():
        print(p.line())
        # A model that outputs ~0 would pass any bound: make sure there is signal.
        assert p.output_scale > 1e-2, f"{p.model}: torch output is ~0, parity proves nothing"
        bound = 1e-4 * max(1.0, p.output_scale)  # fp32 over a few matmuls, relative to scale
        # batch 1, 2 (the example) and 3 on random inputs, and the real inputs
        assert p.cases == 4
        assert p.max_abs <= bound, f"{p.model}: error {p.max_abs:.2e} > {bound:.1e}"


def test_onnx_batches_are_independent(model_repository: Path, manifest: ModelManifest) -> None:
    """Row i of a batch-3 call equals the batch-1 call on row i (no cross-sample leakage)."""
    session = cpu_session(model_repository / "denoiser" / "1" / "model.onnx")
    rng = np.random.default_rng(0)
    L, D = manifest.text_length, manifest.text_dim
    feeds: dict[str, np.ndarray] = {
        "latents": rng.standard_normal((3, *manifest.latent_shape), dtype=np.float32),
        "timestep": np.array([10.0, 500.0, 990.0], np.float32),
        "text_embeds": rng.standard_normal((3, L, D), dtype=np.float32),
        "text_mask": (np.arange(L)[None] < np.array([[3], [9], [L]])).astype(np.int64),
    }
    batched = session.run(["velocity"], feeds)[0]
    for i in range(3):
        single = session.run(["velocity"], {k: v[i : i + 1] for k, v in feeds.items()})[0]
        np.testing.assert_allclose(batched[i : i + 1], single, atol=1e-5)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_cpu_repository_has_the_seven_models_of_the_contract(
    model_repository: Path, manifest: ModelManifest
) -> None:
    names = {s.name for s in repository_spec(manifest)}
    assert names == {
        "tokenizer", "text_encoder", "encode_prompt", "denoiser",
        "vae_decoder", "postprocess", "decode_video",
    }  # fmt: skip
    for name in names:
        config = read_config(model_repository / name / "config.pbtxt")
        assert config.name == name and config.max_batch_size > 0
        assert (model_repository / name / "1").is_dir()
        if config.platform == "ensemble":
            assert not any((model_repository / name / "1").iterdir()), "ensemble 1/ must be empty"
        else:
            assert config.backend == "python"
            assert (model_repository / name / "1" / "model.py").exists()
    assert (model_repository / "tokenizer" / "1" / "tokenizer" / "tokenizer.json").exists()
    assert json.loads((model_repository / "cinetron.json").read_text())["family"] == "shapes"
    denoiser = read_config(model_repository / "denoiser" / "config.pbtxt")
    assert list(denoiser.dynamic_batching.preferred_batch_size) == [2, 4, 8, 16]
    assert denoiser.max_batch_size == manifest.max_denoiser_batch


def test_export_options_reach_the_denoiser_config(tmp_path: Path, model_repository: Path) -> None:
    options = RepositoryOptions(
        preferred_batch_sizes=(4, 8, 32),
        max_queue_delay_us=250,
        intra_op_threads=2,
        allow_spinning=False,
    )
    write_repository(tmp_path, DEFAULT_WEIGHTS, options, onnx_from=model_repository)
    denoiser = read_config(tmp_path / "denoiser" / "config.pbtxt")
    assert list(denoiser.dynamic_batching.preferred_batch_size) == [4, 8]  # 32 > max batch
    assert denoiser.dynamic_batching.max_queue_delay_microseconds == 250
    assert denoiser.parameters["intra_op_threads"].string_value == "2"
    assert denoiser.parameters["allow_spinning"].string_value == "0"
    default = read_config(model_repository / "denoiser" / "config.pbtxt")
    assert default.parameters["allow_spinning"].string_value == "1"  # onnxruntime's default


def test_gpu_configs_parse_and_match_the_onnx_graphs(gpu_repository: Path) -> None:
    manifest = ModelManifest.load(gpu_repository)
    for spec in repository_spec(manifest):
        text = (gpu_repository / spec.name / "config.pbtxt").read_text()
        config = text_format.Parse(text, mc.ModelConfig())  # raises on any unknown field
        if spec.name not in ONNX_MODELS:
            continue
        assert config.platform == "onnxruntime_onnx"
        assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in config.instance_group)
        (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
        graph = graph_io(gpu_repository / spec.name / "1" / "model.onnx")
        for key, batch in (("min", 1), ("max", config.max_batch_size)):
            profile = dict(
                s.split(":") for s in trt.parameters[f"trt_profile_{key}_shapes"].split(",")
            )
            assert set(profile) == {t.name for t in config.input}, spec.name
            for name, shape in profile.items():
                assert shape == "x".join(map(str, (batch, *graph[name][1][1:]))), (key, name)
        tensors = [*config.input, *config.output]
        assert {t.name for t in tensors} == set(graph), spec.name
        for t in tensors:
            dtype, dims = graph[t.name]
            per_sample = tuple(t.reshape.shape) if t.HasField("reshape") else tuple(t.dims)
            assert mc.DataType.Name(t.data_type) == dtype, f"{spec.name}.{t.name}"
            assert per_sample == dims[1:], f"{spec.name}.{t.name}: {per_sample} vs {dims}"


def test_ensemble_steps_wire_existing_tensors(gpu_repository: Path) -> None:
    configs = {p.parent.name: read_config(p) for p in gpu_repository.glob("*/config.pbtxt")}
    for config in configs.values():
        if config.platform != "ensemble":
            continue
        produced = {i.name for i in config.input}
        for step in config.ensemble_scheduling.step:
            model = configs[step.model_name]
            assert set(step.input_map) == {i.name for i in model.input}, step.model_name
            assert set(step.input_map.values()) <= produced, step.model_name
            assert set(step.output_map) <= {o.name for o in model.output}, step.model_name
            produced |= set(step.output_map.values())
        assert {o.name for o in config.output} <= produced, config.name


def test_tensorrt_plan_flavour_writes_engine_builds_with_matching_profiles(
    tmp_path: Path, model_repository: Path
) -> None:
    options = RepositoryOptions(flavour="gpu", gpu_backend="tensorrt_plan")
    report = write_repository(tmp_path, DEFAULT_WEIGHTS, options, onnx_from=model_repository)
    assert report.engine_script is not None
    script = report.engine_script.read_text()
    for name in ONNX_MODELS:
        config = read_config(tmp_path / name / "config.pbtxt")
        assert config.platform == "tensorrt_plan"
        assert config.default_model_filename == "model.plan"
        line = next(ln for ln in script.splitlines() if f"--onnx={name}/" in ln)
        graph = graph_io(tmp_path / name / "1" / "model.onnx")
        for t in config.input:
            dims = graph[t.name][1][1:]
            for flag, batch in (("min", 1), ("max", config.max_batch_size)):
                shape = "x".join(str(d) for d in (batch, *dims))
                assert f"{t.name}:{shape}" in line.split(f"--{flag}Shapes=")[1].split()[0]
        assert "--fp16" in line
