"""``python -m bench latency``: seconds per video over every transport, side by side.

For the same prompts, seeds and steps, in one run on one machine: Triton gRPC,
Triton + system shared memory, in-process ONNX Runtime and in-process torch. The
transports take turns video by video (rotating order), so background load hits them
alike. Also measured:

- per-step time: bare denoiser calls (the CFG batch of 2) repeated ``--step-calls``
  times per transport, interleaved; served − in-process ONNX Runtime = the per-step
  cost of serving;
- where that cost goes: Triton's own statistics for the denoiser (queue, input,
  compute, output per request) split it into server-side and client/gRPC time;
- the serving floor: the same calls to ``denoiser_floor`` (``bench/floor_model.py``: the
  denoiser's config and request code, no compute), interleaved with the others, where
  the Triton serves it (one this command starts does). Its round trip is what serving
  costs before any compute, so (in-process step + floor) / in-process step is the best
  ratio a served step can reach on this Triton.

``--threads N`` gives every runtime N onnxruntime/torch threads per call: the in-process
sessions and, on a Triton this command starts, the served denoiser (with
``--denoiser-instances``; a repository variant as ``python -m bench sweep`` makes). The
default, 1 thread and the repository as exported, is the throughput setting;
``--threads 2 --denoiser-instances 1 --no-spinning`` is the latency setting of a 2-core
machine. ``--no-spinning`` lets onnxruntime's threads sleep between parallel sections, in
process and served: with spinning, a runtime's idle threads hold a core for a while after
each call and slow whichever transport takes the next turn.

Prints a table and writes ``bench/results/latency.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from bench.output import emit
from bench.servers import FLOOR_MODEL, DenoiserKnobs, denoiser_settings
from bench.servers import triton as served_triton
from cinetron.core.pipeline import Pipeline
from cinetron.core.request import GenerationRequest
from cinetron.core.transport import Latents
from cinetron.transports import Transport, TransportKind, open_transport

PROMPTS = (
    "a red circle moving to the left on a black background",
    "a small green triangle growing on a white background",
    "a blue square moving up on a gray background",
)
RESULTS = Path(__file__).resolve().parent / "results" / "latency.json"
ORDER: tuple[TransportKind, ...] = ("triton", "triton-shm", "onnx", "torch")
LABELS = {
    "triton": "Triton gRPC",
    "triton-shm": "Triton gRPC + shm",
    "onnx": "in-process ONNX Runtime",
    "torch": "in-process torch",
}


@dataclass
class Samples:
    video_s: list[float] = field(default_factory=list)
    denoise_s: list[float] = field(default_factory=list)  # the loop only, per video
    step_s: list[float] = field(default_factory=list)  # bare denoiser calls

    def summary(self, steps: int) -> dict[str, float]:
        def med(xs: list[float]) -> float:
            return statistics.median(xs) if xs else float("nan")

        def p90(xs: list[float]) -> float:
            return float(np.percentile(xs, 90)) if xs else float("nan")

        return {
            "videos": len(self.video_s),
            "video_s_median": med(self.video_s),
            "video_s_p90": p90(self.video_s),
            "loop_step_ms_median": 1000 * med(self.denoise_s) / steps,
            "step_ms_median": 1000 * med(self.step_s),
            "step_ms_min": 1000 * min(self.step_s, default=float("nan")),
            "step_ms_mean": 1000 * statistics.fmean(self.step_s) if self.step_s else float("nan"),
            "step_ms_p90": 1000 * p90(self.step_s),
        }


def denoiser_stats(url: str, model: str = "denoiser") -> dict[str, int]:
    """Cumulative Triton statistics of ``model`` (ns and counts)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        s = client.get_inference_statistics(model).model_stats[0]
    finally:
        client.close()
    i = s.inference_stats
    return {
        "requests": int(i.success.count),
        "executions": int(s.execution_count),
        "request_ns": int(i.success.ns),
        "queue_ns": int(i.queue.ns),
        "input_ns": int(i.compute_input.ns),
        "infer_ns": int(i.compute_infer.ns),
        "output_ns": int(i.compute_output.ns),
    }


def server_breakdown(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Per-request milliseconds Triton spent on the denoiser between two snapshots."""
    n = max(1, after["requests"] - before["requests"])
    per = {k: (after[k] - before[k]) / n / 1e6 for k in after if k.endswith("_ns")}
    return {
        "requests": float(n),
        "avg_batch_requests": n / max(1, after["executions"] - before["executions"]),
        **{k.replace("_ns", "_ms"): v for k, v in per.items()},
    }


@contextmanager
def triton(repository: Path, url: str | None, knobs: DenoiserKnobs | None) -> Iterator[str]:
    """The gRPC url of the Triton to measure; one this command starts serves the floor model."""
    if url is not None:
        yield url
        return
    with served_triton(repository, knobs, floor=True) as server:
        print(f"tritonserver ready in {server.startup_seconds:.1f} s at {server.grpc_url}")
        denoiser = denoiser_settings(server.repository)
        print(f"served denoiser: {denoiser['instances']} instance(s) × "
              f"{denoiser['intra_op_threads']} thread(s)")  # fmt: skip
        yield server.grpc_url


# What ``Transport.denoise`` takes: latents, timestep, text embeddings, text mask.
StepInputs = tuple[Latents, npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]


def step_inputs(transport: Transport, seed: int = 0) -> StepInputs:
    m = transport.manifest
    rng = np.random.default_rng(seed)
    emb = transport.encode_prompt([PROMPTS[0], ""])
    latents = rng.standard_normal((2, *m.latent_shape), dtype=np.float32)
    # copies: arrays from a gRPC response are read-only views, which torch warns about
    return latents, np.full(2, 500.0, np.float32), emb.embeds.copy(), emb.mask.copy()


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    kinds = [k for k in ORDER if k not in args.skip]
    samples: dict[str, Samples] = {k: Samples() for k in kinds}  # and floor:<kind> later
    knobs = None
    spinning = None if args.spinning else False
    if args.threads != 1 or args.denoiser_instances is not None or spinning is not None:
        knobs = DenoiserKnobs(
            instances=args.denoiser_instances, threads=args.threads, spinning=spinning
        )
    with ExitStack() as stack:
        url = stack.enter_context(triton(args.repo, args.url, knobs))
        runtime = {"threads": args.threads, "spinning": args.spinning}
        transports: dict[str, Transport] = {
            k: stack.enter_context(open_transport(k, url=url, repo=args.repo, **runtime))
            for k in kinds
        }
        floors: dict[str, Transport] = {}
        if serves(url, FLOOR_MODEL):
            floors = open_floors(stack, url, kinds)
        else:
            print(f"no serving floor: Triton at {url} does not serve {FLOOR_MODEL!r}")

        def video(kind: str, prompt: str, seed: int) -> None:
            # A fresh Pipeline: every video pays for its prompt encoding (no cache hits).
            req = GenerationRequest(prompt, seed=seed, steps=args.steps, request_id="bench")
            t0 = time.perf_counter()
            v = Pipeline(transports[kind]).generate(req)
            samples[kind].video_s.append(time.perf_counter() - t0)
            samples[kind].denoise_s.append(v.timings["denoise_s"])

        for kind in kinds:  # warm up: sessions, connections, the server's first batches
            video(kind, PROMPTS[0], 0)
            samples[kind] = Samples()
        for floor in floors.values():
            for _ in range(3):
                floor.denoise(*step_inputs(floor))

        work = [(p, s) for _ in range(args.rounds) for p in PROMPTS for s in range(args.seeds)]
        stats_before = denoiser_stats(url) if "triton" in kinds else None
        for i, (prompt, seed) in enumerate(work):
            for kind in rotate(kinds, i):
                video(kind, prompt, seed)
            progress(f"videos {i + 1}/{len(work)} per transport")
        stats_after_videos = denoiser_stats(url) if "triton" in kinds else None

        model_version = transports[kinds[0]].manifest.version
        inputs = step_inputs(transports[kinds[0]])
        calls: dict[str, Callable[[], object]] = {
            k: partial(t.denoise, *inputs) for k, t in (transports | floors).items()
        }
        samples |= {k: Samples() for k in floors}
        grpc_stats: dict[str, float] = {}
        floor_stats: dict[str, float] = {}
        # Triton's server-side time of the plain-gRPC calls: (model, where it adds up)
        watched = {"triton": ("denoiser", grpc_stats), "floor:triton": (FLOOR_MODEL, floor_stats)}
        for i in range(args.step_calls):
            for name in rotate(list(calls), i):  # a transport or floor:<transport>
                watch = watched.get(name)
                if watch:
                    before = denoiser_stats(url, watch[0])
                t0 = time.perf_counter()
                calls[name]()
                samples[name].step_s.append(time.perf_counter() - t0)
                if watch:
                    after = denoiser_stats(url, watch[0])
                    for k, v in server_breakdown(before, after).items():
                        watch[1][k] = watch[1].get(k, 0.0) + v / args.step_calls
            if (i + 1) % 50 == 0:
                progress(f"denoiser calls {i + 1}/{args.step_calls} per transport")
    print(file=sys.stderr)

    results = {k: samples[k].summary(args.steps) for k in kinds}
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            # Other work on the machine skews in-process vs served runs differently
            # (a process that sleeps on a socket wakes with scheduler credit): read
            # the numbers against the load.
            "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]],
        },
        "workload": {
            "model_version": model_version,
            "repository": str(args.repo),
            "prompts": list(PROMPTS),
            "seeds": args.seeds,
            "rounds": args.rounds,
            "steps": args.steps,
            "guidance": "model default (CFG as one batch of 2)",
            "scheduler": "model default",
            "threads": args.threads,
            "spinning": args.spinning,
            "served_denoiser": knobs.label() if knobs else "as exported",
            "step_calls": args.step_calls,
        },
        "transports": results,
    }
    if "onnx" in results:
        ort = results["onnx"]
        for kind in ("triton", "triton-shm"):
            if kind in results:
                r = results[kind]
                r["video_vs_onnx"] = r["video_s_median"] / ort["video_s_median"]
                r["step_overhead_ms"] = r["step_ms_median"] - ort["step_ms_median"]
                # the fastest calls are the least disturbed by other work on the machine
                r["step_min_overhead_ms"] = r["step_ms_min"] - ort["step_ms_min"]
                r["step_min_vs_onnx"] = r["step_ms_min"] / ort["step_ms_min"]
                r["loop_step_overhead_ms"] = r["loop_step_ms_median"] - ort["loop_step_ms_median"]
                floor_samples = samples.get(f"floor:{kind}")
                if floor_samples is not None:
                    r["floor_ms_median"] = 1000 * statistics.median(floor_samples.step_s)
                    r["floor_ms_min"] = 1000 * min(floor_samples.step_s)
                    # the best a served step can do: onnxruntime's time plus the floor
                    r["floor_step_vs_onnx"] = 1 + r["floor_ms_median"] / ort["step_ms_median"]
    if stats_before is not None and stats_after_videos is not None:
        report["triton_denoiser_during_videos"] = server_breakdown(stats_before, stats_after_videos)
        report["triton_denoiser_per_grpc_step"] = grpc_stats
    if floor_stats:
        report["triton_floor_per_grpc_call"] = floor_stats
    return report


def serves(url: str, model: str) -> bool:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    try:
        return bool(client.is_model_ready(model))
    except InferenceServerException:
        return False
    finally:
        client.close()


def open_floors(stack: ExitStack, url: str, kinds: Sequence[str]) -> dict[str, Transport]:
    """``floor:<kind>``: each served transport again, calling ``denoiser_floor``."""
    from cinetron.transports.triton_grpc import TritonGrpcTransport
    from cinetron.transports.triton_shm import TritonShmTransport

    classes = {"triton": TritonGrpcTransport, "triton-shm": TritonShmTransport}
    return {
        f"floor:{k}": stack.enter_context(classes[k](url, denoiser_model=FLOOR_MODEL))
        for k in kinds
        if k in classes
    }


_T = TypeVar("_T")


def rotate(items: list[_T], i: int) -> list[_T]:
    k = i % len(items)
    return items[k:] + items[:k]


def progress(text: str) -> None:
    print(f"\r{text}", end="", file=sys.stderr, flush=True)


def table(report: dict[str, Any]) -> str:
    rows = report["transports"]
    w = report["workload"]
    lines = [
        f"latency at concurrency 1: {len(w['prompts'])} prompts × {w['seeds']} seeds × "
        f"{w['rounds']} rounds, {w['steps']} steps, {w['threads']} thread(s) per runtime "
        f"(served denoiser: {w.get('served_denoiser', 'as exported')}); load average "
        f"{report['machine']['loadavg_1m_before_after'][0]:.1f} on "
        f"{report['machine']['cpus']} CPUs",
        f"{'transport':<26}{'s/video':>9}{'p90':>8}{'vs ORT':>8}{'ms/step':>9}{'min':>7}"
        f"{'overhead (median / min)':>26}",
    ]
    for kind, r in rows.items():
        ratio = f"{r['video_vs_onnx']:.2f}×" if "video_vs_onnx" in r else ""
        over = (
            f"{r['step_overhead_ms']:+.2f} / {r['step_min_overhead_ms']:+.2f} ms "
            f"({r['step_min_vs_onnx']:.2f}×)"
            if "step_overhead_ms" in r
            else ""
        )
        lines.append(
            f"{LABELS[kind]:<26}{r['video_s_median']:>9.3f}{r['video_s_p90']:>8.3f}"
            f"{ratio:>8}{r['step_ms_median']:>9.2f}{r['step_ms_min']:>7.2f}{over:>26}"
        )
    g = report.get("triton_denoiser_per_grpc_step")
    if g:
        served = rows["triton"]["step_ms_mean"]  # a mean, like Triton's own statistics
        server = g["request_ms"]
        lines += [
            "",
            f"one served denoiser step (Triton gRPC, mean {served:.2f} ms), where the time goes:",
            f"  in Triton {server:.2f} ms = queue {g['queue_ms']:.2f} + input "
            f"{g['input_ms']:.2f} + compute {g['infer_ms']:.2f} + output {g['output_ms']:.2f} "
            f"(python backend: IPC to the stub + onnxruntime)",
            f"  client + gRPC {served - server:.2f} ms (serialise, socket, deserialise)",
            f"  in-process ORT step {rows['onnx']['step_ms_mean']:.2f} ms (mean)"
            if "onnx" in rows
            else "",
        ]
    lines += floor_lines(report)
    return "\n".join(line for line in lines if line is not None)


def floor_lines(report: dict[str, Any]) -> list[str]:
    """The serving floor in words: what a no-compute call costs and what that allows."""
    rows = report["transports"]
    served = [k for k in ("triton", "triton-shm") if "floor_ms_median" in rows.get(k, {})]
    if not served:
        return []
    out = ["", "serving floor (denoiser_floor: the same call, no compute; median / min):"]
    for kind in served:
        r = rows[kind]
        out.append(
            f"  {LABELS[kind]:<20} {r['floor_ms_median']:.2f} / {r['floor_ms_min']:.2f} ms per "
            f"call → a served step is at best {r['floor_step_vs_onnx']:.2f}× in-process ORT"
        )
    f = report.get("triton_floor_per_grpc_call")
    if f:
        out.append(
            f"  of a plain-gRPC floor call, in Triton {f['request_ms']:.2f} ms (queue "
            f"{f['queue_ms']:.2f}, input {f['input_ms']:.2f}, Python backend {f['infer_ms']:.2f}, "
            f"output {f['output_ms']:.2f})"
        )
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="exported repo")
    p.add_argument("--url", default=None, help="use this running Triton instead of starting one")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    p.add_argument("--rounds", type=int, default=2, help="passes over prompts × seeds")
    p.add_argument("--step-calls", type=int, default=200, help="bare denoiser calls each")
    p.add_argument("--skip", nargs="*", default=[], choices=ORDER, help="transports to leave out")
    p.add_argument("--threads", type=int, default=1, help="threads per call, in-process and served")
    p.add_argument(
        "--denoiser-instances",
        type=int,
        default=None,
        help="served denoiser instances (default: as exported)",
    )
    p.add_argument(
        "--no-spinning",
        dest="spinning",
        action="store_false",
        help="onnxruntime threads sleep between parallel sections, in-process and served",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = run(args)
    return emit(args.out, report, table)


if __name__ == "__main__":
    sys.exit(main())
