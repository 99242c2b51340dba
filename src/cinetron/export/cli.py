"""``cinetron export``: torch → ONNX with parity, and the Triton model repository.

The built-in shapes model by default (``--weights``); a local diffusers checkpoint with
``--from-diffusers PATH --family wan``. Both go through the same path
(``component.py`` → ``repository.py``) and take the same serving flags.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from cinetron.export.component import ExportError
from cinetron.export.configs import DEFAULT_OUT, RepositoryOptions

# On CPU the denoiser is compute-bound (per-sample cost flat in the batch size), so a
# second instance, not a bigger batch, is what lets concurrent generations use the second
# core: about 2× videos/min at concurrency 8 on 2 cores (docs/performance.md).
CPU_DENOISER_INSTANCES = 2
# Per family: denoiser batch sizes (Wan: two CFG pairs; a 480p batch of 16 fits few GPUs).
PREFERRED_BATCH_SIZES = {"shapes": (2, 4, 8, 16), "wan": (2, 4)}
FAMILIES = {"wan": "cinetron.export.families.wan"}  # diffusers families (--from-diffusers)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated batch sizes like 2,4,8,16, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return sizes


def parser(family: ModuleType | None = None) -> argparse.ArgumentParser:
    from cinetron.models.loading import DEFAULT_WEIGHTS

    p = argparse.ArgumentParser(prog="cinetron export", description=__doc__)
    p.add_argument(
        "--flavour",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu: Python-backend + onnxruntime (runs here); gpu: native backends, fp16",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="repository folder (default: model_repository, gpu: model_repository_gpu)",
    )
    src = p.add_argument_group("what to export")
    src.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help="shapes: trained weights folder (default: %(default)s, or $CINETRON_WEIGHTS)",
    )
    src.add_argument(
        "--onnx-from",
        type=Path,
        default=None,
        help="shapes: reuse the ONNX files of an existing repository instead of re-exporting",
    )
    src.add_argument(
        "--from-diffusers",
        type=Path,
        default=None,
        metavar="PATH",
        help="a local diffusers checkpoint (model_index.json, transformer/, vae/, ...)",
    )
    src.add_argument(
        "--family", choices=sorted(FAMILIES), default="wan", help="with --from-diffusers"
    )
    serve = p.add_argument_group("serving")
    serve.add_argument(
        "--preferred-batch-sizes",
        type=_sizes,
        default=None,
        help="denoiser dynamic batching preferred sizes (default: shapes 2,4,8,16; wan 2,4)",
    )
    serve.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=1000,
        help="denoiser dynamic batching queue delay in microseconds (default: 1000)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=1,
        help="cpu: onnxruntime intra-op threads per model instance (default: 1)",
    )
    serve.add_argument(
        "--no-spinning",
        action="store_true",
        help="cpu: onnxruntime threads sleep between parallel sections instead of spinning "
        "(for instances × threads > cores, and the 2-thread latency setting; see "
        "docs/performance.md)",
    )
    serve.add_argument(
        "--denoiser-instances",
        type=int,
        default=None,
        help="denoiser model instances (default: shapes on cpu 2, so concurrent generations "
        "keep both cores of a 2-core machine busy, measured by `python -m bench sweep`; else 1)",
    )
    serve.add_argument(
        "--gpu-backend",
        choices=("onnxruntime", "tensorrt_plan"),
        default="onnxruntime",
        help="gpu: onnxruntime with the TensorRT accelerator, or TensorRT engines",
    )
    serve.add_argument(
        "--fp32", action="store_true", help="gpu: keep every network in fp32 (default: fp16)"
    )
    serve.add_argument(
        "--build-engines",
        action="store_true",
        help="gpu + tensorrt_plan: run the trtexec builds now (needs trtexec)",
    )
    if family is not None:
        family.add_arguments(p)
    return p


def options_from(args: argparse.Namespace, family: str) -> RepositoryOptions:
    """Raises ``ValueError`` naming the bad setting."""
    instances = args.denoiser_instances
    if instances is None:
        instances = CPU_DENOISER_INSTANCES if family == "shapes" and args.flavour == "cpu" else 1
    return RepositoryOptions(
        flavour=args.flavour,
        preferred_batch_sizes=args.preferred_batch_sizes or PREFERRED_BATCH_SIZES[family],
        max_queue_delay_us=args.max_queue_delay_us,
        intra_op_threads=args.threads,
        allow_spinning=not args.no_spinning,
        denoiser_instances=instances,
        gpu_backend=args.gpu_backend,
        fp16=not args.fp32,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # First only the source (no -h here), so that --help lists the family's flags too.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--from-diffusers", type=Path, default=None)
    pre.add_argument("--family", choices=sorted(FAMILIES), default="wan")
    known, _ = pre.parse_known_args(argv)
    module = importlib.import_module(FAMILIES[known.family]) if known.from_diffusers else None
    args = parser(module).parse_args(argv)
    family = args.family if module is not None else "shapes"
    try:
        options = options_from(args, family)
    except ValueError as e:
        print(f"cinetron export: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        args.out = DEFAULT_OUT[args.flavour]
    start = time.perf_counter()
    try:
        if module is not None:
            report = module.export_from_args(args, options, print)
        else:
            from cinetron.export.families.shapes import write_repository

            report = write_repository(args.out, args.weights, options, onnx_from=args.onnx_from)
    except (FileNotFoundError, ValueError, ExportError) as e:
        print(f"cinetron export: {e}", file=sys.stderr)
        return 1
    print(
        f"event=export_done family={family} flavour={args.flavour} out={args.out} "
        f"seconds={time.perf_counter() - start:.1f}"
    )
    if report.engine_script is None:
        return 0
    print(
        f"TensorRT engines: run {report.engine_script} on the GPU node "
        "(it builds <model>/1/model.plan with trtexec)"
    )
    if not args.build_engines:
        return 0
    if shutil.which("trtexec") is None:
        print(
            "cinetron export: --build-engines needs trtexec on PATH "
            "(it ships with TensorRT / the Triton container)",
            file=sys.stderr,
        )
        return 1
    return subprocess.call([str(report.engine_script.resolve())])
