"""Cross-object wiring rules: the mistakes a schema cannot see.

Each rule takes the rendered objects of one overlay and returns problems as sentences that
name the objects involved (empty list: the rule holds). A Service whose selector matches no
pod, a probe on a port the container does not open, an HPA pointing at a renamed
Deployment, or an API pointed at the wrong Triton port all apply cleanly and fail only at
run time; these rules catch them before the cluster does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml
from k8s_render import K8sObject
from k8s_schemas import describe

API_DEPLOYMENT = "cinetron-api"
TRITON_DEPLOYMENT = "cinetron-triton"
# Secrets the operator creates before applying (never committed): deploy/README.md step 4.
EXTERNAL_SECRETS = frozenset({"cinetron-api-tokens", "cinetron-api-store"})
# The API's stores (docs/scale-out.md): files of the mounted Secret, never environment values.
STORE_FILES = {"CINETRON_DATABASE_URL_FILE": "database-url", "AWS_CONFIG_FILE": "aws-config"}
POSTGRES_PORT = 5432
S3_PORTS = frozenset({443, 9000})
GPU_RESOURCE = "nvidia.com/gpu"
GPU_OVERLAYS = frozenset({"gpu"})
ADAPTER_RULES_CONFIGMAP = "cinetron-prometheus-adapter-rules"


# --- helpers -------------------------------------------------------------------------------


def of_kind(objects: list[K8sObject], kind: str) -> list[K8sObject]:
    return [obj for obj in objects if obj.get("kind") == kind]


def named(objects: list[K8sObject], kind: str, name: str) -> K8sObject | None:
    for obj in of_kind(objects, kind):
        if obj["metadata"]["name"] == name:
            return obj
    return None


def pod_spec(workload: K8sObject) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: K8sObject) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def containers(workload: K8sObject, init: bool = False) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    found: list[dict[str, Any]] = list(spec.get("containers", []))
    if init:
        found += spec.get("initContainers", [])
    return found


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        # A Service's plain map selector.
        selector = {"matchLabels": selector} if selector else {}
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def selected_workloads(objects: list[K8sObject], selector: dict[str, Any]) -> list[K8sObject]:
    return [
        dep for dep in of_kind(objects, "Deployment") if selector_matches(selector, pod_labels(dep))
    ]


def container_port(container: dict[str, Any], port: int | str) -> int | None:
    """The number of a container port given by name or number; None if the container lacks it."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return int(declared["containerPort"])
    return None


def workload_port(workload: K8sObject, port: int | str) -> int | None:
    for container in containers(workload):
        if (number := container_port(container, port)) is not None:
            return number
    return None


def container_env(objects: list[K8sObject], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if ref := source.get("configMapRef"):
            configmap = named(objects, "ConfigMap", ref["name"])
            if configmap is not None:
                env.update({k: str(v) for k, v in configmap.get("data", {}).items()})
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
    return env


def flag_value(args: list[str], flag: str) -> str | None:
    for arg in args:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


# --- rules ---------------------------------------------------------------------------------


def check_namespaces(objects: list[K8sObject]) -> list[str]:
    """Everything lives in the one Namespace the overlay creates."""
    namespaces = of_kind(objects, "Namespace")
    if len(namespaces) != 1:
        return [f"expected exactly one Namespace, found {len(namespaces)}"]
    namespace = namespaces[0]["metadata"]["name"]
    return [
        f"{describe(obj)} is in namespace {obj['metadata'].get('namespace')!r}, "
        f"expected {namespace!r}: add `namespace: {namespace}` to its kustomization"
        for obj in objects
        if obj["kind"] != "Namespace" and obj["metadata"].get("namespace") != namespace
    ]


def check_workload_selectors(objects: list[K8sObject]) -> list[str]:
    """A Deployment's selector matches its own pod template and no other Deployment's pods."""
    problems = []
    for dep in of_kind(objects, "Deployment"):
        selector = dep["spec"]["selector"]
        if not selector_matches(selector, pod_labels(dep)):
            problems.append(f"{describe(dep)}: selector {selector} does not match its pod labels")
        others = [o for o in selected_workloads(objects, selector) if o is not dep]
        if others:
            problems.append(f"{describe(dep)}: selector also matches {describe(others[0])}'s pods")
        for constraint in pod_spec(dep).get("topologySpreadConstraints", []):
            if not selector_matches(constraint.get("labelSelector"), pod_labels(dep)):
                problems.append(
                    f"{describe(dep)}: topology spread on {constraint['topologyKey']} selects "
                    "other pods than this Deployment's, so it spreads nothing"
                )
    return problems


def check_services(objects: list[K8sObject]) -> list[str]:
    """Each Service selects pods, and each of its target ports is a port those pods open."""
    problems = []
    for service in of_kind(objects, "Service"):
        selector = service["spec"].get("selector")
        targets = selected_workloads(objects, selector or {}) if selector else []
        if not targets:
            problems.append(f"{describe(service)}: selector {selector} matches no pod template")
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in targets:
                if workload_port(workload, target) is None:
                    problems.append(
                        f"{describe(service)}: port {port.get('name', port['port'])} targets "
                        f"{target!r}, which {describe(workload)} does not declare"
                    )
    return problems


def check_probes(objects: list[K8sObject]) -> list[str]:
    """Every probe exists and points at a port its own container declares."""
    problems = []
    for dep in of_kind(objects, "Deployment"):
        for container in containers(dep):
            where = f"{describe(dep)} container {container['name']}"
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name)
                if probe is None:
                    problems.append(f"{where}: has no {probe_name}")
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if (
                        handler in probe
                        and container_port(container, probe[handler]["port"]) is None
                    ):
                        problems.append(
                            f"{where}: {probe_name} uses port {probe[handler]['port']!r}, "
                            f"not one of its container ports"
                        )
    return problems


def adapter_metric_names(objects: list[K8sObject]) -> set[str]:
    """Custom-metric names the shipped prometheus-adapter rules publish."""
    configmap = named(objects, "ConfigMap", ADAPTER_RULES_CONFIGMAP)
    if configmap is None:
        return set()
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    rules = config.get("rules", []) + config.get("externalRules", [])
    return {rule["name"]["as"] for rule in rules}


def check_autoscalers(objects: list[K8sObject]) -> list[str]:
    """Each HPA scales the Deployment of its own name on metrics the adapter rules publish."""
    problems = []
    published = adapter_metric_names(objects)
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        ref, spec = hpa["spec"]["scaleTargetRef"], hpa["spec"]
        if (ref.get("apiVersion"), ref["kind"]) != ("apps/v1", "Deployment") or named(
            objects, "Deployment", ref["name"]
        ) is None:
            problems.append(f"{describe(hpa)}: scaleTargetRef {ref} is not a rendered Deployment")
        elif ref["name"] != hpa["metadata"]["name"]:
            problems.append(f"{describe(hpa)}: scales Deployment/{ref['name']}, not its namesake")
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append(f"{describe(hpa)}: minReplicas > maxReplicas")
        for metric in spec.get("metrics", []):
            source = {"Pods": "pods", "External": "external"}.get(metric["type"])
            if source and metric[source]["metric"]["name"] not in published:
                problems.append(
                    f"{describe(hpa)}: {source} metric {metric[source]['metric']['name']!r} is "
                    f"not published by ConfigMap/{ADAPTER_RULES_CONFIGMAP} "
                    f"(has {sorted(published)})"
                )
    return problems


def check_disruption_budgets(objects: list[K8sObject]) -> list[str]:
    """Each PDB covers exactly one Deployment, and each Deployment has one."""
    problems: list[str] = []
    covered: set[str] = set()
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        targets = selected_workloads(objects, pdb["spec"]["selector"])
        if len(targets) != 1:
            problems.append(f"{describe(pdb)}: selects {len(targets)} Deployments, expected 1")
        covered.update(t["metadata"]["name"] for t in targets)
    for dep in of_kind(objects, "Deployment"):
        if dep["metadata"]["name"] not in covered:
            problems.append(f"{describe(dep)}: no PodDisruptionBudget covers its pods")
    return problems


def check_api_triton_url(objects: list[K8sObject]) -> list[str]:
    """CINETRON_TRITON_URL names the Triton Service's port that reaches Triton's --grpc-port."""
    api, triton = (
        named(objects, "Deployment", API_DEPLOYMENT),
        named(objects, "Deployment", TRITON_DEPLOYMENT),
    )
    if api is None or triton is None:
        return [f"Deployments {API_DEPLOYMENT} and {TRITON_DEPLOYMENT} must both be rendered"]
    url = container_env(objects, containers(api)[0]).get("CINETRON_TRITON_URL")
    if url is None or ":" not in url:
        return [f"{describe(api)}: CINETRON_TRITON_URL must be HOST:PORT, got {url!r}"]
    host, port_text = url.rsplit(":", 1)
    service_name, _, rest = host.partition(".")
    namespace = api["metadata"].get("namespace")
    if rest and not rest.startswith(f"{namespace}.svc") and rest != namespace:
        return [f"{describe(api)}: CINETRON_TRITON_URL {url!r} leaves namespace {namespace!r}"]
    service = named(objects, "Service", service_name)
    if service is None:
        return [f"{describe(api)}: CINETRON_TRITON_URL host {host!r} is not a rendered Service"]
    if not selector_matches(service["spec"].get("selector"), pod_labels(triton)):
        return [
            f"{describe(api)}: CINETRON_TRITON_URL {url!r}: "
            f"{describe(service)} does not select Triton's pods"
        ]
    grpc_port = flag_value(containers(triton)[0].get("args", []), "--grpc-port") or "8001"
    for port in service["spec"]["ports"]:
        if str(port["port"]) == port_text:
            target = workload_port(triton, port.get("targetPort", port["port"]))
            if target != int(grpc_port):
                return [
                    f"{describe(api)}: CINETRON_TRITON_URL {url!r} reaches Triton port {target}, "
                    f"but Triton serves gRPC on --grpc-port={grpc_port}"
                ]
            return []
    return [
        f"{describe(api)}: CINETRON_TRITON_URL port {port_text} "
        f"is not a port of {describe(service)}"
    ]


def check_api_http_address(objects: list[K8sObject]) -> list[str]:
    """The API's HTTP side (CINETRON_HTTP_ADDRESS) is off, or listens on all interfaces on a
    port the container declares, a Service exposes and a NetworkPolicy admits callers to."""
    api = named(objects, "Deployment", API_DEPLOYMENT)
    if api is None:
        return []
    where = describe(api)
    value = container_env(objects, containers(api)[0]).get("CINETRON_HTTP_ADDRESS")
    if value is not None and value.strip() in ("", "0"):
        return []  # turned off
    if value is None:
        return [
            f"{where}: CINETRON_HTTP_ADDRESS is unset, so the HTTP API listens on "
            "127.0.0.1:8080 inside the pod, where nothing can reach it; set 0.0.0.0:PORT or "
            "0 (off)"
        ]
    host, _, port_text = value.rpartition(":")
    if not port_text.isdigit():
        return [f"{where}: CINETRON_HTTP_ADDRESS must be HOST:PORT or 0, got {value!r}"]
    if host.strip("[]") in ("127.0.0.1", "localhost", "::1"):
        return [f"{where}: CINETRON_HTTP_ADDRESS {value!r} is loopback inside the pod"]
    port = int(port_text)
    if workload_port(api, port) is None:
        return [f"{where}: CINETRON_HTTP_ADDRESS port {port} is not a container port"]
    problems = []
    if not any(
        workload_port(api, p.get("targetPort", p["port"])) == port
        for service in of_kind(objects, "Service")
        if selector_matches(service["spec"].get("selector"), pod_labels(api))
        for p in service["spec"]["ports"]
    ):
        problems.append(f"{where}: no Service port targets the HTTP port {port}")
    if not any(
        workload_port(api, p["port"]) == port
        for policy in of_kind(objects, "NetworkPolicy")
        if policy["spec"]["podSelector"]
        and selector_matches(policy["spec"]["podSelector"], pod_labels(api))
        for rule in policy["spec"].get("ingress", [])
        for p in rule.get("ports", [])
    ):
        problems.append(f"{where}: no NetworkPolicy admits callers to the HTTP port {port}")
    return problems


def _peers_select(objects: list[K8sObject], peers: list[dict[str, Any]]) -> Iterator[str]:
    """Names of the Deployments (same namespace) that podSelector-only peers select."""
    for peer in peers:
        if "podSelector" in peer and "namespaceSelector" not in peer:
            for dep in selected_workloads(objects, peer["podSelector"]):
                yield dep["metadata"]["name"]


def check_network_policies(objects: list[K8sObject]) -> list[str]:
    """Default deny is in place; only the API may reach Triton; policy ports exist."""
    problems = []
    policies = of_kind(objects, "NetworkPolicy")
    if not any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append("no default-deny NetworkPolicy (podSelector {}, Ingress+Egress, no rules)")
    for policy in policies:
        selector = policy["spec"]["podSelector"]
        if selector == {}:
            continue
        targets = selected_workloads(objects, selector)
        if not targets:
            problems.append(f"{describe(policy)}: podSelector {selector} matches no pod template")
            continue
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if any(workload_port(t, port["port"]) is None for t in targets):
                    problems.append(
                        f"{describe(policy)}: ingress port {port['port']!r} "
                        "is not a port of the selected pods"
                    )
            from_pods = list(_peers_select(objects, rule.get("from", [])))
            pod_peers = [
                p
                for p in rule.get("from", [])
                if "podSelector" in p and "namespaceSelector" not in p
            ]
            if pod_peers and not from_pods:
                problems.append(
                    f"{describe(policy)}: an ingress podSelector matches no pod template"
                )
            if TRITON_DEPLOYMENT in (t["metadata"]["name"] for t in targets):
                grpc = workload_port(targets[0], "grpc")
                allowed = [workload_port(targets[0], p["port"]) for p in rule.get("ports", [])]
                only_api = set(from_pods) == {API_DEPLOYMENT} and len(pod_peers) == len(
                    rule.get("from", [])
                )
                if (not allowed or grpc in allowed) and not only_api:
                    problems.append(
                        f"{describe(policy)}: Triton's gRPC port must be open to {API_DEPLOYMENT} "
                        f"pods only, this rule allows {rule.get('from', 'everyone')}"
                    )
        for rule in policy["spec"].get("egress", []):
            for name in _peers_select(objects, rule.get("to", [])):
                dest = named(objects, "Deployment", name)
                assert dest is not None
                for port in rule.get("ports", []):
                    if workload_port(dest, port["port"]) is None:
                        problems.append(
                            f"{describe(policy)}: egress port {port['port']!r} "
                            f"is not a port of Deployment/{name}"
                        )
    api = named(objects, "Deployment", API_DEPLOYMENT)
    if api is not None and not any(
        selector_matches(p["spec"]["podSelector"], pod_labels(api))
        and p["spec"]["podSelector"]
        and "Ingress" in p["spec"].get("policyTypes", [])
        for p in policies
    ):
        problems.append(f"no NetworkPolicy admits callers to Deployment/{API_DEPLOYMENT}")
    return problems


def check_service_monitors(objects: list[K8sObject]) -> list[str]:
    """Each ServiceMonitor selects a Service that has the endpoint port it scrapes."""
    problems = []
    for monitor in of_kind(objects, "ServiceMonitor"):
        services = [
            s
            for s in of_kind(objects, "Service")
            if selector_matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
        ]
        if not services:
            problems.append(f"{describe(monitor)}: selector matches no Service's labels")
        for endpoint in monitor["spec"]["endpoints"]:
            for service in services:
                if endpoint.get("port") not in {p.get("name") for p in service["spec"]["ports"]}:
                    problems.append(
                        f"{describe(monitor)}: {describe(service)} "
                        f"has no port named {endpoint.get('port')!r}"
                    )
    return problems


def check_references(objects: list[K8sObject]) -> list[str]:
    """ConfigMaps, Secrets and ServiceAccounts pods use are rendered (or operator-made)."""
    problems = []
    for dep in of_kind(objects, "Deployment"):
        spec = pod_spec(dep)
        wanted = [("ServiceAccount", spec.get("serviceAccountName", "default"))]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                wanted.append(("Secret", volume["secret"]["secretName"]))
            if "configMap" in volume:
                wanted.append(("ConfigMap", volume["configMap"]["name"]))
        for container in containers(dep, init=True):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    wanted.append(("ConfigMap", source["configMapRef"]["name"]))
                if "secretRef" in source:
                    wanted.append(("Secret", source["secretRef"]["name"]))
        for kind, name in wanted:
            if named(objects, kind, name) is None and not (
                kind == "Secret" and name in EXTERNAL_SECRETS
            ):
                problems.append(f"{describe(dep)}: uses {kind}/{name}, which is not rendered")
    return problems


def check_api_stores(objects: list[K8sObject]) -> list[str]:
    """The API keeps no job state on the pod: it reads the PostgreSQL DSN and the S3 settings
    from files of a mounted Secret, stores videos in s3://, and its NetworkPolicy lets it
    reach PostgreSQL and the object storage."""
    api = named(objects, "Deployment", API_DEPLOYMENT)
    if api is None:
        return [f"Deployment/{API_DEPLOYMENT} is not rendered"]
    container = containers(api)[0]
    env = container_env(objects, container)
    problems = []
    if not env.get("CINETRON_VIDEO_URL", "").startswith("s3://"):
        problems.append(f"{describe(api)}: CINETRON_VIDEO_URL must be s3://BUCKET/PREFIX")
    if "CINETRON_DATABASE_URL" in env or any(k.startswith("AWS_SECRET") for k in env):
        problems.append(f"{describe(api)}: store secrets must come from files, not env values")
    volumes = {v["name"]: v for v in pod_spec(api).get("volumes", [])}
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container.get("volumeMounts", [])}
    for variable, key in STORE_FILES.items():
        path = env.get(variable, "")
        folder, _, name = path.rpartition("/")
        volume = volumes.get(mounts.get(folder, ""), {})
        items = {i["path"]: i["key"] for i in volume.get("secret", {}).get("items", [])}
        if "secret" not in volume or items.get(name) != key:
            problems.append(
                f"{describe(api)}: {variable}={path!r} is not key {key!r} of a mounted Secret"
            )
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume or volume["name"] == "data":
            problems.append(f"{describe(api)}: volume {volume['name']!r} keeps state on the pod")
    egress_ports = {
        int(port["port"])
        for p in of_kind(objects, "NetworkPolicy")
        if p["spec"]["podSelector"] and selector_matches(p["spec"]["podSelector"], pod_labels(api))
        for rule in p["spec"].get("egress", [])
        for port in rule.get("ports", [])
        if isinstance(port["port"], int)
    }
    if POSTGRES_PORT not in egress_ports:
        problems.append(f"{describe(api)}: no NetworkPolicy egress to PostgreSQL ({POSTGRES_PORT})")
    if not egress_ports & S3_PORTS:
        problems.append(f"{describe(api)}: no NetworkPolicy egress to object storage (443/9000)")
    return problems


def check_images(objects: list[K8sObject]) -> list[str]:
    """The overlay replaced every placeholder image with a registry path and a pinned tag."""
    problems = []
    for dep in of_kind(objects, "Deployment"):
        for container in containers(dep, init=True):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if "/" not in image or not (tag or "@sha256:" in image) or tag == "latest":
                problems.append(
                    f"{describe(dep)} container {container['name']}: image {image!r} is not "
                    "REPOSITORY/NAME:TAG; set it with `images:` in the overlay"
                )
    return problems


def check_gpu_scheduling(objects: list[K8sObject], overlay: str) -> list[str]:
    """GPU overlays give Triton a GPU and a GPU node; others request no GPU at all."""
    triton = named(objects, "Deployment", TRITON_DEPLOYMENT)
    if triton is None:
        return [f"Deployment/{TRITON_DEPLOYMENT} is not rendered"]
    limits = containers(triton)[0].get("resources", {}).get("limits", {})
    spec = pod_spec(triton)
    if overlay not in GPU_OVERLAYS:
        gpu_users = [
            describe(d)
            for d in of_kind(objects, "Deployment")
            for c in containers(d, init=True)
            if GPU_RESOURCE in c.get("resources", {}).get("limits", {})
        ]
        return [
            f"{name}: requests {GPU_RESOURCE} in the non-GPU overlay {overlay}"
            for name in gpu_users
        ]
    problems = []
    if str(limits.get(GPU_RESOURCE, "0")) in ("0", ""):
        problems.append(f"{describe(triton)}: overlay {overlay} must limit {GPU_RESOURCE} >= 1")
    if not any(t.get("key") == GPU_RESOURCE for t in spec.get("tolerations", [])):
        problems.append(
            f"{describe(triton)}: overlay {overlay} must tolerate the {GPU_RESOURCE} taint"
        )
    if not spec.get("nodeSelector"):
        problems.append(
            f"{describe(triton)}: overlay {overlay} must select GPU nodes (nodeSelector)"
        )
    return problems


RULES: tuple[Callable[[list[K8sObject]], list[str]], ...] = (
    check_namespaces,
    check_workload_selectors,
    check_services,
    check_probes,
    check_autoscalers,
    check_disruption_budgets,
    check_api_triton_url,
    check_api_http_address,
    check_network_policies,
    check_service_monitors,
    check_references,
    check_api_stores,
    check_images,
)


def check_all(objects: list[K8sObject], overlay: str) -> list[str]:
    """Every rule's problems for one rendered overlay."""
    problems = [problem for rule in RULES for problem in rule(objects)]
    return problems + check_gpu_scheduling(objects, overlay)
