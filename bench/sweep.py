"""``python -m bench sweep``: the denoiser's serving knobs, one at a time, and what each does.

Each variant is the exported repository with one change to the denoiser's
``config.pbtxt`` (the same fields ``cinetron export`` writes from its flags):

| knob | export flag | config field |
|---|---|---|
| instances | ``--denoiser-instances`` | ``instance_group.count`` |
| ORT intra-op threads | ``--threads`` | ``parameters.intra_op_threads`` |
| batcher delay | ``--max-queue-delay-us`` | ``dynamic_batching.max_queue_delay_microseconds`` |
| preferred sizes | ``--preferred-batch-sizes`` | ``dynamic_batching.preferred_batch_size`` |
| step batching off | (no flag: a measurement) | no ``dynamic_batching``: every call runs alone |

Variants without an instance/thread setting keep the exported ones (``cinetron export``
writes 2 denoiser instances × 1 thread on cpu). For every variant: a fresh tritonserver,
then the client (``Pipeline`` over Triton gRPC) at concurrency 1 and at the highest
concurrency, reporting videos/minute, latency, the average Triton batch and the CPU
cores kept busy. Prints a table and writes
``bench/results/sweep.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench.metrics import BatchStats, CpuMeter, Snapshot, triton_processes
from bench.output import emit
from bench.servers import DenoiserKnobs, denoiser_settings, triton
from bench.throughput import (
    machine,
    percentiles,
    pipeline_generate,
    progress,
    run_point,
    workload_prompts,
)

RESULTS = Path(__file__).resolve().parent / "results" / "sweep.json"

VARIANTS: dict[str, DenoiserKnobs] = {
    "as exported": DenoiserKnobs(),
    "1 instance × 1 thread": DenoiserKnobs(instances=1, threads=1),
    "1 instance × 1 thread, step batching off": DenoiserKnobs(
        instances=1, threads=1, batching=False
    ),
    "1 instance × 2 threads": DenoiserKnobs(instances=1, threads=2),
    "1 instance × 2 threads, no spinning": DenoiserKnobs(instances=1, threads=2, spinning=False),
    "2 instances × 2 threads": DenoiserKnobs(instances=2, threads=2),
    "2 instances × 2 threads, no spinning": DenoiserKnobs(instances=2, threads=2, spinning=False),
    "2 instances × 1 thread": DenoiserKnobs(instances=2, threads=1),
    "step batching off": DenoiserKnobs(batching=False),
    "delay 0 us": DenoiserKnobs(delay_us=0),
    "delay 5000 us": DenoiserKnobs(delay_us=5000),
    "preferred 16 only, delay 5000 us": DenoiserKnobs(preferred=(16,), delay_us=5000),
}


def measure(repo: Path, name: str, knobs: DenoiserKnobs, args: argparse.Namespace,
            prompts: list[str], offset: int) -> dict[str, Any]:  # fmt: skip
    from cinetron.transports import open_transport

    out: dict[str, Any] = {"variant": name, "knobs": knobs.label(), "points": []}
    with triton(repo, knobs) as server, open_transport("triton", url=server.grpc_url) as transport:
        out["denoiser"] = denoiser_settings(server.repository)
        generate = pipeline_generate(transport, args.steps)
        run_point(generate, 1, [(prompts[-1], 99_999)])  # warm-up
        meter = CpuMeter({"bench": os.getpid(), **triton_processes(server.pid)})
        for concurrency in args.concurrency:
            n = max(args.min_videos, args.videos_per_caller * concurrency)
            jobs = [(prompts[(offset + i) % len(prompts)], offset + i) for i in range(n)]
            offset += n
            before = Snapshot.take(server.metrics_url, server.grpc_url)
            meter.start()
            point = run_point(generate, concurrency, jobs)
            cpu = meter.stop()
            point["triton_denoiser"] = BatchStats.between(
                before, Snapshot.take(server.metrics_url, server.grpc_url)
            ).as_dict()
            point["cpu_s"] = cpu
            point["cpu_cores_busy"] = sum(cpu.values()) / point["wall_s"]
            out["points"].append(point)
            progress(f"{name}: c={concurrency} {point['videos_per_min']:.1f} videos/min")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    prompts = workload_prompts()
    chosen = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    offset = 0
    for r in range(args.rounds):
        # Alternate the order, so drifting background load does not favour early variants.
        order = list(chosen.items()) if r % 2 == 0 else list(reversed(chosen.items()))
        for name, knobs in order:
            runs[name].append(measure(args.repo, name, knobs, args, prompts, offset))
            offset += 1000
    results = [merge_rounds(rounds) for rounds in runs.values()]
    print(file=sys.stderr)
    return {
        "machine": machine(load_before),
        "workload": {
            "steps": args.steps,
            "concurrency": args.concurrency,
            "videos_per_point": {
                str(c): max(args.min_videos, args.videos_per_caller * c) for c in args.concurrency
            },
            "mode": "client → Triton gRPC, MP4 out, unique prompts",
            "rounds": args.rounds,
        },
        "variants": results,
    }


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's repeated measurements pooled: videos and wall time summed, latencies
    pooled for the percentiles, Triton counters and CPU seconds summed."""
    out = {k: rounds[0][k] for k in ("variant", "knobs", "denoiser")}
    out["rounds"] = len(rounds)
    out["points"] = []
    for c in [p["concurrency"] for p in rounds[0]["points"]]:
        ps = [p for r in rounds for p in r["points"] if p["concurrency"] == c]
        videos, wall = sum(p["videos"] for p in ps), sum(p["wall_s"] for p in ps)
        samples = sum(p["triton_denoiser"]["samples"] for p in ps)
        executions = sum(p["triton_denoiser"]["executions"] for p in ps)
        cpu = sum(sum(p["cpu_s"].values()) for p in ps)
        out["points"].append({
            "concurrency": c,
            "videos": videos,
            "errors": sum(p["errors"] for p in ps),
            "wall_s": wall,
            "videos_per_min": 60.0 * videos / wall,
            "videos_per_min_each_round": [p["videos_per_min"] for p in ps],
            "latency_s": percentiles([x for p in ps for x in p["latencies_s"]]),
            "triton_denoiser": {
                "avg_batch_size": samples / executions if executions else float("nan"),
                "samples": samples,
                "executions": executions,
            },
            "cpu_cores_busy": cpu / wall,
        })  # fmt: skip
    return out


def served(d: dict[str, Any]) -> str:
    """``2×1 d1000`` = 2 instances × 1 thread, batcher delay 1000 us (``off``: no batcher);
    ``ns``: onnxruntime threads do not spin."""
    delay = f"d{d['max_queue_delay_us']}" if d["dynamic_batching"] else "off"
    spin = "" if d.get("allow_spinning", True) else " ns"
    return f"{d['instances']}×{d['intra_op_threads']}{spin} {delay}"


def table(report: dict[str, Any]) -> str:
    cs = report["workload"]["concurrency"]
    lo, hi = cs[0], cs[-1]
    lines = [
        f"serving knobs (denoiser), client → Triton gRPC, {report['workload']['steps']} steps, "
        f"{report['machine']['cpus']} CPUs, load average "
        f"{report['machine']['loadavg_1m_before_after'][0]:.1f}",
        f"{'variant':<42}{'served':>14}{f'c{lo} s/video':>12}{f'c{hi} vid/min':>13}"
        f"{f'c{lo} vid/min':>13}"
        f"{'×':>6}{f'c{hi} batch':>9}{f'c{hi} p95 s':>10}{'cores':>7}",
    ]
    for v in report["variants"]:
        by = {p["concurrency"]: p for p in v["points"]}
        a, b = by[lo], by[hi]
        lines.append(
            f"{v['variant']:<42}{served(v['denoiser']):>14}{a['latency_s']['p50']:>12.3f}{b['videos_per_min']:>13.1f}"
            f"{a['videos_per_min']:>13.1f}{b['videos_per_min'] / a['videos_per_min']:>6.2f}"
            f"{b['triton_denoiser']['avg_batch_size']:>9.1f}{b['latency_s']['p95']:>10.2f}"
            f"{b['cpu_cores_busy']:>7.2f}"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="exported repo")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--min-videos", type=int, default=8)
    p.add_argument("--videos-per-caller", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="passes over the variants, pooled")
    p.add_argument("--only", nargs="*", default=[], choices=list(VARIANTS), help="variants to run")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = run(args)
    return emit(args.out, report, table)


if __name__ == "__main__":
    sys.exit(main())
