"""The Kubernetes deployment (deploy/), checked offline the way `make deploy-check` does.

Renders each overlay with the real `kubectl kustomize`, validates the objects against the
Kubernetes schemas, asserts the wiring between them (selectors, ports, probes, HPA targets,
the API's Triton URL, network policies), checks the Dockerfiles, runs checkov, and proves
that the check fails when a manifest is broken in a copy of deploy/.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TOOLS = DEPLOY / "tools"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
sys.path.insert(0, str(TOOLS))

import dockerfile_checks  # noqa: E402
import k8s_render  # noqa: E402
import k8s_schemas  # noqa: E402
import k8s_wiring as wiring  # noqa: E402

K8sObject = dict[str, Any]


@pytest.fixture(scope="module", params=k8s_render.OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[K8sObject]]:
    overlay: str = request.param
    return overlay, k8s_render.render(DEPLOY / "k8s" / "overlays" / overlay)


def get(objects: list[K8sObject], kind: str, name: str) -> K8sObject:
    found = wiring.named(objects, kind, name)
    assert found is not None, f"{kind}/{name} not rendered"
    return found


def container(objects: list[K8sObject], deployment: str) -> dict[str, Any]:
    return wiring.containers(get(objects, "Deployment", deployment))[0]


def checkov_path() -> str:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `make install` (it builds the checkov venv)")
    return str(CHECKOV)


# --- render and schemas ----------------------------------------------------------------


def test_overlay_renders_every_part_of_the_deployment(rendered: tuple[str, list[K8sObject]]):
    _, objects = rendered
    kinds = sorted(obj["kind"] for obj in objects)
    for kind, count in {
        "Namespace": 1,
        "Deployment": 2,
        "Service": 2,
        "HorizontalPodAutoscaler": 2,
        "PodDisruptionBudget": 2,
        "ServiceMonitor": 2,
        "ServiceAccount": 2,
    }.items():
        assert kinds.count(kind) == count, f"{kind}: {kinds}"
    assert kinds.count("NetworkPolicy") >= 3  # default deny + Triton + API
    assert wiring.adapter_metric_names(objects) == {
        "cinetron_triton_queue_time_per_request_us",
        "cinetron_api_queue_depth",
        "cinetron_api_jobs_queued",
    }


def test_every_object_validates_against_kubernetes_schemas(rendered):
    _, objects = rendered
    assert k8s_schemas.validate_all(objects) == []


def test_schema_validation_rejects_misplaced_and_mistyped_fields(rendered):
    _, objects = rendered
    misplaced = copy.deepcopy(get(objects, "Deployment", "cinetron-triton"))
    misplaced["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    problems = k8s_schemas.validate_object(misplaced)
    assert any("'livenessProbes' was unexpected" in p for p in problems), problems
    mistyped = copy.deepcopy(get(objects, "Deployment", "cinetron-triton"))
    mistyped["spec"]["replicas"] = "two"
    problems = k8s_schemas.validate_object(mistyped)
    assert any("'two' is not of type 'integer'" in p for p in problems), problems

    monitor = copy.deepcopy(get(objects, "ServiceMonitor", "cinetron-triton"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    monitor["spec"]["endpoint"] = []
    problems = k8s_schemas.validate_object(monitor)
    assert any("15 seconds" in p for p in problems), problems
    assert any("'endpoint' was unexpected" in p for p in problems), problems


# --- wiring ------------------------------------------------------------------------------


def test_all_wiring_rules_hold(rendered):
    overlay, objects = rendered
    assert wiring.check_all(objects, overlay) == []


def test_services_select_their_deployments_pods_and_target_declared_ports(rendered):
    _, objects = rendered
    for name in ("cinetron-api", "cinetron-triton"):
        service = get(objects, "Service", name)
        selected = wiring.selected_workloads(objects, service["spec"]["selector"])
        assert [d["metadata"]["name"] for d in selected] == [name]
        for port in service["spec"]["ports"]:
            assert wiring.workload_port(selected[0], port["targetPort"]) is not None

    broken = copy.deepcopy(objects)
    get(broken, "Service", "cinetron-triton")["spec"]["selector"]["app.kubernetes.io/name"] = "x"
    assert any("matches no pod template" in p for p in wiring.check_services(broken))


def test_probes_use_ports_their_container_declares(rendered):
    _, objects = rendered
    triton = container(objects, "cinetron-triton")
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    startup = triton["startupProbe"]
    # Model load plus TensorRT engine builds: at least five minutes before liveness counts.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    api = container(objects, "cinetron-api")
    assert api["readinessProbe"]["grpc"]["port"] == wiring.container_port(api, "grpc")
    assert wiring.check_probes(objects) == []

    broken = copy.deepcopy(objects)
    wiring.containers(get(broken, "Deployment", "cinetron-triton"))[0]["livenessProbe"]["httpGet"][
        "port"
    ] = "health"
    assert any("livenessProbe uses port 'health'" in p for p in wiring.check_probes(broken))


def test_each_hpa_scales_its_own_deployment_on_published_metrics(rendered):
    _, objects = rendered
    for name in ("cinetron-api", "cinetron-triton"):
        ref = get(objects, "HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", name)
    assert wiring.check_autoscalers(objects) == []

    broken = copy.deepcopy(objects)
    hpa = get(broken, "HorizontalPodAutoscaler", "cinetron-triton")
    hpa["spec"]["scaleTargetRef"]["name"] = "cinetron-api"
    hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] = "nv_gpu_utilization"
    problems = wiring.check_autoscalers(broken)
    assert any("not its namesake" in p for p in problems), problems
    assert any("'nv_gpu_utilization' is not published" in p for p in problems), problems


def test_api_keeps_no_job_state_on_the_pod_and_reaches_both_stores(rendered):
    overlay, objects = rendered
    api = get(objects, "Deployment", "cinetron-api")
    env = wiring.container_env(objects, container(objects, "cinetron-api"))
    assert env["CINETRON_VIDEO_URL"].startswith("s3://")
    assert env["CINETRON_DATABASE_URL_FILE"] == "/etc/cinetron/store/database-url"
    assert env["AWS_CONFIG_FILE"] == "/etc/cinetron/store/aws-config"
    assert "CINETRON_DATA_DIR" not in env
    volumes = {v["name"]: v for v in wiring.pod_spec(api)["volumes"]}
    assert volumes["store"]["secret"]["secretName"] == "cinetron-api-store"
    assert not any("persistentVolumeClaim" in v for v in volumes.values()) and "data" not in volumes
    secret = wiring.named(objects, "Secret", "cinetron-api-store")
    assert (secret is not None) == (overlay == "cpu-dev")  # production: the operator's
    hpa = get(objects, "HorizontalPodAutoscaler", "cinetron-api")
    external = [m for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert [m["external"]["metric"]["name"] for m in external] == ["cinetron_api_jobs_queued"]
    assert wiring.check_api_stores(objects) == []

    broken = copy.deepcopy(objects)
    spec = wiring.pod_spec(get(broken, "Deployment", "cinetron-api"))
    spec["containers"][0]["env"] = [{"name": "CINETRON_DATABASE_URL", "value": "postgresql://x"}]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "store"]
    for policy in wiring.of_kind(broken, "NetworkPolicy"):
        if policy["metadata"]["name"] == "cinetron-api":
            policy["spec"]["egress"] = policy["spec"]["egress"][:2]
    problems = wiring.check_api_stores(broken)
    assert any("must come from files" in p for p in problems), problems
    assert any("is not key 'database-url' of a mounted Secret" in p for p in problems), problems
    assert any("no NetworkPolicy egress to PostgreSQL" in p for p in problems), problems


def test_api_triton_url_is_the_triton_service_grpc_port(rendered):
    _, objects = rendered
    env = wiring.container_env(objects, container(objects, "cinetron-api"))
    assert env["CINETRON_TRITON_URL"] == "cinetron-triton:8001"
    triton_args = container(objects, "cinetron-triton")["args"]
    assert "--grpc-port=8001" in triton_args
    assert "--model-control-mode=none" in triton_args
    assert wiring.check_api_triton_url(objects) == []

    broken = copy.deepcopy(objects)
    configmap = next(
        o for o in wiring.of_kind(broken, "ConfigMap") if "CINETRON_TRITON_URL" in o.get("data", {})
    )
    configmap["data"]["CINETRON_TRITON_URL"] = "cinetron-triton:8002"  # the metrics port
    problems = wiring.check_api_triton_url(broken)
    assert problems and "reaches Triton port 8002" in problems[0], problems


def test_the_api_http_port_is_declared_exposed_and_admitted(rendered):
    _, objects = rendered
    env = wiring.container_env(objects, container(objects, "cinetron-api"))
    assert env["CINETRON_HTTP_ADDRESS"] == "0.0.0.0:8080"
    assert wiring.check_api_http_address(objects) == []

    def with_address(value: str | None) -> list[str]:
        broken = copy.deepcopy(objects)
        configmap = next(
            o
            for o in wiring.of_kind(broken, "ConfigMap")
            if "CINETRON_HTTP_ADDRESS" in o.get("data", {})
        )
        if value is None:
            del configmap["data"]["CINETRON_HTTP_ADDRESS"]
        else:
            configmap["data"]["CINETRON_HTTP_ADDRESS"] = value
        return wiring.check_api_http_address(broken)

    assert with_address("0") == []  # off is fine
    assert "is not a container port" in with_address("0.0.0.0:8081")[0]
    assert "loopback inside the pod" in with_address("127.0.0.1:8080")[0]
    assert "unset" in with_address(None)[0]
    closed = copy.deepcopy(objects)
    policy = get(closed, "NetworkPolicy", "cinetron-api")
    policy["spec"]["ingress"][0]["ports"] = [{"port": "grpc", "protocol": "TCP"}]
    assert any("no NetworkPolicy admits" in p for p in wiring.check_api_http_address(closed))


def test_network_policies_let_only_the_api_reach_triton(rendered):
    _, objects = rendered
    assert wiring.check_network_policies(objects) == []

    opened = copy.deepcopy(objects)
    policy = get(opened, "NetworkPolicy", "cinetron-triton")
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})
    assert any(
        "gRPC port must be open to cinetron-api" in p for p in wiring.check_network_policies(opened)
    )

    no_deny = [o for o in objects if o["metadata"]["name"] != "default-deny"]
    assert any("no default-deny" in p for p in wiring.check_network_policies(no_deny))


def test_containers_are_locked_down_and_sized(rendered):
    _, objects = rendered
    for deployment in wiring.of_kind(objects, "Deployment"):
        pod = wiring.pod_spec(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        for c in wiring.containers(deployment, init=True):
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, c["name"]
            assert security["allowPrivilegeEscalation"] is False, c["name"]
            assert security["capabilities"]["drop"] == ["ALL"], c["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), c["name"]


def test_only_the_gpu_overlay_schedules_triton_on_gpus(rendered):
    overlay, objects = rendered
    limits = container(objects, "cinetron-triton")["resources"]["limits"]
    pod = wiring.pod_spec(get(objects, "Deployment", "cinetron-triton"))
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    else:
        assert "nvidia.com/gpu" not in limits
    assert wiring.check_gpu_scheduling(objects, overlay) == []
    assert wiring.check_gpu_scheduling(objects, "gpu" if overlay != "gpu" else "cpu-dev")


# --- Dockerfiles -------------------------------------------------------------------------


def test_dockerfiles_pin_their_bases_run_as_non_root_and_health_check():
    triton = DEPLOY / "docker" / "Dockerfile.triton"
    api = DEPLOY / "docker" / "Dockerfile.api"
    for path in (triton, api):
        assert dockerfile_checks.check_dockerfile(path) == []
        assert dockerfile_checks.hadolint(path) == []
    triton_stages = dockerfile_checks.parse(triton.read_text())
    # NGC 24.10 ships Triton 2.51, the server the cpu flavour is tested on (nvidia-pytriton 0.7).
    assert triton_stages[-1].base == "nvcr.io/nvidia/tritonserver:24.10-py3"
    api_stages = dockerfile_checks.parse(api.read_text())
    assert {stage.base for stage in api_stages} == {"python:3.11.10-slim-bookworm"}
    installs = [v for s in api_stages for k, v in s.instructions if k == "RUN" and "pip" in v]
    assert any('".[client,serve-api]"' in run for run in installs), installs


def test_api_build_context_includes_everything_the_package_build_reads():
    """The API image builds the package with setup.py's stub generation; a path the
    .dockerignore leaves out breaks `docker build` long after review."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "setup.py", "MANIFEST.in", "proto", project["project"]["readme"]}
    needed |= set(project["tool"]["setuptools"]["packages"]["find"]["where"])
    ignore = (DEPLOY / "docker" / "Dockerfile.api.dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if line and line[0] != "#")] == "**"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    missing = {path for path in needed if path.split("/")[0] not in included}
    assert not missing, f"add to Dockerfile.api.dockerignore: {sorted(missing)}"


def test_dockerfile_check_rejects_unpinned_root_images_without_health_check(tmp_path: Path):
    path = tmp_path / "Dockerfile.bad"
    path.write_text('FROM python:latest\nRUN echo hi\nCMD ["python"]\n')
    problems = dockerfile_checks.check_dockerfile(path)
    assert any("must be pinned" in p for p in problems), problems
    assert any("runs as root" in p for p in problems), problems
    assert any("HEALTHCHECK" in p for p in problems), problems


# --- the whole check, passing and failing ----------------------------------------------


def run_check(deploy_dir: Path, checkov: bool = True) -> subprocess.CompletedProcess[str]:
    """deploy_check.py as `make deploy-check` runs it (checkov is the slow step)."""
    command = [sys.executable, str(TOOLS / "deploy_check.py"), "--deploy-dir", str(deploy_dir)]
    return subprocess.run(
        command + (["--checkov", checkov_path()] if checkov else []),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_deploy_check_passes_on_the_repository():
    result = run_check(DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   checkov" in result.stdout
    assert result.stdout.rstrip().endswith("deploy-check: OK")


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


BREAKS = {
    # name: (file under deploy/, old text, new text, the failing step it must report)
    "service-selector-typo": (
        "k8s/base/triton/service.yaml",
        "app.kubernetes.io/name: cinetron-triton",
        "app.kubernetes.io/name: cinetron-trition",
        "FAIL wiring",
    ),
    "mistyped-field": (
        "k8s/base/api/deployment.yaml",
        "replicas: 2",
        "replicas: two",
        "FAIL schemas",
    ),
    "missing-resource-file": (
        "k8s/base/kustomization.yaml",
        "- triton/pdb.yaml",
        "- triton/pod-disruption-budget.yaml",
        "FAIL render",
    ),
    "writable-root-filesystem": (
        "k8s/base/api/deployment.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        "CKV_K8S_22",
    ),
    "dockerfile-runs-as-root": (
        "docker/Dockerfile.api",
        "USER 10001:10001",
        "USER root",
        "runs as root",
    ),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_deploy_check_fails_on_a_broken_copy(name: str, tmp_path: Path):
    copy_dir = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_dir, ignore=shutil.ignore_patterns("__pycache__"))
    relative, old, new, expected = BREAKS[name]
    replace_in(copy_dir / relative, old, new)
    result = run_check(copy_dir, checkov=expected.startswith("CKV_"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout
    assert "deploy-check: FAILED" in result.stdout


def test_make_deploy_check_exits_non_zero_on_a_broken_copy(tmp_path: Path):
    copy_dir = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_dir, ignore=shutil.ignore_patterns("__pycache__"))
    replace_in(copy_dir / "k8s/base/api/settings.env", "cinetron-triton:8001", "triton:8001")
    checkov_path()
    # -o install: the venvs exist already (this test runs inside `make test`); don't rebuild.
    result = subprocess.run(
        ["make", "-s", "-o", "install", "deploy-check", f"DEPLOY_DIR={copy_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "CINETRON_TRITON_URL host 'triton' is not a rendered Service" in result.stdout
