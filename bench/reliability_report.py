"""``python -m bench.reliability_report``: run the reliability suite and summarise it.

Runs ``pytest tests/reliability`` (slow tests included) with the suite's ledger switched
on, then prints one table — cases tried and passed, faults survived, requests accepted
and lost, overload figures, the dependency audit — and writes it to
``bench/results/reliability.json``. ``make reliability`` calls this. Exit status: the
pytest status, or 1 when any accepted request was lost.

``run_pip_audit`` is also used by tests/reliability/test_security.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# A run writes here (git-ignored), so it leaves the checkout clean; the committed record
# bench/results/reliability.json is rewritten only when asked (--out, make reliability
# RELIABILITY_OUT=bench/results/reliability.json).
DEFAULT_OUT = ROOT / "outputs" / "reliability.json"
RESULTS_ENV = "CINETRON_RELIABILITY_RESULTS"  # read by tests/reliability/conftest.py


def our_pins(pyproject: Path = ROOT / "pyproject.toml") -> set[str]:
    """Names of the packages pyproject.toml depends on directly (any extra)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    names = {re.split(r"[\[<>=!~; ]", s, maxsplit=1)[0].strip().lower() for s in specs}
    return {n.replace("_", "-") for n in names if n and n != "cinetron"}


def run_pip_audit(timeout: float = 600.0) -> dict[str, Any]:
    """Audit the installed environment with pip-audit; classify what it reports.

    Returns counts, ``fixable_in_our_pins`` (advisories with a fixed release in a package
    we pin directly: these must be fixed by raising the pin), ``other`` (transitive, or
    no fix released: printed and documented, not failed on) and ``lines`` to print.
    When the vulnerability service cannot be reached, nothing is audited and the lines
    say so — "no known vulnerabilities" is never claimed for packages not checked.
    """
    cmd = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return _audit_unavailable(f"pip-audit did not run: {e}")
    if not done.stdout.strip().startswith("{"):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return _audit_unavailable(f"pip-audit failed: {tail}")
    report = json.loads(done.stdout)
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    pins = our_pins()
    fixable: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for dep in audited:
        for vuln in dep.get("vulns", []):
            item = {
                "package": dep["name"],
                "version": dep.get("version", ""),
                "id": vuln.get("id", ""),
                "fix_versions": vuln.get("fix_versions", []),
            }
            direct = dep["name"].lower().replace("_", "-") in pins
            (fixable if direct and item["fix_versions"] else other).append(item)
    lines = [
        f"pip-audit: {len(audited)} packages audited, {len(skipped)} not auditable, "
        f"{len(fixable) + len(other)} advisories ({len(fixable)} fixable in our own pins)"
    ]
    if deps and not audited:
        lines.append(
            "pip-audit: the vulnerability service was unreachable from here "
            f"({skipped[0]['skip_reason']}); nothing was checked — run `make reliability` "
            "where PyPI's JSON API is reachable"
        )
    for item in fixable:
        lines.append(f"pip-audit: FIX {item['package']} {item['version']} {item['id']} "
                     f"-> {', '.join(item['fix_versions'])}")  # fmt: skip
    for item in other:
        fix = ", ".join(item["fix_versions"]) or "no fix released"
        lines.append(f"pip-audit: upstream {item['package']} {item['version']} {item['id']} "
                     f"({fix}; not one of our direct pins or nothing to upgrade to)")  # fmt: skip
    return {
        "status": "ok" if audited else "unreachable",
        "packages": len(deps),
        "audited": len(audited),
        "skipped": len(skipped),
        "fixable_in_our_pins": fixable,
        "other": other,
        "lines": lines,
    }


def _audit_unavailable(reason: str) -> dict[str, Any]:
    return {"status": "unavailable", "packages": 0, "audited": 0, "skipped": 0,
            "fixable_in_our_pins": [], "other": [], "lines": [reason]}  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary table from the ledger rows the suite wrote."""

    def tried_passed(kind: str) -> tuple[int, int]:
        picked = [r for r in rows if r["kind"] == kind]
        tried = sum(int(r.get("count", 1)) for r in picked)
        return tried, sum(int(r.get("count", 1)) for r in picked if r["passed"])

    corpus = tried_passed("corpus")
    fuzz = tried_passed("fuzz")
    security = tried_passed("security")
    faults = [r for r in rows if r["kind"] == "fault"]
    overload = [r for r in rows if r["kind"] == "overload"]
    fuzz_codes: dict[str, int] = {}
    for r in rows:
        for code, n in r.get("codes", {}).items():
            fuzz_codes[code] = fuzz_codes.get(code, 0) + n
    by_surface: dict[str, int] = {}
    for r in rows:
        if r["kind"] == "corpus":
            by_surface[r.get("surface", "?")] = by_surface.get(r.get("surface", "?"), 0) + int(
                r.get("count", 1)
            )
    return {
        "bad_input_cases": {"tried": corpus[0], "passed": corpus[1], "by_surface": by_surface},
        "fuzz_examples": {
            "tried": fuzz[0],
            "passed": fuzz[1],
            "crashes": sum(n for c, n in fuzz_codes.items() if c in ("INTERNAL", "UNKNOWN")),
            "codes": fuzz_codes,
        },
        "faults": {
            "injected": len(faults),
            "survived": sum(r["passed"] for r in faults),
            "names": [f"{r['name']}: {'survived' if r['passed'] else 'FAILED'}" for r in faults],
        },
        "security_checks": {"tried": security[0], "passed": security[1]},
        "overload": [{k: r[k] for k in r if k not in ("kind", "test", "count")} for r in overload],
        "requests_accepted": sum(int(r.get("accepted", 0)) for r in rows),
        "requests_lost": sum(int(r.get("lost", 0)) for r in rows),
        "scale_out": scale_out_summary([r for r in rows if r["kind"] == "scale-out"]),
    }


def scale_out_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The scale-out results (tests/reliability/test_scale_out_faults.py), one run."""
    reclaims = [float(s) for r in rows for s in r.get("reclaim_s", [])]
    lags = [r["lag_ms"] for r in rows if "lag_ms" in r]
    return {
        "scenarios": len(rows),
        "passed": sum(bool(r["passed"]) for r in rows),
        "replicas": max((int(r.get("replicas", 0)) for r in rows), default=0),
        "jobs_submitted": sum(int(r.get("submitted", 0)) for r in rows),
        "replica_kills": sum(int(r.get("kills", 0)) for r in rows),
        "replica_freezes": sum(int(r.get("freezes", 0)) for r in rows),
        "postgres_restarts": sum(int(r.get("pg_restarts", 0)) for r in rows),
        "s3_outages": sum(int(r.get("s3_outages", 0)) for r in rows),
        "jobs_lost": sum(int(r.get("lost", 0)) for r in rows),
        "jobs_succeeded_twice": sum(int(r.get("twice", 0)) for r in rows),
        "reclaim_s": reclaims,
        "median_reclaim_s": round(statistics.median(reclaims), 2) if reclaims else None,
        "watch_lag_ms": lags[0] if lags else None,
    }


def scale_out_table(s: dict[str, Any]) -> str:
    lag = s["watch_lag_ms"] or {}
    cells = [
        ("replicas (most at once)", s["replicas"]),
        ("jobs submitted", s["jobs_submitted"]),
        ("replica kills (SIGKILL)", s["replica_kills"]),
        ("owners frozen past their lease (SIGSTOP, then SIGCONT)", s["replica_freezes"]),
        ("PostgreSQL restarts", s["postgres_restarts"]),
        ("S3 outages at upload", s["s3_outages"]),
        ("jobs lost", s["jobs_lost"]),
        ("jobs run to success twice", s["jobs_succeeded_twice"]),
        ("median reclaim time (kill or freeze → started elsewhere)",
         f"{s['median_reclaim_s']} s (each: {s['reclaim_s']})"),
        ("WatchJob lag, other replica vs owner",
         f"p50 {lag.get('p50')} ms, p95 {lag.get('p95')} ms, max {lag.get('max')} ms"
         f" over {lag.get('steps')} steps"),
        ("scenarios passed", f"{s['passed']} / {s['scenarios']}"),
    ]  # fmt: skip
    return "\n".join(["| scale-out | result |", "|---|---|"] + [f"| {k} | {v} |" for k, v in cells])


def table(summary: dict[str, Any], audit: dict[str, Any] | None) -> str:
    s = summary
    rows = [
        ("bad-input cases (API, CLI, Triton)",
         f"{s['bad_input_cases']['passed']} / {s['bad_input_cases']['tried']} passed"),
        ("fuzzed requests (hypothesis)",
         f"{s['fuzz_examples']['passed']} / {s['fuzz_examples']['tried']} passed, "
         f"{s['fuzz_examples']['crashes']} INTERNAL/UNKNOWN"),
        ("faults injected (real processes)",
         f"{s['faults']['survived']} / {s['faults']['injected']} survived"),
        ("security checks", f"{s['security_checks']['passed']} / {s['security_checks']['tried']}"
         " passed"),
    ]  # fmt: skip
    for o in s["overload"]:
        rss = f"RSS {o.get('rss_before_mb', '?')} -> {o.get('rss_after_mb', '?')} MB"
        rows.append(
            (
                "overload " + o.get("name", ""),
                f"{o.get('accepted', 0)} admitted and finished, {o.get('refused', 0)} "
                f"RESOURCE_EXHAUSTED (max {o.get('max_refusal_s', '?')} s), {rss}",
            )
        )
    rows.append(("requests accepted under faults/overload", str(s["requests_accepted"])))
    rows.append(("requests lost", str(s["requests_lost"])))
    if audit is not None:
        rows.append(("pip-audit", f"{audit['audited']} audited, {audit['skipped']} not auditable, "
                     f"{len(audit['fixable_in_our_pins'])} fixable in our pins, "
                     f"{len(audit['other'])} upstream ({audit['status']})"))  # fmt: skip
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'check':<{width}} | result |", "|---|---|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability_report")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="summary JSON [%(default)s]")
    p.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="summarise an existing ledger file instead of running the suite",
    )
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = p.parse_args(argv)

    started = time.monotonic()
    code = 0
    raw = args.raw
    if raw is None:
        raw = Path(tempfile.mkdtemp(prefix="cinetron-reliability-")) / "ledger.json"
        env = {**os.environ, RESULTS_ENV: str(raw), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "reliability"), "-q",
               "-p", "no:cacheprovider", *args.pytest_args]  # fmt: skip
        print("$ " + " ".join(cmd), flush=True)
        code = subprocess.call(cmd, cwd=ROOT, env=env)
    if not raw.exists():
        print(f"no ledger at {raw}: the suite did not run", file=sys.stderr)
        return code or 1
    ledger = json.loads(raw.read_text())
    summary = summarise(ledger["rows"])
    audit = next((r["audit"] for r in ledger["rows"] if "audit" in r), None)
    text = table(summary, audit)
    print("\nReliability summary\n" + text)
    if summary["scale_out"]["scenarios"]:
        scale = scale_out_table(summary["scale_out"])
        print("\nScale-out (docs/scale-out.md)\n" + scale)
        text += "\n\n" + scale
    for line in ledger.get("notes", []):
        print(line)
    result = {
        "summary": summary,
        "pip_audit": audit,
        "table_markdown": text,
        "pytest_exit_code": code,
        "seconds": round(time.monotonic() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "rows": ledger["rows"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    if summary["requests_lost"] or summary["scale_out"]["jobs_lost"]:
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
