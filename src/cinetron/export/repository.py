"""Write a Triton model repository: configs, ``model.py`` files with the backend package,
tokenizer, engine script and manifest — the same layout for every family.

Layout::

    <out>/cinetron.json                          ModelManifest, written last: its presence
                                                 means the repository is complete
    <out>/<model>/config.pbtxt                   generated from cinetron.contract
    <out>/{text_encoder,denoiser,vae_decoder}/1/model.onnx
    <out>/vae_encoder/...                        optional 8th model (image/video → latents)
    <out>/tokenizer/1/tokenizer/tokenizer.json
    <out>/<python model>/1/model.py              two lines: the class from cinetron_backend
    <out>/<python model>/1/cinetron_backend/     a copy of cinetron.triton_backend
    <out>/{encode_prompt,decode_video}/1/        empty: Triton wants a version dir

Every Python model carries its own copy of the backend package, so a model directory is
self-contained and the serving image needs only ``deploy/docker/triton-requirements.txt``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cinetron import triton_backend
from cinetron.contract.manifest import ModelManifest
from cinetron.contract.names import ONNX_MODELS, Models
from cinetron.contract.repository import (
    ONNX_PYTHON_MODEL,
    ModelSpec,
    encoder_spec,
    repository_spec,
)
from cinetron.export.component import Parity, Precision
from cinetron.export.configs import RepositoryOptions, model_config, write_config
from cinetron.export.tensorrt import build_script, trtexec_command

BACKEND_PACKAGE = "cinetron_backend"  # the name the copy has inside the repository
BACKEND_SOURCE = Path(triton_backend.__file__).resolve().parent
MODEL_PY = '''"""Triton Python model ``{name}``, written by ``cinetron export``.

The class lives in the backend package beside this file ({package}/, a copy of
cinetron.triton_backend: numpy, onnxruntime and tokenizers only).
"""

from {package}.{module} import {cls} as TritonPythonModel

__all__ = ["TritonPythonModel"]
'''


@dataclass(frozen=True)
class ExportReport:
    out: Path
    manifest: ModelManifest
    parity: list[Parity] = field(default_factory=list)  # empty when ONNX files were copied
    engine_script: Path | None = None


def python_model(spec: ModelSpec, options: RepositoryOptions) -> str:
    """``module:Class`` of the backend package behind ``spec``, or "" for none."""
    if spec.kind == "python":
        return spec.python_model
    if spec.kind == "onnx" and options.flavour == "cpu":
        return ONNX_PYTHON_MODEL
    return ""


def copy_backend(version: Path) -> Path:
    """The backend package into a Python model's version directory (the Python backend
    puts that directory on ``sys.path``, so ``model.py`` imports ``cinetron_backend``)."""
    target = version / BACKEND_PACKAGE
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(BACKEND_SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def write_model(out: Path, spec: ModelSpec, options: RepositoryOptions) -> Path:
    """``<out>/<model>/``: its config and, for a Python model, ``model.py`` and the package."""
    version = out / spec.name / "1"
    version.mkdir(parents=True, exist_ok=True)
    write_config(out / spec.name, model_config(spec, options))
    shutil.rmtree(version / BACKEND_PACKAGE, ignore_errors=True)  # the other flavour's
    target = version / "model.py"
    entry = python_model(spec, options)
    if not entry:
        target.unlink(missing_ok=True)  # left there by the other flavour
        return out / spec.name
    module, cls = entry.split(":")
    copy_backend(version)
    target.write_text(
        MODEL_PY.format(name=spec.name, package=BACKEND_PACKAGE, module=module, cls=cls)
    )
    return out / spec.name


def write_layout(
    out: Path, manifest: ModelManifest, options: RepositoryOptions, encoder: bool = False
) -> None:
    """Configs, ``model.py`` files and backend package for the contract models (and
    ``vae_encoder`` when ``encoder``: with ``--model-control-mode=none`` a config without
    its model file stops the server, so it is written only beside an exported encoder).

    ``cinetron.json`` is removed here and written last by ``finish``.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "cinetron.json").unlink(missing_ok=True)
    for spec in repository_spec(manifest):
        write_model(out, spec, options)
    if encoder:
        write_model(out, encoder_spec(manifest), options)
    else:
        shutil.rmtree(out / Models.VAE_ENCODER, ignore_errors=True)


def install_tokenizer(out: Path, tokenizer_json: Path) -> Path:
    """``tokenizer.json`` where the ``tokenizer`` model reads it."""
    dst = out / Models.TOKENIZER / "1" / "tokenizer" / "tokenizer.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, dst)
    return dst


def engine_commands(
    manifest: ModelManifest, precisions: dict[str, Precision], models: Sequence[str] = ONNX_MODELS
) -> list[list[str]]:
    """One trtexec build per ONNX model at that model's precision; the optimisation profile
    spans batch 1 (min), 2 (opt: one CFG pair) and max_batch_size, every other dim fixed."""
    by_name = {s.name: s for s in (*repository_spec(manifest), encoder_spec(manifest))}
    return [
        trtexec_command(
            by_name[name],
            Path(name) / "1" / "model.onnx",
            Path(name) / "1" / "model.plan",
            fp16=precisions.get(name, "fp32") == "fp16",
        )
        for name in models
    ]


def engine_script(
    out: Path, manifest: ModelManifest, precisions: dict[str, Precision], models: Sequence[str]
) -> Path:
    """``build_engines.sh`` beside the repository's models; run it on the GPU node, since
    engines are tied to the GPU and TensorRT version."""
    script = out / "build_engines.sh"
    script.write_text(build_script(engine_commands(manifest, precisions, models)))
    script.chmod(0o755)
    return script


def copy_onnx(source: Path, out: Path, models: Sequence[str]) -> None:
    """Reuse another repository's ONNX files (e.g. the cpu export for the gpu flavour)."""
    for name in models:
        src = source / name / "1" / "model.onnx"
        if not src.exists():
            raise FileNotFoundError(f"--onnx-from {source}: {src} does not exist")
        dst = out / name / "1" / "model.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not (dst.exists() and dst.resolve() == src.resolve()):
            shutil.copyfile(src, dst)


def finish(
    out: Path,
    manifest: ModelManifest,
    options: RepositoryOptions,
    parity: list[Parity],
    precisions: dict[str, Precision] | None = None,
) -> ExportReport:
    """The engine script (gpu + tensorrt_plan) and, last, ``cinetron.json``."""
    script = None
    if options.flavour == "gpu" and options.gpu_backend == "tensorrt_plan":
        onnx = [m for m in (*ONNX_MODELS, Models.VAE_ENCODER) if (out / m / "1").exists()]
        default: Precision = "fp16" if options.fp16 else "fp32"
        script = engine_script(out, manifest, precisions or dict.fromkeys(onnx, default), onnx)
    (out / "cinetron.json").write_text(manifest.to_json())
    return ExportReport(out, manifest, parity, script)
