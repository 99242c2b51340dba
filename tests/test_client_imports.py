"""The thin client stays thin: nothing in ``client/`` imports torch (a backend service
installs ``cinetron[client]`` only), and the Triton path does not load onnxruntime."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import cinetron.client

CLIENT_DIR = Path(cinetron.client.__file__).parent
TORCH_MODULES = {"cinetron.client.transports.torch_local"}  # the reference, by design


def client_modules() -> list[str]:
    names = [
        info.name
        for info in pkgutil.walk_packages([str(CLIENT_DIR)], prefix="cinetron.client.")
        if info.name not in TORCH_MODULES
    ]
    assert "cinetron.client.transports.triton_grpc" in names  # the walk found the tree
    return names


def loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level packages in ``sys.modules`` after importing ``modules`` in a fresh process."""
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted({k.split('.')[0] for k in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_no_client_module_imports_torch() -> None:
    loaded = loaded_after_import(client_modules())
    assert "torch" not in loaded
    assert "transformers" not in loaded


def test_triton_path_and_cli_do_not_load_onnxruntime_or_torch() -> None:
    loaded = loaded_after_import(
        [
            "cinetron.client.cli",
            "cinetron.client.pipeline",
            "cinetron.client.transports.triton_grpc",
            "cinetron.client.transports.triton_shm",
        ]
    )
    assert not loaded & {"torch", "onnxruntime", "transformers"}
    assert "tritonclient" in loaded  # the import really happened
