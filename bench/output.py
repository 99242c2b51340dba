"""How every benchmark ends: its report as JSON under ``bench/results`` and its table on stdout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Report = dict[str, Any]


def write_json(path: Path, report: Report) -> None:
    from cinetron.core.files import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(report, indent=2) + "\n").encode())


def emit(path: Path, report: Report, table: Callable[[Report], str]) -> int:
    """Write ``report`` to ``path``, print its table; the exit status for ``main``."""
    write_json(path, report)
    print(table(report))
    print(f"\nwrote {path}")
    return 0
