"""``config.pbtxt`` for every model, built as ``ModelConfig`` protobufs from ``spec.py``.

Two flavours share the spec and the ONNX files:

- ``cpu``: the ONNX networks run inside Python-backend models (``model.py`` +
  onnxruntime), because the tritonserver we can install has only that backend.
- ``gpu``: native ``onnxruntime_onnx`` with the TensorRT execution accelerator, or
  ``tensorrt_plan`` engines (see ``tensorrt.py``), on ``KIND_GPU`` instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cinetron.contract.repository import ModelSpec, Tensor
from cinetron.export.tensorrt import optimization_profile

Flavour = Literal["cpu", "gpu"]
GpuBackend = Literal["onnxruntime", "tensorrt_plan"]
DEFAULT_OUT: dict[str, Path] = {
    "cpu": Path("model_repository"),
    "gpu": Path("model_repository_gpu"),
}


@dataclass(frozen=True)
class RepositoryOptions:
    flavour: Flavour = "cpu"
    # Denoiser dynamic batching. CFG sends batches of 2, so 2 runs at once for a single
    # user and larger sizes form only when generations overlap.
    preferred_batch_sizes: tuple[int, ...] = (2, 4, 8, 16)
    max_queue_delay_us: int = 1000
    # cpu flavour: onnxruntime threads per instance; instances × threads ≤ cores.
    intra_op_threads: int = 1
    # cpu flavour: onnxruntime's threads busy-wait between parallel sections (its
    # default). Off when instances × threads > cores, or for one instance × 2 threads on
    # 2 cores (the fastest c1 there; `python -m bench sweep`).
    allow_spinning: bool = True
    denoiser_instances: int = 1
    # gpu flavour
    gpu_backend: GpuBackend = "onnxruntime"
    fp16: bool = True
    trt_workspace_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.flavour not in ("cpu", "gpu"):
            raise ValueError(f"flavour must be 'cpu' or 'gpu', got {self.flavour!r}")
        if self.intra_op_threads < 1 or self.denoiser_instances < 1:
            raise ValueError("intra_op_threads and denoiser_instances must be at least 1")
        if self.max_queue_delay_us < 0:
            raise ValueError(
                f"max_queue_delay_us must be ≥ 0 microseconds, got {self.max_queue_delay_us}"
            )
        if not self.preferred_batch_sizes or min(self.preferred_batch_sizes) < 1:
            raise ValueError(
                f"preferred batch sizes must be positive, got {self.preferred_batch_sizes}"
            )


def _io(message: mc.ModelInput | mc.ModelOutput, tensor: Tensor) -> None:
    message.name = tensor.name
    message.data_type = mc.DataType.Value(tensor.dtype)
    message.dims.extend(tensor.dims)
    if tensor.reshape is not None:
        message.reshape.SetInParent()  # an empty shape is meaningful: a scalar per sample
        message.reshape.shape.extend(tensor.reshape)


def _kv(config: mc.ModelConfig, key: str, value: str) -> None:
    config.parameters[key].string_value = value


def model_config(spec: ModelSpec, options: RepositoryOptions) -> mc.ModelConfig:
    """The ``ModelConfig`` of one model in the chosen flavour."""
    config = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    for tensor in spec.inputs:
        _io(config.input.add(), tensor)
    for tensor in spec.outputs:
        _io(config.output.add(), tensor)
    for key, value in spec.parameters.items():  # e.g. the denoiser's cinetron_manifest
        _kv(config, key, value)

    if spec.kind == "ensemble":
        config.platform = "ensemble"
        for step in spec.steps:
            s = config.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
            s.input_map.update(step.inputs)
            s.output_map.update(step.outputs)
        return config

    batching = config.dynamic_batching
    batching.SetInParent()  # every model batches what is already queued
    if spec.tuned_batching:
        sizes = sorted({s for s in options.preferred_batch_sizes if s <= spec.max_batch_size})
        batching.preferred_batch_size.extend(sizes)
        batching.max_queue_delay_microseconds = options.max_queue_delay_us
    instances = options.denoiser_instances if spec.tuned_batching else 1

    if spec.kind == "python":
        config.backend = "python"
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    elif options.flavour == "cpu":
        config.backend = "python"  # model.py runs the ONNX file with onnxruntime
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)
        _kv(config, "onnx_file", "model.onnx")
        _kv(config, "intra_op_threads", str(options.intra_op_threads))
        _kv(config, "allow_spinning", "1" if options.allow_spinning else "0")
    elif options.gpu_backend == "tensorrt_plan":
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=instances)
    else:
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = "model.onnx"
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=instances)
        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        trt.parameters["precision_mode"] = "FP16" if options.fp16 else "FP32"
        trt.parameters["max_workspace_size_bytes"] = str(options.trt_workspace_bytes)
        # Engines take minutes to build; cache them across restarts of the pod.
        trt.parameters["trt_engine_cache_enable"] = "1"
        trt.parameters["trt_engine_cache_path"] = "/tmp/cinetron-trt-cache"
        # One profile over the dynamic axis (batch 1..max), the same as the trtexec builds.
        for key, shapes in optimization_profile(spec).items():
            trt.parameters[f"trt_profile_{key}_shapes"] = shapes
    return config


def to_pbtxt(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def write_config(model_dir: Path, config: mc.ModelConfig) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(to_pbtxt(config))
    return path


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` (raises ``text_format.ParseError`` on a malformed one)."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())
