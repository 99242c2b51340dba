"""Sampling profiles of running processes with py-spy, summarised to where the time went.

Used by ``python -m bench throughput --profile`` during its highest-concurrency point: the
denoiser's Triton stub (does it spend its time in onnxruntime?) and the benchmark's own
client threads (serialisation, the scheduler, the GIL?). py-spy samples at 100 Hz and
leaves idle threads out, so ``samples / (seconds · rate)`` is how busy the process was.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 100


def py_spy() -> str | None:
    """The py-spy executable: beside this Python first (a venv that is not activated, as
    under `make bench`), then on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def available() -> bool:
    return py_spy() is not None


def summarise(raw: str, seconds: float, top: int = 6) -> dict[str, Any]:
    """py-spy ``--format raw`` (collapsed stacks ``a;b;c COUNT``) → busy share and the
    functions at the top of the stack (self time), each as a share of all samples."""
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaves[stack.split(";")[-1].strip()] += n
    return {
        "samples": total,
        "seconds": seconds,
        "busy_fraction": total / max(seconds * RATE_HZ, 1e-9),
        "top_self": [{"frame": f, "share": n / total} for f, n in leaves.most_common(top)]
        if total
        else [],
    }


class PySpy:
    """``py-spy record`` on ``pid`` from construction until ``stop()``."""

    def __init__(self, pid: int) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="cinetron-pyspy-")
        self.out = Path(self._dir.name) / "stacks.txt"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [py_spy() or "py-spy", "record", "--pid", str(pid), "--rate", str(RATE_HZ),
             "--format", "raw", "--nonblocking", "--duration", "3600", "-o", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        self.proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled on SIGINT
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        try:
            raw = self.out.read_text()
        except FileNotFoundError:
            self._dir.cleanup()
            return {"error": (err or "py-spy wrote nothing").strip()[-300:]}
        self._dir.cleanup()
        return summarise(raw, seconds)
