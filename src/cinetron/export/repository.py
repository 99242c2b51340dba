"""Write a Triton model repository: configs, model.py files, ONNX files, tokenizer, manifest.

Layout (the shared contract)::

    <out>/cinetron.json                          ModelManifest, written last: its presence
                                                 means the repository is complete
    <out>/<model>/config.pbtxt                   generated from spec.py
    <out>/{text_encoder,denoiser,vae_decoder}/1/model.onnx
    <out>/vae_encoder/...                        optional 8th model (image/video → latents)
    <out>/tokenizer/1/tokenizer/tokenizer.json
    <out>/<python model>/1/model.py              copied from the committed model_repository/
    <out>/{encode_prompt,decode_video}/1/        empty: Triton wants a version dir
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cinetron.contract.manifest import ModelManifest
from cinetron.contract.repository import ENCODER_MODEL, ONNX_MODELS, encoder_spec, repository_spec
from cinetron.export.configs import RepositoryOptions, model_config, write_config
from cinetron.export.tensorrt import build_script, trtexec_command

if TYPE_CHECKING:  # onnx_export imports torch; only the cpu export path needs it
    from cinetron.export.families.shapes import Parity

# The committed Python-backend model.py files (source checkout, editable install).
COMMITTED_REPOSITORY = Path(__file__).resolve().parents[3] / "model_repository"


@dataclass(frozen=True)
class ExportReport:
    out: Path
    parity: list[Parity]  # empty when the ONNX files were copied (--onnx-from)
    engine_script: Path | None
    encoder_parity: Parity | None = None  # the optional vae_encoder; None when copied/absent


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and dst.resolve() == src.resolve():
        return  # exporting into the committed repository itself
    shutil.copyfile(src, dst)


def _needs_model_py(kind: str, options: RepositoryOptions) -> bool:
    return kind == "python" or (kind == "onnx" and options.flavour == "cpu")


def write_layout(out: Path, manifest: ModelManifest, options: RepositoryOptions) -> None:
    """Configs and committed ``model.py`` files for the contract models of any family.

    ``cinetron.json`` is removed here and written last by the caller: its presence
    means the repository is complete.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "cinetron.json").unlink(missing_ok=True)
    for spec in repository_spec(manifest):
        model_dir = out / spec.name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        write_config(model_dir, model_config(spec, options))
        target = model_dir / "1" / "model.py"
        if _needs_model_py(spec.kind, options):
            src = COMMITTED_REPOSITORY / spec.name / "1" / "model.py"
            if not src.exists():
                raise FileNotFoundError(
                    f"{src} is missing: the Python-backend models are committed code; "
                    "run `cinetron export` from a source checkout of cinetron"
                )
            _copy(src, target)
        else:
            target.unlink(missing_ok=True)  # left there by the other flavour


def write_repository(
    out: Path,
    weights: Path,
    options: RepositoryOptions,
    onnx_from: Path | None = None,
    log: Callable[[str], None] = print,
) -> ExportReport:
    """Export the shapes model from ``weights`` into the repository ``out``.

    ``onnx_from``: an existing repository whose ONNX files to reuse (e.g. the cpu
    repository when writing the gpu one) instead of exporting from torch again.
    """
    from cinetron.models.loading import shapes_manifest
    from cinetron.models.text_encoder import tokenizer_file

    manifest = shapes_manifest(weights)
    specs = repository_spec(manifest)
    write_layout(out, manifest, options)
    _copy(tokenizer_file(), out / "tokenizer" / "1" / "tokenizer" / "tokenizer.json")

    onnx_paths = {name: out / name / "1" / "model.onnx" for name in ONNX_MODELS}
    parity: list[Parity] = []
    if onnx_from is not None:
        for name, dst in onnx_paths.items():
            src = onnx_from / name / "1" / "model.onnx"
            if not src.exists():
                raise FileNotFoundError(f"--onnx-from {onnx_from}: {src} does not exist")
            _copy(src, dst)
    else:
        from cinetron.export.families.shapes import export_all

        parity = export_all(weights, manifest, onnx_paths, log=log)

    encoder_parity = _write_encoder(out, weights, manifest, options, onnx_from, log)

    script = None
    if options.flavour == "gpu" and options.gpu_backend == "tensorrt_plan":
        by_name = {s.name: s for s in specs}
        commands = [
            trtexec_command(
                by_name[name],
                Path(name) / "1" / "model.onnx",
                Path(name) / "1" / "model.plan",
                fp16=options.fp16,
            )
            for name in ONNX_MODELS
        ]
        script = out / "build_engines.sh"
        script.write_text(build_script(commands))
        script.chmod(0o755)

    (out / "cinetron.json").write_text(manifest.to_json())
    return ExportReport(out, parity, script, encoder_parity)


def _write_encoder(
    out: Path,
    weights: Path,
    manifest: ModelManifest,
    options: RepositoryOptions,
    onnx_from: Path | None,
    log: Callable[[str], None],
) -> Parity | None:
    """The optional ``vae_encoder``: exported from torch, or copied when ``onnx_from`` has it.

    Its config is written only next to its ONNX file: with ``--model-control-mode=none``
    a config without a model would stop the whole server from starting.
    """
    model_dir = out / ENCODER_MODEL
    onnx_path = model_dir / "1" / "model.onnx"
    parity = None
    if onnx_from is not None:
        src = onnx_from / ENCODER_MODEL / "1" / "model.onnx"
        if not src.exists():
            shutil.rmtree(model_dir, ignore_errors=True)
            return None
        _copy(src, onnx_path)
    else:
        from cinetron.export.families.shapes import export_encoder

        parity = export_encoder(weights, manifest, onnx_path, log=log)
    write_config(model_dir, model_config(encoder_spec(manifest), options))
    if _needs_model_py("onnx", options):
        _copy(COMMITTED_REPOSITORY / ENCODER_MODEL / "1" / "model.py", model_dir / "1" / "model.py")
    return parity
