"""``python -m bench <suite> [options]``: each suite is a module with ``main(argv)``.

Benchmarks stay in the repository, out of the installed package: run them from a checkout."""

from __future__ import annotations

import importlib
import sys

SUITES: dict[str, tuple[str, str]] = {
    "latency": ("bench.latency", "seconds per video over every transport (conc. 1)"),
    "throughput": ("bench.throughput", "videos/min at concurrency 1-8, four ways"),
    "flops": ("bench.flops", "denoiser FLOPs per step and the matmul peak"),
    "sweep": ("bench.sweep", "serving knobs and their measured effect"),
    "loadtest": ("bench.loadtest", "Locust load test of the API (gRPC or HTTP)"),
    "nvidia": ("bench.nvidia", "perf_analyzer + aiperf beside Locust, one workload"),
    "screenshot": ("bench.screenshot", "the web preview page's picture in docs/"),
    "gpu": ("bench.gpu", "denoiser batch scaling and step batching, in-process torch"),
    "samplers": ("bench.samplers", "every sampler on held-out prompts at its settings"),
    "report": ("bench.report", "the Performance tables (docs/performance.md) from bench/results"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in SUITES:
        print("usage: python -m bench <suite> [options]\n\nsuites:", file=sys.stderr)
        for name, (_, help_) in SUITES.items():
            print(f"  {name:<10} {help_}", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return int(importlib.import_module(SUITES[args[0]][0]).main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
