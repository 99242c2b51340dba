"""``cinetron export``: torch → ONNX, parity check, and the Triton model repository."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cinetron.export.configs import DEFAULT_OUT, RepositoryOptions, add_repository_flags

# On CPU the denoiser is compute-bound (per-sample cost flat in the batch size), so a
# second instance, not a bigger batch, is what lets concurrent generations use the second
# core: about 2× videos/min at concurrency 8 on 2 cores (README, Performance).
CPU_DENOISER_INSTANCES = 2


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


def parser() -> argparse.ArgumentParser:
    from cinetron.models.loading import DEFAULT_WEIGHTS

    p = argparse.ArgumentParser(prog="cinetron export", description=__doc__)
    add_repository_flags(p)
    p.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help="trained weights folder (default: %(default)s, or $CINETRON_WEIGHTS)",
    )
    p.add_argument(
        "--onnx-from",
        type=Path,
        default=None,
        help="reuse the ONNX files of an existing repository instead of re-exporting",
    )
    p.add_argument(
        "--preferred-batch-sizes",
        type=_sizes,
        default=(2, 4, 8, 16),
        help="denoiser dynamic batching preferred sizes (default: 2,4,8,16)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=1000,
        help="denoiser dynamic batching queue delay in microseconds (default: 1000)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="cpu: onnxruntime intra-op threads per model instance (default: 1)",
    )
    p.add_argument(
        "--no-spinning",
        action="store_true",
        help="cpu: onnxruntime threads sleep between parallel sections instead of spinning "
        "(for instances × threads > cores, and the 2-thread latency setting; see README "
        "Performance)",
    )
    p.add_argument(
        "--denoiser-instances",
        type=int,
        default=None,
        help="denoiser model instances (default: cpu 2, so concurrent generations keep both "
        "cores of a 2-core machine busy, measured by `python -m bench sweep`; gpu 1)",
    )
    p.add_argument(
        "--gpu-backend",
        choices=("onnxruntime", "tensorrt_plan"),
        default="onnxruntime",
        help="gpu: onnxruntime with the TensorRT accelerator, or TensorRT engines",
    )
    p.add_argument("--fp32", action="store_true", help="gpu: build TensorRT in fp32, not fp16")
    p.add_argument(
        "--build-engines",
        action="store_true",
        help="gpu + tensorrt_plan: run the trtexec builds now (needs trtexec)",
    )
    return p


def _instances(asked: int | None, flavour: str) -> int:
    if asked is not None:
        return asked
    return CPU_DENOISER_INSTANCES if flavour == "cpu" else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--from-diffusers" or a.startswith("--from-diffusers=") for a in argv):
        # A diffusers checkpoint (Wan2.1, ...): its own flags; see export/diffusers_common.py.
        from cinetron.export.component import main as diffusers_main

        return diffusers_main(argv)
    args = parser().parse_args(argv)
    try:
        options = RepositoryOptions(
            flavour=args.flavour,
            preferred_batch_sizes=args.preferred_batch_sizes,
            max_queue_delay_us=args.max_queue_delay_us,
            intra_op_threads=args.threads,
            allow_spinning=not args.no_spinning,
            denoiser_instances=_instances(args.denoiser_instances, args.flavour),
            gpu_backend=args.gpu_backend,
            fp16=not args.fp32,
        )
    except ValueError as e:
        print(f"cinetron export: {e}", file=sys.stderr)
        return 2
    out = args.out or DEFAULT_OUT[args.flavour]

    from cinetron.export.repository import write_repository

    start = time.perf_counter()
    try:
        report = write_repository(out, args.weights, options, onnx_from=args.onnx_from)
    except FileNotFoundError as e:
        print(f"cinetron export: {e}", file=sys.stderr)
        return 1
    print(
        f"event=export_done flavour={args.flavour} out={out} "
        f"seconds={time.perf_counter() - start:.1f}"
    )

    if report.engine_script is not None:
        print(
            f"TensorRT engines: run {report.engine_script} on the GPU node "
            "(it builds <model>/1/model.plan with trtexec)"
        )
        if args.build_engines:
            if shutil.which("trtexec") is None:
                print(
                    "cinetron export: --build-engines needs trtexec on PATH "
                    "(it ships with TensorRT / the Triton container)",
                    file=sys.stderr,
                )
                return 1
            return subprocess.call([str(report.engine_script.resolve())])
    return 0
