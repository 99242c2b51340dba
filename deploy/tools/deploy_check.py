"""`make deploy-check`: prove the deployment is sound without a cluster.

For each overlay (deploy/k8s/overlays/*): render with the real `kubectl kustomize`, validate
every object against the Kubernetes schemas, check the wiring between objects. Then check
the Dockerfiles (static rules + hadolint) and, with --checkov, scan the rendered manifests
and the Dockerfiles with checkov. Exits 1 on any problem and names each one.

    python deploy/tools/deploy_check.py [--deploy-dir DIR] [--checkov PATH/TO/checkov]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import dockerfile_checks
import k8s_schemas
import k8s_wiring
from k8s_render import OVERLAYS, RenderError, render, to_yaml

DEFAULT_DEPLOY_DIR = Path(__file__).resolve().parents[1]


class Report:
    """Collects pass/fail per step and prints one line per step as it goes."""

    def __init__(self) -> None:
        self.steps = 0
        self.failed = 0

    def step(self, name: str, problems: list[str]) -> bool:
        self.steps += 1
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print(f"     - {problem}")
        else:
            print(f"ok   {name}")
        sys.stdout.flush()
        return not problems


def run_checkov(checkov: str, files: list[Path]) -> list[str]:
    """Failed checkov checks across the given manifests and Dockerfiles.

    Any failed check fails the step: offline (--skip-download) checkov has no severities,
    so instead of filtering to HIGH we fix or explicitly skip every finding. Skips live next
    to the object as `checkov.io/skipN: CHECK_ID=reason` annotations.
    """
    command = [
        checkov,
        "--framework",
        "kubernetes",
        "dockerfile",
        "--skip-download",
        "--compact",
        "--output",
        "json",
    ]
    for path in files:
        command += ["--file", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    try:
        parsed = json.loads(result.stdout)
    except json.JSONDecodeError:
        return [f"checkov produced no report (exit {result.returncode}): {result.stderr[-2000:]}"]
    reports = parsed if isinstance(parsed, list) else [parsed]
    problems, scanned = [], set()
    for report in reports:
        results = report.get("results", {})
        if report.get("summary", {}).get("parsing_errors"):
            problems.append(f"checkov could not parse some {report['check_type']} files")
        for checked in results.get("passed_checks", []) + results.get("failed_checks", []):
            scanned.add(Path(checked["file_path"]).name)
        for failed in results.get("failed_checks", []):
            problems.append(
                f"{failed['check_id']} {failed['check_name']}: {failed['resource']} "
                f"({Path(failed['file_path']).name}:{failed['file_line_range'][0]})"
            )
    # A file checkov silently ignored (unrecognised) would otherwise pass unseen.
    problems += [f"checkov checked nothing in {p.name}" for p in files if p.name not in scanned]
    if result.returncode not in (0, 1):
        problems.append(f"checkov exited {result.returncode}: {result.stderr[-2000:]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy-dir", type=Path, default=DEFAULT_DEPLOY_DIR)
    parser.add_argument("--checkov", help="path to the checkov executable; omit to skip")
    args = parser.parse_args(argv)
    deploy_dir: Path = args.deploy_dir.resolve()
    report = Report()

    with tempfile.TemporaryDirectory(prefix="cinetron-deploy-") as tmp:
        rendered_files = []
        for overlay in OVERLAYS:
            try:
                objects = render(deploy_dir / "k8s" / "overlays" / overlay)
            except RenderError as error:
                report.step(f"render {overlay}", [str(error)])
                continue
            report.step(f"render {overlay} ({len(objects)} objects)", [])
            report.step(
                f"schemas {overlay} (Kubernetes {', '.join(k8s_schemas.KUBERNETES_VERSIONS)})",
                k8s_schemas.validate_all(objects),
            )
            report.step(f"wiring {overlay}", k8s_wiring.check_all(objects, overlay))
            rendered = Path(tmp) / f"{overlay}.yaml"
            rendered.write_text(to_yaml(objects))
            rendered_files.append(rendered)

        docker_files = [
            path
            for path in sorted((deploy_dir / "docker").glob("Dockerfile.*"))
            if path.suffix != ".dockerignore"
        ]
        if not docker_files:
            report.step("dockerfiles", [f"no Dockerfile.* in {deploy_dir / 'docker'}"])
        for path in docker_files:
            report.step(
                f"dockerfile {path.name}",
                dockerfile_checks.check_dockerfile(path) + dockerfile_checks.hadolint(path),
            )

        if args.checkov:
            report.step(
                "checkov (manifests + Dockerfiles)",
                run_checkov(args.checkov, rendered_files + docker_files),
            )
        else:
            print("skip checkov (pass --checkov PATH; `make deploy-check` does)")

    verdict = "OK" if report.failed == 0 else f"FAILED ({report.failed} of {report.steps} steps)"
    print(f"deploy-check: {verdict}")
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
