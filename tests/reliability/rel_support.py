"""Real processes for the reliability suite: ``cinetron serve-api`` as a subprocess, its
Prometheus metrics and memory, and gRPC calls reduced to (status code, message).

Nothing here is a mock: every helper talks to a process over a socket or reads /proc.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from support import SERVING, ApiProcess, free_port  # the one harness (tests/support.py)

from cinetron.api_client import pb, pb_grpc
from cinetron.tools.tritonserver import SHM_DIR, SHM_REGION_PREFIX

__all__ = ["SERVING", "ApiProcess", "free_port"]


def rpc_outcome(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str, Any]:
    """Run one call (a unary call, or a stream read to its end): (code, details, result)."""
    try:
        result = fn()
        if isinstance(result, grpc.Call) or hasattr(result, "__next__"):
            result = list(result)
        return grpc.StatusCode.OK, "", result
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def process_state(pid: int) -> str:
    """One letter: R, S, T (stopped), Z (zombie)…; 'gone' when the process is reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def generate(stub: pb_grpc.VideoServiceStub, timeout: float = 120.0, **fields: Any) -> list[Any]:
    return list(stub.Generate(pb.GenerateRequest(**fields), timeout=timeout))


def good_request_succeeds(stub: pb_grpc.VideoServiceStub) -> bool:
    events = generate(stub, prompt="a red circle moving to the left", steps=1, seed=3)
    return events[-1].WhichOneof("event") == "completed" and len(events[-1].completed.video) > 0


def shm_regions() -> set[str]:
    return {p.name for p in SHM_DIR.glob(SHM_REGION_PREFIX + "*")} if SHM_DIR.is_dir() else set()


def remove_orphaned_shm(before: set[str]) -> int:
    """Unlink Python-backend shared-memory regions created since ``before`` that no live
    process maps: a tritonserver killed with SIGKILL cannot remove its own."""
    new = shm_regions() - before
    if not new:
        return 0
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue
        mapped |= {name for name in new if name in text}
    removed = 0
    for name in new - mapped:
        (SHM_DIR / name).unlink(missing_ok=True)
        removed += 1
    return removed
