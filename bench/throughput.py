"""``python -m bench throughput``: videos per minute at concurrency 1, 2, 4, 8, four ways.

The same workload — unique prompts (so no prompt-cache hits), fixed seeds, the model's
default steps and guidance, an H.264 MP4 at the end — run by ``c`` concurrent callers:

- ``api``: the public gRPC API (``cinetron serve-api``, its own process, worker pool of
  ``max(concurrency)``) in front of Triton; callers stream ``Generate``;
- ``client``: the Python client (``Pipeline`` over one shared Triton gRPC transport),
  one pipeline per caller thread, as the API's workers do;
- ``onnx``: the same ONNX files in-process with onnxruntime (no server), 1 thread per run;
- ``torch``: the reference PyTorch modules in-process, eager, 1 intra-op thread.

Concurrent generations' denoiser calls meet in Triton's dynamic batcher: every point
reports the average batch Triton formed (``nv_inference_count / nv_inference_exec_count``
between two scrapes) and the histogram of batch sizes. Per point: seconds per video
(wall / videos and per-call latency p50/p95/p99), videos/minute, time to the first
progress event, time per denoising step, CPU seconds per process, and the denoiser FLOP/s
achieved against this machine's measured matmul peak.

Modes take turns within each concurrency (rotating order) so background load hits them
alike. Prints a table and writes ``bench/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.metrics import BatchStats, CpuMeter, Snapshot, triton_processes
from bench.output import emit
from bench.profile import PySpy, available

MODES = ("api", "client", "onnx", "torch")
LABELS = {
    "api": "gRPC API → Triton",
    "client": "client → Triton gRPC",
    "onnx": "in-process ORT",
    "torch": "in-process torch",
}
RESULTS = Path(__file__).resolve().parent / "results" / "throughput.json"

_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")
_SHAPES = ("circle", "square", "triangle")
_MOTIONS = ("moving to the left", "moving to the right", "moving up", "moving down",
            "standing still", "growing", "shrinking")  # fmt: skip
_BACKGROUNDS = ("black", "white", "gray")


def workload_prompts() -> list[str]:
    """Every distinct caption of the shapes world, in a fixed shuffled order (483)."""
    combos = [
        f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s} {m} on a {b} background"
        for c, s, m, b in itertools.product(_COLOURS, _SHAPES, _MOTIONS, _BACKGROUNDS)
        if c != b
    ]
    order = np.random.default_rng(0).permutation(len(combos))
    return [combos[i] for i in order]


@dataclass
class VideoTiming:
    start: float
    end: float = 0.0
    progress: list[float] = field(default_factory=list)  # perf_counter of each step event
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def first_progress(self) -> float:
        return self.progress[0] - self.start if self.progress else float("nan")

    def step_intervals(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.progress)]


Generate = Callable[[str, int, VideoTiming], None]  # fills in progress/end, raises on error


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {k: float("nan") for k in ("p50", "p95", "p99", "mean")}
    a = np.asarray(xs)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


def run_point(generate: Generate, concurrency: int, jobs: list[tuple[str, int]]) -> dict[str, Any]:
    """``jobs`` through ``concurrency`` caller threads; wall clock from first start to last end."""
    todo: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
    for job in jobs:
        todo.put(job)
    done: list[VideoTiming] = []
    lock = threading.Lock()

    def caller() -> None:
        while True:
            try:
                prompt, seed = todo.get_nowait()
            except queue.Empty:
                return
            timing = VideoTiming(time.perf_counter())
            try:
                generate(prompt, seed, timing)
            except Exception as e:  # recorded and counted, the point goes on
                timing.error = f"{type(e).__name__}: {e}"
            timing.end = time.perf_counter()
            with lock:
                done.append(timing)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=caller, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [t for t in done if t.error is None]
    steps = [s for t in ok for s in t.step_intervals()]
    return {
        "concurrency": concurrency,
        "videos": len(ok),
        "errors": len(done) - len(ok),
        "error_examples": sorted({t.error for t in done if t.error})[:3],
        "wall_s": wall,
        "s_per_video": wall / max(len(ok), 1),
        "videos_per_min": 60.0 * len(ok) / wall,
        "latency_s": percentiles([t.latency for t in ok]),
        "latencies_s": [round(t.latency, 4) for t in ok],
        "first_progress_ms": {
            k: 1e3 * v for k, v in percentiles([t.first_progress for t in ok]).items()
        },
        "step_ms_p50": 1e3 * statistics.median(steps) if steps else float("nan"),
    }  # fmt: skip


# -- the four ways to make a video ---------------------------------------------------------


def pipeline_generate(transport: Any, steps: int) -> Generate:
    """A ``Generate`` over the Python client: one ``Pipeline`` per caller thread (its prompt
    cache included, as the API's workers), then the MP4, as the API server does."""
    from cinetron.core.pipeline import Pipeline, Progress
    from cinetron.core.request import GenerationRequest
    from cinetron.core.video import encode_mp4

    local = threading.local()

    def generate(prompt: str, seed: int, timing: VideoTiming) -> None:
        pipeline = getattr(local, "pipeline", None)
        if pipeline is None:
            pipeline = local.pipeline = Pipeline(transport)

        def on_progress(p: Progress) -> None:
            timing.progress.append(time.perf_counter())

        request = GenerationRequest(prompt, seed=seed, steps=steps, request_id=f"bench-{seed}")
        video = pipeline.generate(request, on_progress)
        encode_mp4(video.frames, video.fps)

    return generate


def api_generate(address: str, steps: int) -> tuple[Generate, Callable[[], None]]:
    """A ``Generate`` that streams ``Generate`` from the API (one shared channel)."""
    import grpc

    from cinetron.api_client import pb, pb_grpc

    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    stub = pb_grpc.VideoServiceStub(channel)

    def generate(prompt: str, seed: int, timing: VideoTiming) -> None:
        request = pb.GenerateRequest(prompt=prompt, seed=seed, steps=steps)
        completed = False
        for event in stub.Generate(
            request, timeout=600, metadata=[("x-request-id", f"bench-{seed}")]
        ):
            kind = event.WhichOneof("event")
            if kind == "progress":
                timing.progress.append(time.perf_counter())
            elif kind == "completed":
                completed = len(event.completed.video) > 0
        if not completed:
            raise RuntimeError("the stream ended without a Completed event carrying a video")

    return generate, channel.close  # fmt: skip


# -- the run -------------------------------------------------------------------------------


@dataclass
class Servers:
    triton_url: str | None = None
    metrics_url: str | None = None
    api_address: str | None = None
    denoiser: dict[str, Any] = field(default_factory=dict)  # the served config's knobs
    processes: dict[str, int] = field(default_factory=dict)


@contextmanager
def servers(args: argparse.Namespace, modes: list[str]) -> Iterator[Servers]:
    from bench.servers import DenoiserKnobs, api_server, denoiser_settings, triton

    out = Servers(processes={"bench": os.getpid()})
    if not {"api", "client"} & set(modes):
        yield out
        return
    knobs = DenoiserKnobs(instances=args.instances, threads=args.threads,
                          delay_us=args.delay_us)  # fmt: skip
    changed = any(v is not None for v in (args.instances, args.threads, args.delay_us))
    with triton(args.repo, knobs if changed else None) as server:
        print(f"tritonserver ready at {server.grpc_url} ({knobs.label()})", file=sys.stderr)
        out.triton_url, out.metrics_url = server.grpc_url, server.metrics_url
        out.denoiser = denoiser_settings(server.repository)
        out.processes.update(triton_processes(server.pid))
        if "api" not in modes:
            yield out
            return
        with api_server(server.grpc_url, max(args.concurrency), max_queue=64) as api:
            print(f"serve-api ready at {api.address}", file=sys.stderr)
            out.api_address = api.address
            out.processes["serve-api"] = api.pid
            yield out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.flops import denoiser_report, machine_peak

    modes = [m for m in MODES if m not in args.skip]
    load_before = os.getloadavg()
    prompts = workload_prompts()
    flops = denoiser_report(args.repo)
    points: list[dict[str, Any]] = []
    with ExitStack() as stack:
        srv = stack.enter_context(servers(args, modes))
        generators: dict[str, Generate] = {}
        if "api" in modes:
            assert srv.api_address is not None
            generators["api"], close = api_generate(srv.api_address, args.steps)
            stack.callback(close)
        from cinetron.transports import TransportKind, open_transport

        pipeline_modes: tuple[tuple[str, TransportKind], ...] = (
            ("client", "triton"),
            ("onnx", "onnx"),
            ("torch", "torch"),
        )
        for kind, transport_kind in pipeline_modes:  # (mode, its transport)
            if kind in modes:
                transport = stack.enter_context(
                    open_transport(
                        transport_kind, url=srv.triton_url or "", repo=args.repo, threads=1
                    )
                )
                generators[kind] = pipeline_generate(transport, args.steps)

        for mode in modes:  # warm-up: sessions, connections, the server's first batches
            run_point(generators[mode], 1, [(prompts[-1 - i], 10_000 + i) for i in range(2)])

        meter = CpuMeter(srv.processes)
        next_prompt = 0
        for ci, concurrency in enumerate(args.concurrency):
            n = max(args.min_videos, args.videos_per_caller * concurrency)
            for mode in rotate(modes, ci):
                jobs = [
                    (prompts[(next_prompt + i) % len(prompts)], next_prompt + i) for i in range(n)
                ]
                next_prompt += n
                served = mode in ("api", "client") and srv.metrics_url is not None
                before = Snapshot.take(srv.metrics_url, srv.triton_url) if served else None  # type: ignore[arg-type]
                profilers = {}
                if (
                    args.profile
                    and served
                    and mode == "client"
                    and concurrency == max(args.concurrency)
                ):
                    profilers = {
                        name: PySpy(pid)
                        for name, pid in srv.processes.items()
                        if name == "bench" or name.startswith("stub:denoiser")
                    }
                meter.start()
                point = run_point(generators[mode], concurrency, jobs)
                cpu = meter.stop()
                point["mode"] = mode
                if profilers:
                    point["profile"] = {name: p.stop() for name, p in profilers.items()}
                # Only the processes that take part in this mode.
                involved = {"bench"} | ({"serve-api"} if mode == "api" else set())
                if served:
                    involved |= {k for k in cpu if k == "tritonserver" or k.startswith("stub:")}
                point["cpu_s"] = {k: v for k, v in cpu.items() if k in involved}
                point["cpu_cores_busy"] = sum(point["cpu_s"].values()) / point["wall_s"]
                if before is not None:
                    after = Snapshot.take(srv.metrics_url, srv.triton_url)  # type: ignore[arg-type]
                    point["triton_denoiser"] = BatchStats.between(before, after).as_dict()
                points.append(point)
                progress(f"c={concurrency} {mode}: {point['videos_per_min']:.1f} videos/min")
        served_denoiser = srv.denoiser
    print(file=sys.stderr)
    peak = machine_peak()
    report: dict[str, Any] = {
        "machine": machine(load_before),
        "workload": {
            "steps": args.steps,
            "guidance": "model default (CFG as one denoiser call of batch 2)",
            "prompts": "unique per video (no prompt-cache hits)",
            "output": "H.264 MP4 per video (the API encodes it too)",
            "videos_per_point": {
                str(c): max(args.min_videos, args.videos_per_caller * c) for c in args.concurrency
            },
            "runtime_threads": 1,
            "served_denoiser": served_denoiser,
        },
        "flops": flops,
        "peak": peak,
        "points": points,
    }
    report["summary"] = summarise(report)
    return report


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Scaling per mode, FLOP/s per point, and the comparisons the issue asks for."""
    steps = report["workload"]["steps"]
    flops_per_video = report["flops"]["flops_per_step"] * steps
    peak = report["peak"]["all_cores_flops"]
    by = {(p["mode"], p["concurrency"]): p for p in report["points"]}
    for p in report["points"]:
        achieved = p["videos_per_min"] / 60.0 * flops_per_video
        p["achieved_flops"] = achieved
        p["fraction_of_peak"] = achieved / peak
        t = p.get("triton_denoiser")
        if t and t["compute_s"] > 0:  # the denoiser while it runs, per instance
            t["flops_while_computing"] = (
                t["samples"] * report["flops"]["flops_per_sample"] / t["compute_s"]
            )
        base = by.get((p["mode"], min(c for m, c in by if m == p["mode"])))
        p["speedup_vs_lowest_concurrency"] = (
            p["videos_per_min"] / base["videos_per_min"] if base else None
        )
    out: dict[str, Any] = {}
    cs = sorted({c for _, c in by})
    if cs:
        lo, hi = cs[0], cs[-1]
        out["scaling"] = {
            m: by[(m, hi)]["videos_per_min"] / by[(m, lo)]["videos_per_min"]
            for m in MODES
            if (m, lo) in by and (m, hi) in by
        }
        out["scaling_between"] = [lo, hi]
        ort = by.get(("onnx", lo))
        if ort:
            for m in ("api", "client", "torch"):
                if (m, lo) in by:
                    p = by[(m, lo)]
                    out[f"{m}_latency_vs_onnx_at_c{lo}"] = (
                        p["latency_s"]["p50"] / ort["latency_s"]["p50"]
                    )
                    p["step_overhead_ms"] = p["step_ms_p50"] - ort["step_ms_p50"]
    return out  # fmt: skip


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    import onnxruntime

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": model or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        # Other work on the machine skews the numbers; read them against the load.
        "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]],
    }


def rotate(items: list[str], i: int) -> list[str]:
    k = i % len(items)
    return items[k:] + items[:k]


def progress(text: str) -> None:
    print(f"\r{text:<60}", end="", file=sys.stderr, flush=True)


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None or x != x else format(x, fmt)


def table(report: dict[str, Any]) -> str:
    from bench.flops import fmt_flops

    w, m, f, pk = report["workload"], report["machine"], report["flops"], report["peak"]
    lines = [
        f"throughput: {w['steps']} steps, CFG batch 2, unique prompts, MP4 out; videos per point "
        f"{w['videos_per_point']}; {m['cpus']} CPUs ({m['cpu']}), load average "
        f"{m['loadavg_1m_before_after'][0]:.1f}",
        f"served denoiser: {w['served_denoiser']}",
        f"{'c':>2} {'mode':<21}{'s/video':>8}{'p50':>7}{'p95':>7}{'p99':>7}{'vid/min':>8}"
        f"{'×c1':>6}{'TTFP ms':>8}{'ms/step':>8}{'+ms/step':>9}{'batch':>6}{'req/b':>6}"
        f"{'cores':>6}{'%peak':>6}",
    ]
    for p in report["points"]:
        t = p.get("triton_denoiser", {})
        lat = p["latency_s"]
        lines.append(
            f"{p['concurrency']:>2} {LABELS[p['mode']]:<21}{p['s_per_video']:>8.3f}"
            f"{lat['p50']:>7.2f}{lat['p95']:>7.2f}{lat['p99']:>7.2f}{p['videos_per_min']:>8.1f}"
            f"{_num(p.get('speedup_vs_lowest_concurrency'), '.2f'):>6}"
            f"{p['first_progress_ms']['p50']:>8.1f}{p['step_ms_p50']:>8.2f}"
            f"{_num(p.get('step_overhead_ms'), '+.2f'):>9}"
            f"{_num(t.get('avg_batch_size'), '.1f'):>6}"
            f"{_num(t.get('requests_per_execution'), '.1f'):>6}"
            f"{p['cpu_cores_busy']:>6.2f}{100 * p['fraction_of_peak']:>6.1f}"
            + (f"  errors {p['errors']}" if p["errors"] else "")
        )  # fmt: skip
    s = report["summary"]
    lines += [
        "",
        f"denoiser: {fmt_flops(f['flops_per_step'])}FLOP per step (CFG batch 2, counted "
        f"MatMul/Gemm/Conv); matmul peak {fmt_flops(pk['all_cores_flops'])}FLOP/s on "
        f"{int(pk['cores'])} cores, {fmt_flops(pk['one_thread_flops'])}FLOP/s on one",
        "scaling c{}→c{} (videos/min): ".format(*s.get("scaling_between", ["?", "?"]))
        + ", ".join(f"{LABELS[k]} {v:.2f}×" for k, v in s.get("scaling", {}).items()),
    ]
    for key, value in s.items():
        if key.endswith("_vs_onnx_at_c1"):
            lines.append(f"{key.replace('_', ' ')}: {value:.3f}× (p50 latency)")
    served = [
        p for p in report["points"] if "flops_while_computing" in p.get("triton_denoiser", {})
    ]
    if served:
        eff = max(p["triton_denoiser"]["flops_while_computing"] for p in served)
        lines.append(
            f"denoiser inside Triton while computing: up to {fmt_flops(eff)}FLOP/s per instance "
            f"({100 * eff / pk['one_thread_flops']:.0f}% of the one-thread matmul peak)"
        )
    for p in report["points"]:
        for name, prof in p.get("profile", {}).items():
            if "error" in prof:
                lines.append(f"profile {name}: {prof['error']}")
                continue
            top = ", ".join(f"{t['frame']} {100 * t['share']:.0f}%" for t in prof["top_self"][:3])
            lines.append(
                f"py-spy c={p['concurrency']} {LABELS[p['mode']]}, {name}: busy "
                f"{100 * prof['busy_fraction']:.0f}% of the wall; self time: {top}"
            )
    lines.append(
        "columns: s/video = wall/videos; p50/p95/p99 per-video latency (s); TTFP = time to "
        "first progress event; +ms/step vs in-process ORT; batch = Triton avg batch (samples), "
        "req/b = calls per execution; cores = CPU-seconds/wall of the processes involved"
    )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="exported repo")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per video")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--min-videos", type=int, default=12, help="videos per point, at least")
    p.add_argument("--videos-per-caller", type=int, default=3,
                   help="videos per point = max(min-videos, this × concurrency)")  # fmt: skip
    p.add_argument("--skip", nargs="*", default=[], choices=MODES, help="modes to leave out")
    p.add_argument(
        "--instances", type=int, default=None, help="serve with this many denoiser instances"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="serve with this many ORT threads per denoiser instance",
    )
    p.add_argument(
        "--delay-us", type=int, default=None, help="serve with this dynamic batcher delay"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the denoiser stub and the client at the top concurrency",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results path")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.profile and not available():
        print(
            "py-spy is not installed (pip install 'cinetron[bench]'); no profile", file=sys.stderr
        )
        args.profile = False
    report = run(args)
    return emit(args.out, report, table)


if __name__ == "__main__":
    sys.exit(main())
