"""What the benchmarks read from outside the client: Triton's Prometheus metrics and the
CPU time of every process involved (``/proc``), so a throughput number comes with where
the machine's time went.
"""

from __future__ import annotations

import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Triton's per-model counters (cumulative since start); durations are microseconds.
COUNTERS = (
    "nv_inference_count",  # samples (batch rows)
    "nv_inference_exec_count",  # model executions (batches)
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_request_duration_us",
)


def scrape(metrics_url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
        return str(response.read().decode())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def model_counters(text: str, model: str) -> dict[str, float]:
    """The ``COUNTERS`` of ``model`` summed over versions (and failure reasons), from
    Prometheus text ``text``. Parsed by hand: Triton's counters lack the ``_total``
    suffix that prometheus_client's parser would add to their names."""
    found = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in found:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        if labels.get("model") == model:
            found[match.group(1)] += float(match.group(3))
    return found


def batch_histogram(grpc_url: str, model: str) -> dict[int, tuple[int, int]]:
    """``{batch size (samples): (executions, compute ns)}`` from Triton's statistics API.

    Exact per execution, unlike ``nv_inference_compute_infer_duration_us``, which charges
    a batch's full compute time to every request in it.
    """
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        stats = client.get_inference_statistics(model).model_stats
    finally:
        client.close()
    out: dict[int, tuple[int, int]] = {}
    for s in stats:
        for b in s.batch_stats:
            n, ns = out.get(int(b.batch_size), (0, 0))
            out[int(b.batch_size)] = (n + int(b.compute_infer.count), ns + int(b.compute_infer.ns))
    return out


@dataclass(frozen=True)
class Snapshot:
    counters: dict[str, float]
    batches: dict[int, tuple[int, int]]

    @classmethod
    def take(cls, metrics_url: str, grpc_url: str, model: str = "denoiser") -> Snapshot:
        return cls(model_counters(scrape(metrics_url), model), batch_histogram(grpc_url, model))


@dataclass(frozen=True)
class BatchStats:
    """The denoiser between two snapshots: how Triton batched and where its time went."""

    samples: float
    executions: float
    requests: float
    failures: float
    queue_ms_per_request: float
    compute_s: float  # the model instances' busy time (sum over executions)
    histogram: dict[int, int]  # batch size (samples) → executions

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot) -> BatchStats:
        d = {k: after.counters[k] - before.counters[k] for k in COUNTERS}
        requests = d["nv_inference_request_success"]
        histogram, compute_ns = {}, 0
        for size, (n, ns) in sorted(after.batches.items()):
            n0, ns0 = before.batches.get(size, (0, 0))
            if n > n0:
                histogram[size] = n - n0
            compute_ns += ns - ns0
        return cls(
            samples=d["nv_inference_count"],
            executions=d["nv_inference_exec_count"],
            requests=requests,
            failures=d["nv_inference_request_failure"],
            queue_ms_per_request=d["nv_inference_queue_duration_us"] / max(requests, 1) / 1e3,
            compute_s=compute_ns / 1e9,
            histogram=histogram,
        )

    @property
    def avg_batch_size(self) -> float:
        """Triton's definition: ``nv_inference_count / nv_inference_exec_count`` (samples)."""
        return self.samples / self.executions if self.executions else float("nan")

    @property
    def requests_per_execution(self) -> float:
        """Calls merged into one execution (a CFG step is one call of 2 samples)."""
        return self.requests / self.executions if self.executions else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "executions": self.executions,
            "requests": self.requests,
            "failures": self.failures,
            "avg_batch_size": self.avg_batch_size,
            "requests_per_execution": self.requests_per_execution,
            "queue_ms_per_request": self.queue_ms_per_request,
            "compute_ms_per_execution": 1e3 * self.compute_s / max(self.executions, 1),
            "compute_s": self.compute_s,
            "batch_size_histogram": {str(k): v for k, v in self.histogram.items()},
        }


# -- CPU time per process ------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads included), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def triton_processes(pid: int) -> dict[str, int]:
    """``{"tritonserver": pid, "stub:<model>": pid, ...}``: the server and its Python-backend
    stubs, named after the model each one runs (from the stub's command line)."""
    found = {"tritonserver": pid}
    for child in children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        model_py = next((a.decode() for a in argv if a.endswith(b"/model.py")), None)
        if model_py is not None:
            model = Path(model_py).parent.parent.name
            name, n = f"stub:{model}", 1
            while name in found:  # several instances of one model
                n += 1
                name = f"stub:{model}#{n}"
            found[name] = child
    return found


class CpuMeter:
    """CPU seconds each named process used between ``start()`` and ``stop()``."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.processes.items()}

    def stop(self) -> dict[str, float]:
        return {
            name: cpu_seconds(pid) - self._start.get(name, 0.0)
            for name, pid in self.processes.items()
        }
