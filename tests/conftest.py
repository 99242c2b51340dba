"""Shared fixtures: the exported model repository and a real tritonserver serving it.

Both are session-scoped: the export (about 20 s) and the server start (about 5 s)
happen once per test session, and the server is always stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cinetron.tools.tritonserver import TritonServer


@pytest.fixture(scope="session")
def exported_repository(tmp_path_factory: pytest.TempPathFactory):  # -> ExportReport
    """The cpu-flavour repository exported from the default weights, with its parity report."""
    from cinetron.export.configs import RepositoryOptions
    from cinetron.export.families.shapes import write_repository
    from cinetron.models.loading import DEFAULT_WEIGHTS

    if not (DEFAULT_WEIGHTS / "model.json").exists():
        pytest.fail(
            f"no trained weights at {DEFAULT_WEIGHTS} (model.json missing): commit the "
            "weights from `make train`, or point CINETRON_WEIGHTS at a weights folder"
        )
    out = tmp_path_factory.mktemp("model_repository")
    return write_repository(out, DEFAULT_WEIGHTS, RepositoryOptions(flavour="cpu"), log=print)


@pytest.fixture(scope="session")
def model_repository(exported_repository) -> Path:
    """Path of the cpu-flavour model repository (exported once per session)."""
    return Path(exported_repository.out)


@pytest.fixture(scope="session")
def triton_server(model_repository: Path) -> Iterator[TritonServer]:
    """A running tritonserver on free loopback ports, serving ``model_repository``."""
    server = TritonServer(model_repository, ready_timeout=180)
    server.start()
    print(f"tritonserver ready in {server.startup_seconds:.1f} s (pid {server.pid})")
    try:
        yield server
    finally:
        server.stop()
