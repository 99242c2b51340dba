"""Static checks for the Dockerfiles (no Docker daemon here): pinned bases, non-root users,
health checks; plus hadolint, the standard Dockerfile linter, from the `deploy` extra."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from k8s_render import find_tool

ROOT_USERS = {"root", "0"}


@dataclass
class Stage:
    """One FROM ... block of a Dockerfile."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [value for key, value in self.instructions if key == keyword]
        return values[-1] if values else None


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            match = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", value, re.I)
            if match is None:
                raise ValueError(f"cannot parse FROM {value!r}")
            stages.append(Stage(base=match.group(1), name=match.group(2)))
        elif stages:
            stages[-1].instructions.append((keyword, value))
    return stages


def pinned(base: str) -> bool:
    """A base image given by digest, or by an explicit tag other than latest."""
    if "@sha256:" in base:
        return True
    tag = base.rsplit("/", 1)[-1].partition(":")[2]
    return bool(tag) and tag != "latest" and "$" not in base


def check_dockerfile(path: Path) -> list[str]:
    """Problems with one Dockerfile (empty when it passes)."""
    stages = parse(path.read_text())
    if not stages:
        return [f"{path.name}: no FROM instruction"]
    names = {stage.name for stage in stages if stage.name}
    copied_from = {
        match.group(1)
        for stage in stages
        for key, value in stage.instructions
        if key == "COPY" and (match := re.search(r"--from=(\S+)", value))
    }
    problems = []
    for index, stage in enumerate(stages):
        label = f"{path.name} stage {stage.name or index}"
        if stage.base not in names and not pinned(stage.base):
            problems.append(f"{label}: base {stage.base!r} must be pinned to a tag or digest")
        if stage.name in copied_from:
            continue  # a build stage: never run as a container
        user = stage.last("USER")
        if user is None or user.split(":")[0] in ROOT_USERS:
            problems.append(f"{label}: runs as root; add `USER <uid>:<gid>` (numeric, non-zero)")
        elif not user.split(":")[0].isdigit():
            problems.append(
                f"{label}: USER {user!r} must be numeric so Kubernetes can verify runAsNonRoot"
            )
        healthcheck = stage.last("HEALTHCHECK")
        final = index == len(stages) - 1
        if healthcheck is None or (final and healthcheck.upper() == "NONE"):
            problems.append(f"{label}: needs a HEALTHCHECK" + (" CMD" if final else ""))
    return problems


def hadolint(path: Path) -> list[str]:
    """hadolint's findings at warning level and above, one line each."""
    binary = find_tool("hadolint", "HADOLINT")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode == 0:
        return []
    return [f"hadolint: {line}" for line in result.stdout.splitlines() if line.strip()] or [
        f"hadolint {path.name} failed: {result.stderr.strip()}"
    ]
