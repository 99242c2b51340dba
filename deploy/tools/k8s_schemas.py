"""Validate rendered objects against Kubernetes' OpenAPI schemas.

Built-in kinds use the schemas `kubernetes-validate` ships, in strict mode (unknown fields
are errors, like `kubectl apply --validate=strict`), for the oldest and newest Kubernetes
versions we support. Custom resources we deploy have a structural schema of their own in
schemas/ (kubernetes-validate has none for CRDs).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from k8s_render import K8sObject

# Oldest: gRPC probes, policy/v1 PDB unhealthyPodEvictionPolicy and matchLabelKeys are all
# available and on by default from 1.29. Newest: the last version kubernetes-validate ships.
KUBERNETES_VERSIONS: tuple[str, ...] = ("1.29.0", "1.37.0")

CUSTOM_SCHEMAS: dict[tuple[str, str], str] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}

SCHEMA_DIR = Path(__file__).parent / "schemas"


def describe(obj: K8sObject) -> str:
    """`Kind/name` for messages."""
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


@cache
def _custom_validator(filename: str) -> jsonschema.Draft202012Validator:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / filename).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<root>"


def validate_object(obj: K8sObject, versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """Problems with one object (empty when it is valid for every version)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in CUSTOM_SCHEMAS:
        validator = _custom_validator(CUSTOM_SCHEMAS[key])
        return [
            f"{describe(obj)}: {_path(error)}: {error.message} (schema {CUSTOM_SCHEMAS[key]})"
            for error in validator.iter_errors(obj)
        ]
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return [
                f"{describe(obj)}: no schema for {key[0]} {key[1]} in Kubernetes {version}; "
                f"use a built-in API version or add a schema to {SCHEMA_DIR}"
            ]
        except kubernetes_validate.ValidationError as error:
            problems.append(
                f"{describe(obj)}: invalid for Kubernetes {version} at {_path(error)}: "
                f"{error.message}"
            )
    return problems


def validate_all(objects: list[K8sObject]) -> list[str]:
    """Problems with every object, in order."""
    return [problem for obj in objects for problem in validate_object(obj)]
