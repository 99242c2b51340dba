"""Reliability suite fixtures and its ledger.

Every test records what it tried through the ``ledger`` fixture (a corpus case, a fuzz
run, a fault, an overload burst, a security check) and what it counted (requests
accepted, requests lost, …). The rows are printed at the end of the session and, when
``CINETRON_RELIABILITY_RESULTS`` names a file, written there as JSON for
``python -m bench.reliability_report`` (``make reliability``).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rel_support import ApiProcess, process_state, remove_orphaned_shm, shm_regions

from cinetron.tools.tritonserver import TritonServer

RESULTS_ENV = "CINETRON_RELIABILITY_RESULTS"
_ROWS: list[dict[str, Any]] = []
_NOTES: list[str] = []  # extra lines for the terminal summary (e.g. pip-audit findings)


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """``entry = ledger("fault", name="…")`` records this test; update ``entry`` as it runs."""

    def record(kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"kind": kind, **fields}
        request.node.user_properties.append(("reliability", entry))
        return entry

    return record


@pytest.fixture
def note() -> Callable[[str], None]:
    """Add a line to the reliability summary printed at the end of the session."""
    return _NOTES.append


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for key, entry in report.user_properties:
        if key == "reliability":
            assert isinstance(entry, dict)  # what ``ledger`` records
            _ROWS.append({**entry, "test": report.nodeid, "passed": report.passed})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS and not _NOTES:
        return
    tr = terminalreporter
    tr.section("reliability")
    kinds: dict[str, list[int]] = {}
    for row in _ROWS:
        tried_passed = kinds.setdefault(row["kind"], [0, 0])
        tried_passed[0] += int(row.get("count", 1))
        tried_passed[1] += int(row.get("count", 1)) if row["passed"] else 0
    for kind, (tried, passed) in sorted(kinds.items()):
        tr.write_line(f"{kind:<10} tried {tried:>4}  passed {passed:>4}")
    lost = sum(int(r.get("lost", 0)) for r in _ROWS)
    accepted = sum(int(r.get("accepted", 0)) for r in _ROWS)
    tr.write_line(f"requests accepted under faults/overload {accepted}, lost {lost}")
    for line in _NOTES:
        tr.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RESULTS_ENV)
    if path and (_ROWS or _NOTES):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"rows": _ROWS, "notes": _NOTES}, indent=1))


@pytest.fixture(scope="module")
def api(
    triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """One real serve-api process for a module, in front of the session's tritonserver."""
    tmp = tmp_path_factory.mktemp("api")
    proc = ApiProcess(
        tmp / "data",
        tmp / "serve-api.log",
        ["--triton-url", triton_server.grpc_url, "--max-queue", "4", "--max-concurrency", "2"],
    )
    try:
        proc.wait_serving()
        yield proc
    finally:
        proc.stop(signal.SIGKILL)


@pytest.fixture
def spawn_api(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Start serve-api processes with given flags/env; all are killed at the end."""
    procs: list[ApiProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        data_dir: Path | None = None,
    ) -> ApiProcess:
        p = ApiProcess(data_dir or tmp_path / "data", tmp_path / "serve-api.log", args, env)
        procs.append(p)
        if wait:
            p.wait_serving()
        return p

    yield start
    for p in procs:
        p.stop(signal.SIGKILL)


@pytest.fixture
def triton_factory(model_repository: Path) -> Iterator[Callable[..., TritonServer]]:
    """Start tritonservers of this test's own (fault tests kill and restart them), on free
    ports or on given ones (``ports=other.ports`` restarts "the same" server)."""
    before = shm_regions()
    servers: list[TritonServer] = []

    def start(ports: dict[str, int] | None = None) -> TritonServer:
        p = ports or {}
        server = TritonServer(
            model_repository,
            http_port=p.get("http", 0),
            grpc_port=p.get("grpc", 0),
            metrics_port=p.get("metrics", 0),
            ready_timeout=180,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if process_state(server.pid) not in ("gone", "Z"):
            os.kill(server.pid, signal.SIGCONT)  # a test may have left it SIGSTOPped
        server.stop(timeout=10)
    remove_orphaned_shm(before)
