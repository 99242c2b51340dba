"""The thin client stays thin: nothing in the contract, core or transports imports torch
(a backend service installs ``cinetron[client]`` only), and the Triton path does not load
onnxruntime."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import cinetron

PACKAGE_DIR = Path(cinetron.__file__).parent
THIN_CLIENT = ("contract", "core", "transports", "api_client")
TORCH_MODULES = {"cinetron.transports.torch_local"}  # the reference, by design


def client_modules() -> list[str]:
    names = [
        info.name
        for layer in THIN_CLIENT
        for info in pkgutil.walk_packages([str(PACKAGE_DIR / layer)], prefix=f"cinetron.{layer}.")
        if info.name not in TORCH_MODULES and not info.name.startswith("cinetron.api_client._")
    ]
    assert "cinetron.transports.triton_grpc" in names  # the walk found the tree
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
            "cinetron.tools.generate",
            "cinetron.core.pipeline",
            "cinetron.transports.triton_grpc",
            "cinetron.transports.triton_shm",
        ]
    )
    assert not loaded & {"torch", "onnxruntime", "transformers"}
    assert "tritonclient" in loaded  # the import really happened
