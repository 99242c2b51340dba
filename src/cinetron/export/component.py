"""Exporting diffusers checkpoints: what every family shares.

A family module (``export/wan.py``) turns a local diffusers folder into three
``Component``s (text encoder, denoiser, VAE decoder) with the contract's tensor
names, plus a ``ModelManifest``. This module exports each component with the
dynamo exporter, checks onnxruntime against torch on several shapes, and writes
the same Triton repository layout as the built-in model (``spec.py`` → configs).

Measured choices (EXPORT_NOTES.md): dynamo only (the TorchScript exporter gives
silently wrong dynamic axes on these transformers); example inputs with batch ≥ 2
(dynamo freezes an axis that is 1 in the example); external data past 2 GB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn

from cinetron.contract.manifest import ModelManifest
from cinetron.contract.repository import ONNX_MODELS, repository_spec
from cinetron.export.configs import DEFAULT_OUT, RepositoryOptions, add_repository_flags
from cinetron.export.tensorrt import build_script, trtexec_command

OPSET = 20
EXAMPLE_BATCH = 2
# Past this many bytes of weights, write them beside the graph (`model.onnx.data`):
# protobuf cannot hold a message over 2 GB.
EXTERNAL_DATA_BYTES = 1_500_000_000
# The Triton `denoiser` config carries cinetron.json for clients that only see Triton.
# Committed Python-backend model.py files (source checkout / editable install).
COMMITTED_REPOSITORY = Path(__file__).resolve().parents[3] / "model_repository"

Precision = Literal["fp32", "fp16"]
Feeds = dict[str, npt.NDArray[np.generic]]
Log = Callable[[str], None]

_NOISY_LOGGERS = (
    "torch.onnx._internal.exporter._registration",
    "onnxscript.optimizer._constant_folding",
)


class ExportError(RuntimeError):
    """The export failed or its ONNX graph disagrees with torch."""


@dataclass
class Component:
    """One network to export under the contract's model name and tensor names.

    ``checks`` are inputs at other batch sizes / spatial sizes than the example, so a
    wrongly frozen axis shows up as a shape error or a parity failure here, not in
    production. ``reference`` is the fp32 module to compare against when ``module``
    runs in fp16 (an fp16 graph is checked against the fp32 model it approximates).
    """

    name: str
    module: nn.Module
    input_names: tuple[str, ...]
    output_name: str
    example: Feeds  # batch EXAMPLE_BATCH
    dynamic_shapes: dict[str, dict[int, Any]]
    checks: list[Feeds]
    precision: Precision = "fp32"
    reference: nn.Module | None = None
    # Max |onnx - torch| allowed, relative to max(1, max |torch output|).
    tolerance: float = 1e-3
    optimize: bool = True
    # Per-sample shapes the served graph is pinned to (graph input/output name → dims
    # without the batch); ``served_check`` runs on the pinned graph when it is cheap.
    served_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    served_check: Feeds | None = None

    def weight_bytes(self) -> int:
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class Parity:
    model: str
    max_abs: float
    output_scale: float
    cases: int
    export_s: float
    external_data: bool

    def line(self) -> str:
        return (
            f"parity model={self.model} max_abs={self.max_abs:.2e} "
            f"output_max_abs={self.output_scale:.2f} cases={self.cases} "
            f"export_s={self.export_s:.1f} external_data={str(self.external_data).lower()}"
        )


def torch_run(module: nn.Module, names: Sequence[str], feeds: Feeds) -> npt.NDArray[np.float32]:
    with torch.inference_mode():
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]
        return module(*args).float().numpy()


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_component(component: Component, path: Path) -> tuple[float, bool]:
    """Write ``path`` (and ``path.data`` when large); returns (seconds, external data?)."""
    start = time.perf_counter()
    args = tuple(torch.from_numpy(component.example[n]) for n in component.input_names)
    external = component.weight_bytes() > EXTERNAL_DATA_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                component.module,
                args,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(component.input_names),
                output_names=[component.output_name],
                dynamic_shapes=component.dynamic_shapes,
                optimize=component.optimize,
                verbose=False,
            )
        except Exception as e:
            raise ExportError(f"{component.name}: torch.onnx.export failed: {e}") from e
    assert program is not None
    program.save(str(path), external_data=external)
    # The full check runs shape inference over every node: affordable only for small graphs.
    onnx.checker.check_model(str(path), full_check=not external)
    return time.perf_counter() - start, external


def pin_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Fix every non-batch axis of the named graph inputs/outputs to the served size.

    The export keeps latent/spatial axes symbolic so parity can be checked on small,
    cheap inputs; the served graph then gets the exact shapes of the Triton config
    (runtimes and TensorRT plan for one shape; only the batch stays dynamic).
    """
    model = onnx.load(str(path), load_external_data=False)  # weights stay where they are
    for value in [*model.graph.input, *model.graph.output]:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shapes[value.name]) + 1:
            raise ExportError(
                f"{path}: {value.name!r} has rank {len(dims)}, expected batch + "
                f"{shapes[value.name]}; the wrapper and the repository spec disagree"
            )
        for axis, size in enumerate(shapes[value.name], start=1):
            dims[axis].ClearField("dim_param")
            dims[axis].dim_value = size
    onnx.save(model, str(path))


def check_parity(
    component: Component,
    path: Path,
    export_s: float,
    external: bool,
    cases: Sequence[Feeds] | None = None,
) -> Parity:
    """onnxruntime vs torch on ``cases`` (default: the example and every check case);
    raises ``ExportError`` past the tolerance."""
    session = ort_session(path)
    reference = component.reference or component.module
    worst = scale = 0.0
    cases = [component.example, *component.checks] if cases is None else list(cases)
    for i, feeds in enumerate(cases):
        got = session.run([component.output_name], feeds)[0]
        want = torch_run(reference, component.input_names, feeds)
        if got.shape != want.shape:
            shapes = {n: feeds[n].shape for n in component.input_names}
            raise ExportError(
                f"{component.name}: ONNX output shape {got.shape} != torch {want.shape} for "
                f"inputs {shapes} (case {i}); an axis was frozen at export"
            )
        worst = max(worst, float(np.abs(got.astype(np.float32) - want).max()))
        scale = max(scale, float(np.abs(want).max()))
    limit = component.tolerance * max(1.0, scale)
    if not worst <= limit:  # `not <=` also catches NaN
        raise ExportError(
            f"{component.name}: onnxruntime differs from torch by {worst:.3e} (limit {limit:.1e}, "
            f"{component.precision}); the exported graph is wrong, do not serve it"
        )
    return Parity(component.name, worst, scale, len(cases), export_s, external)


def export_components(components: Sequence[Component], out: Path, log: Log = print) -> list[Parity]:
    """Export each component to ``out/<name>/1/model.onnx`` and check it."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for component in components:
        log(
            f"event=export_start model={component.name} precision={component.precision} "
            f"weights_mb={component.weight_bytes() / 1e6:.0f}"
        )
        path = out / component.name / "1" / "model.onnx"
        seconds, external = export_component(component, path)
        result = check_parity(component, path, seconds, external)
        if component.served_shapes:
            pin_shapes(path, component.served_shapes)
            if component.served_check is not None:
                served = check_parity(
                    component, path, seconds, external, cases=[component.served_check]
                )
                result = Parity(
                    result.model,
                    max(result.max_abs, served.max_abs),
                    max(result.output_scale, served.output_scale),
                    result.cases + 1,
                    seconds,
                    external,
                )
        log(result.line())
        results.append(result)
    return results


# --- repository layout: write_layout (shared with the shapes export) + tokenizer ---------


def copy_tokenizer(src: Path, out: Path) -> Path:
    """Copy a checkpoint's ``tokenizer/`` folder and make sure it has ``tokenizer.json``.

    The Triton ``tokenizer`` model uses the ``tokenizers`` library only, which reads
    ``tokenizer.json``; a checkpoint that ships only ``spiece.model`` gets one written
    by transformers' converter (the same fast tokenizer diffusers itself would load).
    """
    dst = out / "tokenizer" / "1" / "tokenizer"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    if not (dst / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(src), use_fast=True)
        fast.backend_tokenizer.save(str(dst / "tokenizer.json"))
    return dst / "tokenizer.json"


def engine_commands(manifest: ModelManifest, precisions: dict[str, Precision]) -> list[list[str]]:
    """One trtexec build per ONNX model at that model's precision; the optimisation profile
    spans batch 1 (min), 2 (opt: one CFG pair) and max_batch_size, every other dim fixed."""
    by_name = {s.name: s for s in repository_spec(manifest)}
    return [
        trtexec_command(
            by_name[name],
            Path(name) / "1" / "model.onnx",
            Path(name) / "1" / "model.plan",
            fp16=precisions.get(name, "fp32") == "fp16",
        )
        for name in ONNX_MODELS
    ]


def engine_script(out: Path, manifest: ModelManifest, precisions: dict[str, Precision]) -> Path:
    """``build_engines.sh`` beside the repository's models; run it on the GPU node."""
    script = out / "build_engines.sh"
    script.write_text(build_script(engine_commands(manifest, precisions)))
    script.chmod(0o755)
    return script


def finish_repository(out: Path, manifest: ModelManifest) -> Path:
    path = out / "cinetron.json"
    path.write_text(manifest.to_json())
    return path


def checkpoint_fingerprint(folder: Path, extra: dict[str, Any]) -> str:
    """A short, fast version id: every config file, the weight files' names, sizes and first
    MiB, and the export settings (hashing tens of GB of weights would take minutes)."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        h.update(rel.encode())
        if path.suffix == ".json":
            h.update(path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".pt"):
            h.update(str(path.stat().st_size).encode())
            with path.open("rb") as f:
                h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


# --- CLI --------------------------------------------------------------------------------


def family_modules() -> dict[str, str]:
    """Family name → module with ``add_arguments(parser)`` and ``export_from_args(args, log)``."""
    return {"wan": "cinetron.export.families.wan"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cinetron export --from-diffusers",
        description="Export a local diffusers checkpoint into a Triton model repository.",
    )
    p.add_argument(
        "--from-diffusers",
        type=Path,
        required=True,
        metavar="PATH",
        help="the diffusers folder (model_index.json, transformer/, vae/, ...)",
    )
    p.add_argument(
        "--family",
        choices=sorted(family_modules()),
        default="wan",
        help="model family (default: %(default)s)",
    )
    add_repository_flags(p, gpu_note=", fp16")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="cpu: onnxruntime intra-op threads per model instance (default: 1)",
    )
    p.add_argument(
        "--gpu-backend",
        choices=("onnxruntime", "tensorrt_plan"),
        default="onnxruntime",
        help="gpu: onnxruntime with the TensorRT accelerator, or TensorRT engines",
    )
    p.add_argument(
        "--fp32",
        action="store_true",
        help="gpu: keep every network in fp32 (default: fp16 where it is safe)",
    )
    p.add_argument(
        "--preferred-batch-sizes",
        type=str,
        default="2,4",
        help="denoiser dynamic batching preferred sizes (default: 2,4)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=1000,
        help="denoiser dynamic batching queue delay in microseconds (default: 1000)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    import importlib

    families = family_modules()
    # First only --family (no -h here), so that --help lists that family's flags too.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--family", choices=sorted(families), default="wan")
    known, _ = pre.parse_known_args(argv)
    family = importlib.import_module(families[known.family])
    p = parser()
    family.add_arguments(p)
    args = p.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.preferred_batch_sizes.split(",") if s.strip())
        options = RepositoryOptions(
            flavour=args.flavour,
            preferred_batch_sizes=sizes,
            max_queue_delay_us=args.max_queue_delay_us,
            intra_op_threads=args.threads,
            gpu_backend=args.gpu_backend,
            fp16=not args.fp32,
        )
    except ValueError as e:
        print(f"cinetron export: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        args.out = DEFAULT_OUT[args.flavour]
    start = time.perf_counter()
    try:
        family.export_from_args(args, options, print)
    except (FileNotFoundError, ValueError, ExportError) as e:
        print(f"cinetron export: {e}", file=sys.stderr)
        return 1
    print(
        f"event=export_done family={args.family} flavour={args.flavour} out={args.out} "
        f"seconds={time.perf_counter() - start:.1f}"
    )
    return 0
