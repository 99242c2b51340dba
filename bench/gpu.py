"""``python -m bench gpu``: what cross-request step batching buys on an accelerator.

The committed shapes model (``weights/``) as eager PyTorch on one device (``--device``:
``cuda`` when there is one; ``cpu`` runs the same code, slowly, for the tests), in fp32
and under bf16 autocast:

1. One denoiser call (the DiT, inputs already on the device) at batch 2, 4, 8, 16 samples:
   median ms per call and per sample over ``--repeats`` calls after ``--warmup``, each call
   timed alone (CUDA events; ``perf_counter`` on the CPU), and the smallest batch called
   ``largest / smallest`` times back to back. The headline is ``t(16) / (8 × t(2))``: one
   call carrying 8 CFG pairs against 8 calls of one pair.
2. Videos per minute end to end (prompt lookup, every CFG step, VAE decode, uint8 frames
   back on the host) at concurrency 1 and ``c``: ``c`` caller threads each running
   ``Pipeline.generate`` (every CFG step its own call of batch 2, as with no batcher)
   against the same ``c`` generations in lockstep (``Pipeline.generate_lockstep``: the same
   sampling loop on a batch), one denoiser call of batch ``2c`` per step (what Triton's
   dynamic batcher forms from ``c`` callers at work).

Not measured: the text encoder (prompt embeddings are encoded beforehand by the real
MiniLM and looked up; ``--write-embeddings`` writes them on a machine that has it, for one
that has not), MP4 encoding, gRPC and Triton. The served GPU flavour runs onnxruntime with
TensorRT (fp16), not eager torch: read these numbers as the shape of the batching curve,
not as the served cost. Prints a Markdown table, writes ``bench/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from bench.output import emit
from cinetron.contract.manifest import ModelManifest
from cinetron.core.pipeline import Pipeline
from cinetron.core.prompts import encoder_texts
from cinetron.core.request import GenerationRequest
from cinetron.core.transport import PromptEmbeddings, Transport
from cinetron.transports.torch_local import DTYPES, TorchNetworks

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
MODES = {
    "one": "one at a time",
    "threads": "c callers, one call per CFG step (no batcher)",
    "batched": "c callers, steps batched (one call of 2c)",
}


class PromptTable:
    """Text embeddings encoded beforehand: ``[N, L, D]`` embeds, ``[N, L]`` mask, ``[N]``
    token counts, one row per text the pipeline gives the encoder (a prompt, or each
    phrase of one: ``core/prompts.py``). The last text is the negative prompt; the
    ``workload`` (the prompts videos are made from) is every other row unless given."""

    def __init__(
        self,
        prompts: Sequence[str],
        embeds: npt.NDArray[np.float32],
        mask: npt.NDArray[np.int64],
        token_counts: npt.NDArray[np.int64],
        workload: Sequence[str] | None = None,
    ) -> None:
        self.prompts = list(prompts)
        self.embeds, self.mask, self.token_counts = embeds, mask, token_counts
        self.workload = list(workload) if workload is not None else self.prompts[:-1]
        self._row = {p: i for i, p in enumerate(self.prompts)}

    def lookup(self, prompts: Sequence[str]) -> PromptEmbeddings:
        missing = [p for p in prompts if p not in self._row]
        if missing:
            raise KeyError(
                f"no embeddings for prompt {missing[0]!r} in the table of {len(self.prompts)} "
                "prompts; write the table again with `python -m bench gpu --write-embeddings`"
            )
        rows = [self._row[p] for p in prompts]
        return PromptEmbeddings(self.embeds[rows], self.mask[rows], self.token_counts[rows])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            prompts=np.array(self.prompts),
            embeds=self.embeds,
            mask=self.mask,
            token_counts=self.token_counts,
            workload=np.array(self.workload),
        )

    @classmethod
    def load(cls, path: Path, manifest: ModelManifest) -> PromptTable:
        with np.load(path) as f:
            table = cls(
                [str(p) for p in f["prompts"]],
                f["embeds"].astype(np.float32),
                f["mask"].astype(np.int64),
                f["token_counts"].astype(np.int64),
                [str(p) for p in f["workload"]] if "workload" in f.files else None,
            )
        want = (len(table.prompts), manifest.text_length, manifest.text_dim)
        if table.embeds.shape != want or len(table.prompts) < 2:
            raise ValueError(
                f"{path}: embeddings of shape {table.embeds.shape}, expected {want} (at least "
                "one prompt and the negative prompt) for this model; write it again with "
                "`python -m bench gpu --write-embeddings`"
            )
        return table

    @staticmethod
    def texts_for(prompts: Sequence[str], manifest: ModelManifest) -> list[str]:
        """The rows a table of ``prompts`` needs: every text the pipeline gives the encoder
        for them, once each, then the negative prompt."""
        texts = dict.fromkeys(t for ts in encoder_texts(prompts, manifest.scene) for t in ts)
        texts.pop(manifest.negative_prompt, None)
        return [*texts, manifest.negative_prompt]

    @classmethod
    def encode(cls, prompts: Sequence[str], weights: Path) -> PromptTable:
        """The real text encoder, on the CPU; the model's negative prompt is appended."""
        from cinetron.transports.torch_local import TorchTransport

        transport = TorchTransport(weights)
        everything = cls.texts_for(prompts, transport.manifest)
        e = transport.encode_prompt(everything)
        return cls(everything, e.embeds, e.mask, e.token_counts, prompts)


class DeviceTorchTransport(TorchNetworks):
    """The reference DiT and VAE (``TorchNetworks``) on ``device`` in ``dtype``, so
    ``Pipeline`` runs unchanged; prompts from a ``PromptTable``."""

    def __init__(self, weights: Path, device: str, dtype: str, table: PromptTable) -> None:
        super().__init__(weights, device=device, dtype=dtype)
        self.table = table

    def encode_prompt(self, prompts: list[str], request_id: str = "") -> PromptEmbeddings:
        return self.table.lookup(prompts)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn``, each timed alone after ``warmup``
    untimed ones: CUDA events on a GPU (the device's time, launch gaps included), else
    ``perf_counter``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return times


def denoiser_inputs(transport: DeviceTorchTransport, batch: int) -> tuple[torch.Tensor, ...]:
    """Seeded latents, timestep 500 and table prompts for a call of ``batch`` samples, on
    the transport's device: ``[B, C, T, H, W]``, ``[B]``, ``[B, L, D]``, ``[B, L]``."""
    rows = [i % len(transport.table.prompts) for i in range(batch)]
    latents = torch.randn(
        (batch, *transport.manifest.latent_shape), generator=torch.Generator().manual_seed(batch)
    )
    host = (
        latents,
        torch.full((batch,), 500.0),
        torch.from_numpy(transport.table.embeds[rows]),
        torch.from_numpy(transport.table.mask[rows]),
    )
    return tuple(t.to(transport.device) for t in host)


def denoiser_calls(
    transport: DeviceTorchTransport, batches: Sequence[int], warmup: int, repeats: int
) -> list[dict[str, Any]]:
    """One DiT call per batch size, inputs already on the device (no host copies); and the
    smallest batch ``largest / smallest`` times back to back, the work of the largest."""

    def calls(inputs: tuple[torch.Tensor, ...], n: int = 1) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), transport.autocast():
                for _ in range(n):
                    transport.dit(*inputs)

        return run

    rows = []
    for batch in batches:
        times = time_ms(calls(denoiser_inputs(transport, batch)), transport.device, warmup, repeats)
        median = statistics.median(times)
        rows.append(
            {
                "dtype": transport.dtype,
                "batch": batch,
                "ms_per_call": median,
                "ms_per_call_min": min(times),
                "ms_per_sample": median / batch,
                "calls_timed": len(times),
            }
        )
    smallest, largest = min(batches), max(batches)
    if largest % smallest == 0 and largest > smallest:
        k = largest // smallest
        run = calls(denoiser_inputs(transport, smallest), k)
        times = time_ms(run, transport.device, max(1, warmup // k), max(1, repeats // 2))
        small = next(r for r in rows if r["batch"] == smallest)
        small["back_to_back"] = {"calls": k, "ms": statistics.median(times)}
    return rows


def _requests(
    prompts: Iterator[str], seeds: Iterator[int], n: int, steps: int | None
) -> list[GenerationRequest]:
    return [GenerationRequest(next(prompts), seed=next(seeds), steps=steps) for _ in range(n)]


def run_point(
    transport: Transport, mode: str, concurrency: int, jobs: list[GenerationRequest]
) -> dict[str, Any]:
    """Make every video of ``jobs`` the ``mode`` way; wall time and per-video latency."""
    latencies: list[float] = []
    pipeline = Pipeline(transport)  # thread-safe: its prompt cache locks, the loop is local

    def one(request: GenerationRequest) -> float:
        t0 = time.perf_counter()
        pipeline.generate(request)
        return time.perf_counter() - t0

    start = time.perf_counter()
    if mode == "one":
        latencies = [one(r) for r in jobs]
    elif mode == "threads":
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(one, jobs))
    elif mode == "batched":
        for i in range(0, len(jobs), concurrency):
            t0 = time.perf_counter()
            group = jobs[i : i + concurrency]
            pipeline.generate_lockstep(group)
            latencies += [time.perf_counter() - t0] * len(group)
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    wall = time.perf_counter() - start
    return {
        "mode": mode,
        "concurrency": concurrency,
        "videos": len(jobs),
        "wall_s": wall,
        "videos_per_min": 60.0 * len(jobs) / wall,
        "s_per_video": wall / len(jobs),
        "latency_s_p50": statistics.median(latencies),
        "samples_per_denoiser_call": 2 * (concurrency if mode == "batched" else 1),
    }


def end_to_end(
    transport: DeviceTorchTransport, concurrency: Sequence[int], videos: int, steps: int | None
) -> list[dict[str, Any]]:
    """Videos/min per (concurrency, mode); unique seeds, prompts cycling through the table."""
    prompts = iter(transport.table.workload * (1 + 100_000 // len(transport.table.workload)))
    seeds = iter(range(1_000_000))
    # Warm-up: allocator, kernels and cuDNN choices for every batch size used below.
    run_point(transport, "one", 1, _requests(prompts, seeds, 1, steps))
    for c in concurrency:
        if c > 1:
            run_point(transport, "batched", c, _requests(prompts, seeds, c, steps))
    points = []
    for c in concurrency:
        n = -(-max(videos, c) // c) * c  # whole groups of c
        for mode in ("one",) if c == 1 else ("threads", "batched"):
            point = run_point(transport, mode, c, _requests(prompts, seeds, n, steps))
            point["dtype"] = transport.dtype
            points.append(point)
            progress(f"{transport.dtype} c={c} {mode}: {point['videos_per_min']:.0f} videos/min")
    base = next((p for p in points if p["concurrency"] == min(concurrency)), None)
    for p in points:
        p["speedup_vs_c1"] = p["videos_per_min"] / base["videos_per_min"] if base else None
    return points


def batching_check(transport: DeviceTorchTransport, c: int, steps: int | None) -> dict[str, Any]:
    """The batched videos against ``Pipeline.generate`` one by one (same seeds and prompts):
    largest frame difference, in uint8 levels (batch shapes change the summation order)."""
    jobs = [
        GenerationRequest(p, seed=7 + i, steps=steps)
        for i, p in enumerate(transport.table.workload[:c])
    ]
    pipeline = Pipeline(transport)
    one = [pipeline.generate(r).frames for r in jobs]
    batched = [v.frames for v in pipeline.generate_lockstep(jobs)]
    diffs = [
        np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(one, batched, strict=True)
    ]
    return {
        "dtype": transport.dtype,
        "videos": len(jobs),
        "max_abs_uint8": int(max(d.max() for d in diffs)),
        "mean_abs_uint8": float(np.mean([d.mean() for d in diffs])),
    }


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Per dtype: t(largest) / (k × t(smallest)) and the videos/min gains at the top c."""
    out: dict[str, Any] = {}
    for dtype in report["settings"]["dtypes"]:
        rows = {r["batch"]: r for r in report["denoiser_calls"] if r["dtype"] == dtype}
        lo, hi = min(rows), max(rows)
        s: dict[str, Any] = {"smallest": lo, "largest": hi}
        if hi > lo:
            k = hi / lo
            s["largest_vs_k_smallest"] = rows[hi]["ms_per_call"] / (k * rows[lo]["ms_per_call"])
            if "back_to_back" in rows[lo]:
                s["largest_vs_back_to_back"] = (
                    rows[hi]["ms_per_call"] / rows[lo]["back_to_back"]["ms"]
                )
        points = [p for p in report["end_to_end"] if p["dtype"] == dtype]
        if points:
            c = max(p["concurrency"] for p in points)
            by_mode = {p["mode"]: p for p in points if p["concurrency"] == c}
            s["top_concurrency"] = c
            s["speedup_vs_c1"] = {m: p["speedup_vs_c1"] for m, p in by_mode.items()}
            if "threads" in by_mode and "batched" in by_mode:
                s["batched_vs_threads"] = (
                    by_mode["batched"]["videos_per_min"] / by_mode["threads"]["videos_per_min"]
                )
        out[dtype] = s
    return out


def machine(device: str) -> dict[str, Any]:
    dev = torch.device(device)
    name = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine()
    )
    return {
        "device": str(dev),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cinetron.models.loading import shapes_manifest

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {args.device}: torch {torch.__version__} sees no CUDA device; "
            "pass --device cpu (slow) or run on a machine with a GPU"
        )
    manifest = shapes_manifest(args.weights)
    if args.embeddings is not None:
        table = PromptTable.load(args.embeddings, manifest)
    else:
        from bench.throughput import workload_prompts

        table = PromptTable.encode(workload_prompts()[: args.prompts], args.weights)
    calls: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for dtype in args.dtypes:
        transport = DeviceTorchTransport(args.weights, args.device, dtype, table)
        calls += denoiser_calls(transport, args.batches, args.warmup, args.repeats)
        checks.append(batching_check(transport, max(args.concurrency), args.steps))
        points += end_to_end(transport, args.concurrency, args.videos, args.steps)
    print(file=sys.stderr)
    report: dict[str, Any] = {
        "machine": machine(args.device),
        "settings": {
            "weights": str(args.weights),
            "dtypes": list(args.dtypes),
            "batches": list(args.batches),
            "warmup": args.warmup,
            "repeats": args.repeats,
            "concurrency": list(args.concurrency),
            "videos_per_point": args.videos,
            "steps": args.steps or manifest.scheduler.steps,
            "scheduler": manifest.scheduler.name,
            "guidance": manifest.scheduler.guidance,
            "runtime": "eager PyTorch, one stream; bf16 = torch.autocast",
            "prompt_embeddings": (
                f"precomputed by the text encoder ({len(table.workload)} prompts "
                "+ negative), looked up; encoder not timed"
            ),
            "output": "uint8 frames on the host (no MP4)",
        },
        "denoiser_calls": calls,
        "end_to_end": points,
        "batching_check": checks,
    }
    report["summary"] = summarise(report)
    return report


def progress(text: str) -> None:
    print(f"\r{text:<60}", end="", file=sys.stderr, flush=True)


def table(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    out = [
        f"Device: {m['device_name']} ({m['device']}), torch {m['torch']}"
        + (f", CUDA {m['cuda']}" if m["device"].startswith("cuda") else "")
        + f"; {s['runtime']}; median of {s['repeats']} calls after {s['warmup']} warm-up.",
        "",
        "| dtype | denoiser batch (samples) | ms per call | ms per sample | min ms per call |",
        "|---|---|---|---|---|",
    ]
    for r in report["denoiser_calls"]:
        out.append(
            f"| {r['dtype']} | {r['batch']} | {r['ms_per_call']:.3f} | {r['ms_per_sample']:.3f} "
            f"| {r['ms_per_call_min']:.3f} |"
        )
    out.append("")
    for dtype, d in report["summary"].items():
        if "largest_vs_k_smallest" in d:
            k = d["largest"] // d["smallest"]
            line = (
                f"{dtype}: t({d['largest']}) / ({k} × t({d['smallest']})) = "
                f"**{d['largest_vs_k_smallest']:.3f}**"
            )
            if "largest_vs_back_to_back" in d:
                line += (
                    f"; against {k} calls of {d['smallest']} back to back: "
                    f"{d['largest_vs_back_to_back']:.3f}"
                )
            out.append(line + ".")
    out += [
        "",
        f"End to end: {s['steps']} {s['scheduler']} steps, CFG {s['guidance']:g}, VAE decode, "
        f"{s['output']}; prompt embeddings {s['prompt_embeddings']}.",
        "",
        "| dtype | c | mode | samples per denoiser call | videos | videos/min | × c1 "
        "| s/video (wall/videos) | p50 latency s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["end_to_end"]:
        out.append(
            f"| {p['dtype']} | {p['concurrency']} | {MODES[p['mode']]} "
            f"| {p['samples_per_denoiser_call']} | {p['videos']} | {p['videos_per_min']:.0f} "
            f"| {p['speedup_vs_c1']:.2f} | {p['s_per_video']:.4f} | {p['latency_s_p50']:.3f} |"
        )
    for c in report.get("batching_check", []):
        out.append(
            f"\n{c['dtype']}: batched videos vs one by one ({c['videos']} videos): max "
            f"{c['max_abs_uint8']} uint8 levels apart (mean {c['mean_abs_uint8']:.4f})."
        )
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    from cinetron.models.loading import DEFAULT_WEIGHTS

    p = argparse.ArgumentParser(
        prog="python -m bench gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if any, else cpu)")
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[2, 4, 8, 16],
        help="denoiser batch sizes in samples (CFG: 2 per video)",
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per batch size")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per batch size")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--videos", type=int, default=48, help="videos per end-to-end point")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (model default)")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights folder")
    p.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="prompt embeddings (.npz from --write-embeddings) instead of encoding "
        "the prompts here (the device machine may lack the text encoder)",
    )
    p.add_argument("--prompts", type=int, default=64, help="workload prompts to encode")
    p.add_argument(
        "--write-embeddings",
        type=Path,
        default=None,
        metavar="NPZ",
        help="encode the workload prompts, write them to NPZ and exit",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.write_embeddings is not None:
        from bench.throughput import workload_prompts

        encoded = PromptTable.encode(workload_prompts()[: args.prompts], args.weights)
        encoded.save(args.write_embeddings)
        print(f"wrote {len(encoded.prompts)} prompt embeddings to {args.write_embeddings}")
        return 0
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.concurrency = sorted({1, *args.concurrency})  # c1 is the baseline of every gain
    bad = [n for n in (*args.batches, *args.concurrency) if n < 1]
    if bad or args.repeats < 1 or args.videos < 1:
        raise SystemExit(
            "--batches, --concurrency, --repeats and --videos must be positive, "
            f"got batches {args.batches}, concurrency {args.concurrency}, "
            f"repeats {args.repeats}, videos {args.videos}"
        )
    return emit(args.out, run(args), table)


if __name__ == "__main__":
    sys.exit(main())
