"""``python -m bench loadtest``: Locust against the API — ramp, steady state, report.

``--protocol grpc`` (default) streams ``Generate``; ``--protocol http`` is an OpenAI-style
client of ``/v1/videos`` (create, poll every ``--poll-ms`` or as ``openai-poll-after-ms``
says, download). Without ``--address`` it starts Triton on ``--repo`` and the API server
in front of it (both on free loopback ports) and stops them afterwards; with ``--address``
it drives an API that is already running (e.g. a ``kubectl port-forward``): its gRPC
``host:port``, or its HTTP ``host:port`` with ``--protocol http``. The target must be a
loopback address: this tool never loads a machine over the network. The run is bounded
by time (ramp + steady state, then at most ``--timeout-s`` for calls in flight) and by
``--max-requests``.

The bearer token, when the API has auth on, comes from ``--token-file`` (first line) or
``CINETRON_API_TOKEN``; it is passed to Locust through the environment, never argv.

Writes ``bench/results/loadtest.json`` (``loadtest_http.json`` over HTTP; plus Locust's CSV
stats beside it) and prints throughput, latency and errors for the ramp and the steady state.

Scale-out (docs/scale-out.md): ``--replicas N`` starts N API replicas in front of the one
Triton, sharing a PostgreSQL server and the S3 emulator (``--store shared``, the default
with N > 1), and Locust spreads its callers over them; ``--mode jobs`` drives
SubmitJob + WatchJob instead of streaming Generate. The report then also gives the CPU
seconds each part used (Triton, the API replicas, PostgreSQL, the S3 emulator, Locust),
which names the bottleneck.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.output import emit
from bench.throughput import percentiles

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "loadtest.json"
HTTP_RESULTS = BENCH / "results" / "loadtest_http.json"
LOCUSTFILE = BENCH / "locustfile.py"
USER_CLASS = {"grpc": "GenerateUser", "grpc-jobs": "JobsUser", "http": "VideosHttpUser"}


def check_loopback(address: str) -> None:
    """Refuse anything but a loopback ``host:port`` (names are resolved)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--address must be host:port, got {address!r}")
    host = host.strip("[]")
    try:
        resolved = {str(info[4][0]) for info in socket.getaddrinfo(host, int(port))}
    except socket.gaierror as e:
        raise SystemExit(f"cannot resolve {host!r}: {e}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in resolved):
        raise SystemExit(
            f"{address} is not a loopback address ({', '.join(sorted(resolved))}); the load "
            "test only targets this machine. To test a deployment, port-forward it first: "
            "kubectl -n cinetron port-forward svc/cinetron-api 50051:50051"
        )


def read_token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        lines = args.token_file.read_text().split()
        if not lines:
            raise SystemExit(f"{args.token_file} is empty; put the bearer token on its first line")
        return lines[0]
    return os.environ.get("CINETRON_API_TOKEN", "")


def _auth_hint(address: str, token: str) -> str:
    return (
        f"the API at {address} has auth on and refused "
        f"{'the token given' if token else 'a call without a token'}: pass "
        "API_TOKEN_FILE=<file with the token> to make (--token-file), or set "
        "CINETRON_API_TOKEN"
    )


def preflight_http(address: str, token: str) -> None:
    """One ``GET /v1/models``, so a wrong address or a missing token fails in a second."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://{address}/v1/models")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise SystemExit(_auth_hint(address, token)) from None
        raise SystemExit(
            f"the HTTP API at {address} answers {e.code}: {e.read()[:300]!r}"
        ) from None
    except OSError as e:
        raise SystemExit(f"the HTTP API at {address} does not answer: {e}") from None


def preflight(address: str, token: str) -> None:
    """One ``GetInfo`` call, so a wrong address or a missing token fails in a second."""
    import grpc

    from cinetron.api_client import pb, pb_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        try:
            pb_grpc.VideoServiceStub(channel).GetInfo(pb.GetInfoRequest(), metadata=metadata,
                                                      timeout=10)  # fmt: skip
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise SystemExit(_auth_hint(address, token)) from None
            raise SystemExit(f"the API at {address} does not answer: {e.code().name} "
                             f"{e.details()}") from None  # fmt: skip


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / ticks


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and every live descendant."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        st = _stat(int(entry.name))
        if st is not None:
            parents.setdefault(st[0], []).append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st is not None:
            total += st[1]
        todo += parents.get(pid, [])
    return total


class CpuMeter:
    """CPU seconds per named group of process trees between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before: dict[str, float] = {}
        self.started = 0.0

    def _now(self) -> dict[str, float]:
        return {k: sum(tree_cpu_seconds(p) for p in pids) for k, pids in self.groups.items()}

    @staticmethod
    def _reaped() -> float:
        """CPU seconds of this process's finished children (Locust, once it exited)."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self.before, self.started = self._now(), time.monotonic()
        self.before["locust"] = self._reaped()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        now = {**self._now(), "locust": self._reaped()}
        used = {k: round(v - self.before.get(k, 0.0), 1) for k, v in now.items()}
        cores = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 1),
            "cores": cores,
            "cpu_s": used,
            "share_of_machine": {k: round(v / (wall * cores), 3) for k, v in used.items()},
        }


@contextmanager
def target(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, list[int]]]]:
    """The API address(es), comma-separated: the one given, or a Triton + ``--replicas``
    API servers started here for the test; and the process groups to meter."""
    if args.address:
        check_loopback(args.address)
        yield args.address, {}
        return
    from bench.servers import api_server, triton

    if args.replicas == 1 and args.store == "embedded":
        with (
            triton(args.repo) as server,
            api_server(
                server.grpc_url, max_concurrency=args.users, max_queue=max(16, 2 * args.users)
            ) as api,
        ):
            address = api.http_url.split("://", 1)[1] if args.protocol == "http" else api.address
            print(f"started tritonserver {server.grpc_url} and serve-api {address} "
                  f"(max concurrency {args.users})", file=sys.stderr)  # fmt: skip
            yield address, {"triton": [server.pid], "api": [api.pid]}
        return
    from bench.servers import shared_stores

    slots = -(-args.users // args.replicas)  # the same slots in all, spread over the replicas
    with (
        triton(args.repo) as server,
        shared_stores() as stores,
        stores.replicas(server.grpc_url, args.replicas, slots, max(16, 2 * slots)) as apis,
    ):
        addresses = ",".join(a.address for a in apis)
        print(f"started tritonserver {server.grpc_url}, PostgreSQL, the S3 emulator and "
              f"{args.replicas} serve-api replicas {addresses} (max concurrency {slots} "
              "each)", file=sys.stderr)  # fmt: skip
        yield (
            addresses,
            {
                "triton": [server.pid],
                "api": [a.pid for a in apis],
                "postgres": stores.postgres_pids(),
                "s3_emulator": [stores.s3.proc.pid],
            },
        )


def run_locust(
    args: argparse.Namespace, address: str, token: str, report: Path, meter: CpuMeter | None
) -> int:
    env = {
        **os.environ,
        "CINETRON_LOADTEST_USERS": str(args.users),
        "CINETRON_LOADTEST_RAMP_S": str(args.ramp_s),
        "CINETRON_LOADTEST_STEADY_S": str(args.steady_s),
        "CINETRON_LOADTEST_MAX_REQUESTS": str(args.max_requests),
        "CINETRON_LOADTEST_STEPS": str(args.steps),
        "CINETRON_LOADTEST_TIMEOUT_S": str(args.timeout_s),
        "CINETRON_LOADTEST_REPORT": str(report),
        "CINETRON_API_TOKEN": token,
        "CINETRON_LOADTEST_POLL_MS": str(args.poll_ms),
        "CINETRON_LOADTEST_PROTOCOL": args.protocol,
    }
    csv = args.out.with_suffix("")  # Locust adds _stats.csv, _failures.csv, ...
    host = f"http://{address}" if args.protocol == "http" else address
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), USER_CLASS[args.protocol],
        "--headless", "--only-summary", "--host", host, "--csv", str(csv),
        "--stop-timeout", str(int(args.timeout_s)), "--loglevel", "WARNING",
    ]  # fmt: skip
    bound = args.ramp_s + args.steady_s + args.timeout_s + 60  # a hard stop, whatever happens
    try:
        if meter is not None:
            meter.start()
        proc = subprocess.Popen(cmd, env=env)
        return proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        print(f"locust ran past {bound:.0f} s and was stopped", file=sys.stderr)
        return 124


def phase_summary(records: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Calls that ended in ``[start, end)`` seconds after the test started."""
    inside = [r for r in records if start <= r["end_s"] < end]
    ok = [r for r in inside if r["code"] == "OK"]
    codes: dict[str, int] = {}
    for r in inside:
        if r["code"] != "OK":
            codes[r["code"]] = codes.get(r["code"], 0) + 1
    duration = max(end - start, 1e-9)
    return {
        "seconds": duration,
        "completed": len(ok),
        "errors": len(inside) - len(ok),
        "errors_by_code": codes,
        "error_rate": (len(inside) - len(ok)) / len(inside) if inside else 0.0,
        "videos_per_min": 60.0 * len(ok) / duration,
        "latency_s": percentiles([r["latency_s"] for r in ok]),
        "first_progress_s": percentiles(
            [r["first_progress_s"] for r in ok if r["first_progress_s"] is not None]
        ),
    }


def table(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"load test ({s.get('protocol', 'grpc')}, {report.get('replicas', 1)} replica(s)) of "
        f"{s['host']}: ramp 1→{s['users']} callers over {s['ramp_s']:.0f} s, "
        f"steady {s['steady_s']:.0f} s, {s['steps']} steps per video, at most "
        f"{s['max_requests']} calls ({report['calls_started']} started, stopped by "
        f"{report['stopped_by']})",
        f"{'phase':<8}{'s':>6}{'videos':>8}{'errors':>8}{'vid/min':>9}{'p50 s':>7}{'p95 s':>7}"
        f"{'p99 s':>7}{'TTFP p50':>10}  errors by code",
    ]
    for phase in ("ramp", "steady", "drain", "total"):
        p = report[phase]
        lat, first = p["latency_s"], p["first_progress_s"]
        lines.append(
            f"{phase:<8}{p['seconds']:>6.0f}{p['completed']:>8}{p['errors']:>8}"
            f"{p['videos_per_min']:>9.1f}{lat['p50']:>7.2f}{lat['p95']:>7.2f}{lat['p99']:>7.2f}"
            f"{first['p50']:>10.2f}  {p['errors_by_code'] or '-'}"
        )
    cpu = report.get("cpu")
    if cpu:
        parts = ", ".join(
            f"{k} {v:.0f} s ({100 * cpu['share_of_machine'][k]:.0f}%)"
            for k, v in cpu["cpu_s"].items()
        )
        lines.append(f"CPU over {cpu['wall_s']:.0f} s on {cpu['cores']} cores: {parts}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--address",
        default=os.environ.get("API_ADDRESS") or None,
        help="a running API (loopback host:port: gRPC, or HTTP with --protocol http); "
        "default: start Triton + API here",
    )
    p.add_argument("--protocol", choices=tuple(USER_CLASS), default="grpc",
                   help="gRPC Generate streams, gRPC jobs, or /v1/videos over HTTP")  # fmt: skip
    p.add_argument("--poll-ms", type=float, default=0.0,
                   help="HTTP: ms between polls; 0 = as openai-poll-after-ms says")  # fmt: skip
    p.add_argument("--token-file", type=Path, default=None, help="bearer token file (auth on)")
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="exported repo")
    p.add_argument("--users", type=int, default=8, help="concurrent callers at steady state")
    p.add_argument("--ramp-s", type=float, default=20.0, help="seconds from 1 caller to all")
    p.add_argument("--steady-s", type=float, default=60.0, help="seconds at full load")
    p.add_argument("--max-requests", type=int, default=400, help="calls started, at most")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per video")
    p.add_argument("--timeout-s", type=float, default=120.0, help="deadline of one call")
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON report [{RESULTS.name}; {HTTP_RESULTS.name} over HTTP]")  # fmt: skip
    p.add_argument("--replicas", type=int, default=1, help="API replicas to start (no --address)")
    p.add_argument("--mode", choices=["generate", "jobs"], default="generate",
                   help="gRPC: stream Generate, or jobs (= --protocol grpc-jobs)")  # fmt: skip
    p.add_argument("--store", choices=["embedded", "shared"], default=None,
                   help="jobs in SQLite per replica, or PostgreSQL + the S3 emulator shared "
                   "(default: shared when --replicas > 1)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.users < 1 or args.max_requests < 1 or args.ramp_s < 0 or args.steady_s <= 0:
        raise SystemExit("--users and --max-requests must be ≥ 1, --ramp-s ≥ 0, --steady-s > 0")
    if args.replicas < 1:
        raise SystemExit("--replicas must be ≥ 1")
    args.store = args.store or ("shared" if args.replicas > 1 else "embedded")
    if args.replicas > 1 and args.store == "embedded":
        raise SystemExit("several replicas need --store shared (SQLite is one process's)")
    if args.mode == "jobs":
        if args.protocol == "http":
            raise SystemExit("--mode jobs is a gRPC mode; HTTP always goes through the job store")
        args.protocol = "grpc-jobs"
    if args.out is None:
        args.out = HTTP_RESULTS if args.protocol == "http" else RESULTS
    if args.protocol == "http" and args.replicas > 1:
        raise SystemExit("--protocol http drives one replica; use the gRPC modes for several")
    token = read_token(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cinetron-loadtest-") as tmp:
        raw = Path(tmp) / "report.json"
        with target(args) as (address, groups):
            for one in address.split(","):
                (preflight_http if args.protocol == "http" else preflight)(one, token)
            meter = CpuMeter(groups) if groups else None
            code = run_locust(args, address, token, raw, meter)
            cpu = meter.stop() if meter is not None else None
        if not raw.exists():
            print(f"locust exited with code {code} and wrote no report", file=sys.stderr)
            return code or 1
        report = json.loads(raw.read_text())
    report["store"] = args.store
    if cpu is not None:
        report["cpu"] = cpu
    emit(args.out, report, table)
    print(f"Locust CSV stats: {args.out.with_suffix('')}_stats.csv")
    return code


if __name__ == "__main__":
    sys.exit(main())
