"""``python -m bench report``: the README's Performance tables, as Markdown, from
``bench/results/*.json`` (written by ``make bench`` and ``make loadtest``), so every number
in the README comes from a file a command wrote."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.flops import fmt_flops
from bench.sweep import served
from bench.throughput import LABELS

RESULTS = Path(__file__).resolve().parent / "results"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def machine_line(m: dict[str, Any]) -> str:
    return f"{m['cpus']} × {m['cpu']}, {m['platform']}, Python {m['python']}"


def throughput_md(r: dict[str, Any]) -> str:
    w, f, pk = r["workload"], r["flops"], r["peak"]
    per_point = ", ".join(f"c{c}: {n}" for c, n in w["videos_per_point"].items())
    out = [
        f"Machine: {machine_line(r['machine'])}; load average "
        f"{r['machine']['loadavg_1m_before_after'][0]:.1f} at the start. Workload: "
        f"{w['steps']} steps, CFG (one denoiser call of batch 2 per step), unique prompts, MP4 "
        f"out; videos per point {per_point} "
        "(p99 of so few videos is close to the max). Served denoiser: "
        f"{served(w['served_denoiser'])} (instances×threads, batcher delay µs), preferred "
        f"batch sizes {w['served_denoiser']['preferred_batch_sizes']}.",
        "",
        "| c | path | s/video (wall/videos) | videos/min | × c1 | p50 s | p95 s | p99 s "
        "| first progress ms | ms/step | Triton avg batch | calls/batch | % of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["points"]:
        t = p.get("triton_denoiser", {})
        lat = p["latency_s"]
        batch = f"{t['avg_batch_size']:.1f}" if t else "–"
        calls = f"{t['requests_per_execution']:.1f}" if t else "–"
        out.append(
            f"| {p['concurrency']} | {LABELS[p['mode']]} | {p['s_per_video']:.3f} "
            f"| {p['videos_per_min']:.1f} | {p['speedup_vs_lowest_concurrency']:.2f} "
            f"| {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} "
            f"| {p['first_progress_ms']['p50']:.0f} | {p['step_ms_p50']:.1f} | {batch} | {calls} "
            f"| {100 * p['fraction_of_peak']:.0f}% |"
        )
    s = r["summary"]
    out += [
        "",
        f"Denoiser: {fmt_flops(f['flops_per_step'])}FLOP per step (MatMul/Gemm/Conv counted "
        f"from the ONNX graph); matmul peak {fmt_flops(pk['one_thread_flops'])}FLOP/s on one "
        f"thread, {fmt_flops(pk['all_cores_flops'])}FLOP/s on {int(pk['cores'])} cores "
        f"(onnxruntime {int(pk['gemm_n'])}² fp32). % of peak = denoiser FLOP/s achieved end to "
        "end ÷ the all-core peak.",
    ]
    ratios = [f"{k.split('_')[0]} {v:.3f}×" for k, v in s.items() if "_vs_onnx_at_c" in k]
    if ratios:
        out.append(f"p50 latency at c1 vs in-process ORT: {', '.join(ratios)}.")
    for p in r["points"]:
        for name, prof in p.get("profile", {}).items():
            if "top_self" in prof:
                top = ", ".join(f"`{t['frame']}` {100 * t['share']:.0f}%"
                                for t in prof["top_self"][:3])  # fmt: skip
                out.append(
                    f"py-spy at c{p['concurrency']} ({LABELS[p['mode']]}), {name}: busy "
                    f"{100 * prof['busy_fraction']:.0f}% of the wall; self time {top}."
                )
    return "\n".join(out)


def latency_md(r: dict[str, Any]) -> str:
    from bench.latency import LABELS as TRANSPORTS

    w, m = r["workload"], r["machine"]
    out = [
        f"{len(w['prompts'])} prompts × {w['seeds']} seeds × {w['rounds']} rounds per transport, "
        f"{w['steps']} steps, taking turns video by video; {w['threads']} thread(s) per call "
        f"in every runtime{'' if w.get('spinning', True) else ', spinning off'}; "
        f"served denoiser: {w.get('served_denoiser', 'as exported')}; load "
        f"average {m['loadavg_1m_before_after'][0]:.1f} → {m['loadavg_1m_before_after'][1]:.1f}.",
        "",
        "| transport | s/video (median) | p90 | vs in-process ORT | ms/step (median / min) "
        "| serving cost per step (median / min) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, t in r["transports"].items():
        ratio = f"**{t['video_vs_onnx']:.2f}×**" if "video_vs_onnx" in t else "–"
        cost = (
            f"{t['step_overhead_ms']:+.2f} / {t['step_min_overhead_ms']:+.2f} ms"
            if "step_overhead_ms" in t
            else "–"
        )
        out.append(
            f"| {TRANSPORTS[kind]} | {t['video_s_median']:.3f} | {t['video_s_p90']:.3f} | {ratio} "
            f"| {t['step_ms_median']:.2f} / {t['step_ms_min']:.2f} | {cost} |"
        )
    g = r.get("triton_denoiser_per_grpc_step")
    if g:
        out += [
            "",
            f"Inside Triton per served step: queue {g['queue_ms']:.2f}, input {g['input_ms']:.2f}, "
            f"compute {g['infer_ms']:.2f} (the Python backend's IPC to its stub + onnxruntime), "
            f"output {g['output_ms']:.2f} ms.",
        ]
    floors = [(k, t) for k, t in r["transports"].items() if "floor_ms_median" in t]
    if floors:
        f = r.get("triton_floor_per_grpc_call", {})
        inside = (
            f" Of a plain-gRPC floor call, {f['request_ms']:.2f} ms is inside Triton and "
            f"{f['infer_ms']:.2f} ms in the Python backend."
            if f
            else ""
        )
        each = "; ".join(
            f"{TRANSPORTS[k]} {t['floor_ms_median']:.2f} ms (at best "
            f"**{t['floor_step_vs_onnx']:.2f}×** per step)"
            for k, t in floors
        )
        out += [
            "",
            "Serving floor — the same calls to `denoiser_floor`, the denoiser's config and "
            f"request code without the compute (median per call): {each}.{inside}",
        ]
    return "\n".join(out)


def flops_md(r: dict[str, Any]) -> str:
    out = [
        "| denoiser batch (samples) | ms per call | ms per sample | FLOP/s (1 thread) |",
        "|---|---|---|---|",
    ]
    for row in r.get("batch_scaling", []):
        out.append(
            f"| {int(row['batch'])} | {row['ms']:.1f} | {row['ms_per_sample']:.2f} "
            f"| {fmt_flops(row['flops_per_s'])} |"
        )
    return "\n".join(out)


def sweep_md(r: dict[str, Any]) -> str:
    cs = r["workload"]["concurrency"]
    lo, hi = cs[0], cs[-1]
    out = [
        f"| denoiser setting | served (instances×threads, delay µs) | c{lo} p50 s "
        f"| c{lo} videos/min | c{hi} videos/min | c{hi}/c{lo} | c{hi} Triton avg batch "
        f"| c{hi} p95 s | CPU cores busy at c{hi} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in r["variants"]:
        by = {p["concurrency"]: p for p in v["points"]}
        a, b = by[lo], by[hi]
        out.append(
            f"| {v['variant']} | {served(v['denoiser'])} | {a['latency_s']['p50']:.3f} "
            f"| {a['videos_per_min']:.1f} "
            f"| {b['videos_per_min']:.1f} | {b['videos_per_min'] / a['videos_per_min']:.2f} "
            f"| {b['triton_denoiser']['avg_batch_size']:.1f} | {b['latency_s']['p95']:.2f} "
            f"| {b['cpu_cores_busy']:.2f} |"
        )
    return "\n".join(out)


def gpu_md(r: dict[str, Any]) -> str:
    from bench.gpu import table

    return table(r)


def loadtest_md(r: dict[str, Any]) -> str:
    s = r["settings"]
    out = [
        f"Ramp 1→{s['users']} callers over {s['ramp_s']:.0f} s, steady {s['steady_s']:.0f} s, "
        f"{s['steps']} steps per video, at most {s['max_requests']} calls "
        f"({r['calls_started']} started, stopped by {r['stopped_by']}).",
        "",
        "| phase | seconds | videos | errors | videos/min | p50 s | p95 s | p99 s "
        "| first progress p50 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in ("ramp", "steady", "drain", "total"):
        p = r[phase]
        if not p["completed"] and not p["errors"]:
            continue  # e.g. no drain: the request budget ran out before the steady phase did
        lat = p["latency_s"]
        errors = f"{p['errors']} {p['errors_by_code']}" if p["errors"] else "0"
        out.append(
            f"| {phase} | {p['seconds']:.0f} | {p['completed']} | {errors} "
            f"| {p['videos_per_min']:.1f} | {lat['p50']:.2f} | {lat['p95']:.2f} "
            f"| {lat['p99']:.2f} | {p['first_progress_s']['p50']:.2f} |"
        )
    return "\n".join(out)


def nvidia_md(r: dict[str, Any]) -> str:
    from bench.nvidia import TOOLS

    w = r["workload"]
    out = [
        f"perf_analyzer on the served `denoiser` alone: batch {w['perf_analyzer_batch']} per "
        f"request (one CFG step), {w['perf_analyzer_interval_ms']} ms windows; "
        "Triton's batch size from its own statistics.",
        "",
        "| c | infer/s | steps/s | p50 ms | p90 ms | p95 ms | p99 ms | Triton queue ms "
        "| Triton avg batch | denoiser bound, videos/min | perf_analyzer's CPU (cores) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["perf_analyzer"]:
        if "error" in row:
            out.append(f"| {row['concurrency']} | {row['error']} |||||||||")
            continue
        t, load = row["triton"], row.get("load_average", [float("nan")] * 2)
        out.append(
            f"| {row['concurrency']} | {row['infer_per_s']:.1f} | {row['steps_per_s']:.1f} "
            f"| {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | {row['p95_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {t['queue_ms_per_request']:.2f} | {t['avg_batch_size']:.2f} "
            f"| {60 * row['steps_per_s'] / w['steps']:.0f} "
            f"| {row.get('client_cores', float('nan')):.2f} | {load[0]:.1f}→{load[1]:.1f} |"
        )
    out += [
        "",
        f"End to end, the same workload for every tool: {w['requests']} videos of {w['steps']} "
        f"steps ({w['clip']}), {w['users']} concurrent callers, one API process "
        f"(max concurrency {w['users']}) and one tritonserver.",
        "",
        "| tool | videos | errors | videos/min | p50 s | p95 s | p99 s | server s "
        "| client CPU s/video | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name in TOOLS:
        t = r.get(key, {"error": "not run"})
        if "error" in t:
            out.append(f"| {name} | {t['error']} |||||||||")
            continue
        lat = t["latency_s"]
        load = t.get("load_average", [float("nan")] * 2)
        out.append(
            f"| {name} | {t['requests']} | {t['errors']} | {t['videos_per_min']:.1f} "
            f"| {lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} "
            f"| {t.get('server_generation_s_mean', float('nan')):.2f} "
            f"| {t.get('client_cpu_s_per_video', float('nan')):.3f} | {load[0]:.1f}→{load[1]:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench report", description=__doc__)
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON results")
    args = p.parse_args(argv)
    sections = (
        (
            "Latency at c1, throughput setting (`python -m bench latency`)",
            "latency.json",
            latency_md,
        ),
        (
            "Latency at c1, latency setting (`python -m bench latency --threads 2 "
            "--denoiser-instances 1 --no-spinning`)",
            "latency_2threads.json",
            latency_md,
        ),
        ("Batch size vs cost (`python -m bench flops`)", "flops.json", flops_md),
        ("Throughput (`python -m bench throughput`)", "throughput.json", throughput_md),
        ("Serving knobs (`python -m bench sweep`)", "sweep.json", sweep_md),
        ("Load test (`make loadtest`)", "loadtest.json", loadtest_md),
        ("NVIDIA's tools beside Locust (`python -m bench nvidia`)", "nvidia.json", nvidia_md),
        ("GPU (`python -m bench gpu`)", "gpu.json", gpu_md),
    )
    found = False
    for title, name, render in sections:
        data = _load(args.results / name)
        if data is not None:
            found = True
            print(f"#### {title}\n\n{render(data)}\n")
    if not found:
        print(f"no results in {args.results}; run `make bench` first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
