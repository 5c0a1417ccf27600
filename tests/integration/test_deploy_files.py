"""The deployment files, validated offline: deploy/k8s as kustomize builds it, checked against
Kubernetes' own schemas (kubernetes-validate, strict: unknown fields fail), the KEDA overlay,
docker-compose.gpu.yml (docker-compose v1's `config`, which needs no Docker engine), the
prometheus-adapter rules and the Grafana dashboard. Every validator is also shown a broken copy
and must reject it, so these tests can fail. Needs kubectl (kustomize v4+) and docker-compose
(scripts/install_system_deps.sh); no Triton, cluster or Docker engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KEDA = ROOT / "deploy" / "keda"
ADAPTER_RULES = ROOT / "deploy" / "prometheus" / "adapter-rules.yaml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "scrape-config.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "speech-moderation.json"
COMPOSE = ROOT / "docker-compose.gpu.yml"

K8S_VERSION = "1.33.0"
"""Kubernetes version the manifests are validated for (its schemas ship in the kubernetes-validate wheel)."""
K8S_NOT_RESOURCES = {"kustomization.yaml", "model-repository.Dockerfile"}
"""Files of deploy/k8s that are not manifests of the kustomization."""
KEDA_KINDS = {"ScaledObject"}
"""Custom resources: kubernetes-validate has no schema for them, so they are checked by hand."""
TRITON_METRICS = {
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count", "nv_gpu_utilization", "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes", "nv_gpu_power_usage",
}
"""Metric names Triton 2.51 exports that the dashboard and the adapter may use."""
PROMETHEUS_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


# --- tools ------------------------------------------------------------------------------------

def _major(version_text: str) -> int | None:
    match = re.search(r"v(\d+)\.", version_text)
    return int(match.group(1)) if match else None


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    """The command that builds a kustomization: kustomize v4+, standalone or inside kubectl."""
    if shutil.which("kustomize"):
        out = subprocess.run(["kustomize", "version"], capture_output=True, text=True, timeout=60)
        if (_major(out.stdout) or 0) >= 4:
            return ["kustomize", "build"]
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=60)
        version = json.loads(out.stdout or "{}").get("kustomizeVersion", "") if out.returncode == 0 else ""
        if (_major(version) or 0) >= 4:
            return ["kubectl", "kustomize"]
    pytest.fail("no kustomize v4+ found: install kubectl >= 1.21 (Debian bookworm's 1.20 is too old) or kustomize")


@pytest.fixture(scope="session")
def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose not found: run `bash scripts/install_system_deps.sh` "
                    "(apt-get install --no-install-recommends docker-compose)")
    return path


def build(kustomize: list[str], directory: Path) -> list[dict]:
    out = subprocess.run([*kustomize, str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kustomize build {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def schema_problems(docs: list[dict]) -> list[str]:
    """Strict schema errors of ``docs`` (custom resources excepted); an unknown kind is an error too."""
    problems = []
    for doc in docs:
        if doc["kind"] in KEDA_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(exc.message)
    return problems


def by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def kustomization(directory: Path) -> dict:
    return load_yaml(directory / "kustomization.yaml")


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in re.sub(r'"[^"]*"', "", expr):
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())


def edge_metric_names() -> set[str]:
    """Metric names the edge code registers (its counters gain _total, its histogram _bucket...)."""
    names = set()
    for source in (ROOT / "edge").rglob("*.py"):
        names.update(re.findall(r'"(edge_[a-z_]+)"', source.read_text()))
    return names


def unknown_metrics(expr: str, edge_names: set[str]) -> list[str]:
    unknown = []
    for name in re.findall(r"\b((?:edge|nv)_[a-z_]+)\b", expr):
        if name.startswith("nv_"):
            known = name in TRITON_METRICS
        else:
            known = name in edge_names or any(name == base + suffix for base in edge_names
                                              for suffix in PROMETHEUS_SUFFIXES)
        if not known:
            unknown.append(name)
    return unknown


# --- Kubernetes -------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest():
    listed = kustomization(K8S)["resources"]
    present = {p.name for p in K8S.iterdir() if p.is_file()}
    assert sorted(present - K8S_NOT_RESOURCES) == sorted(listed), "a manifest is missing from kustomization.yaml"
    assert kustomization(KEDA)["resources"][0] == "../k8s"


def test_k8s_manifests_pass_strict_schemas(kustomize, tmp_path):
    docs = build(kustomize, K8S)
    assert schema_problems(docs) == []
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted(["Deployment", "Deployment", "Service", "Service", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "PodDisruptionBudget", "NetworkPolicy", "Secret"])
    namespace = kustomization(K8S)["namespace"]
    assert all(doc["metadata"]["namespace"] == namespace for doc in docs)
    # The command docs/SCALING.md gives operators, on the same build: no error, and no WARN (a
    # kind it has no schema for would pass with only a warning).
    built = tmp_path / "built.yaml"
    built.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION, str(built)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARN" not in out.stdout and "ERROR" not in out.stdout, out.stdout


def _set(path: str, value: object) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    return mutate


@pytest.mark.parametrize("filename, mutate, expected", [
    ("triton-deployment.yaml", _set("spec.replicaz", 2), "replicaz"),              # unknown field
    ("edge-deployment.yaml", _set("spec.template.spec.terminationGracePeriodSeconds", "45s"), "45s"),  # wrong type
    ("triton-hpa.yaml", _set("spec.behavior.scaleUp.stabilizationWindow", 60), "stabilizationWindow"),  # typo
    ("triton-services.yaml", _set("spec.clusterIp", "None"), "clusterIp"),        # wrong case
])
def test_broken_manifest_fails_validation(kustomize, tmp_path, filename, mutate, expected):
    broken = tmp_path / "k8s"
    shutil.copytree(K8S, broken)
    docs = list(yaml.safe_load_all((broken / filename).read_text()))
    mutate(docs[0])
    (broken / filename).write_text(yaml.safe_dump_all(docs))
    problems = schema_problems(build(kustomize, broken))
    assert len(problems) == 1 and expected in problems[0], problems


def test_k8s_manifests_fit_together(kustomize):
    objects = by_kind(build(kustomize, K8S))
    triton = objects["Deployment", "triton"]
    edge = objects["Deployment", "edge"]
    triton_pod, edge_pod = triton["spec"]["template"], edge["spec"]["template"]
    triton_labels, edge_labels = triton_pod["metadata"]["labels"], edge_pod["metadata"]["labels"]

    def selects(selector: dict, labels: dict) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    # Triton: one GPU, its three named ports and probes, shared memory, the model repository.
    (container,) = triton_pod["spec"]["containers"]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["command"][:2] == ["tritonserver", "--model-repository=/models"]
    volumes = {v["name"]: v for v in triton_pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    (init,) = triton_pod["spec"]["initContainers"]
    assert {m["name"] for m in init["volumeMounts"]} == {mounts["/models"]}
    assert "replicas" not in triton["spec"], "the HPA owns Triton's replica count"
    exit_timeout = int(next(a for a in container["command"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    triton_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert triton_pod["spec"]["terminationGracePeriodSeconds"] >= triton_stop + exit_timeout

    # Services: the headless one lists every Triton pod for the edge's discovery.
    grpc = objects["Service", "triton-grpc"]["spec"]
    assert grpc["clusterIP"] == "None" and selects(grpc["selector"], triton_labels)
    assert [(p["port"], p["targetPort"]) for p in grpc["ports"]] == [(8001, "grpc")]
    assert selects(objects["Service", "triton-metrics"]["spec"]["selector"], triton_labels)
    assert selects(objects["Service", "edge"]["spec"]["selector"], edge_labels)
    assert triton_pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])

    # The edge: discovery through the headless Service, authentication, probes, drain arithmetic.
    (edge_container,) = edge_pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in edge_container["env"]}
    assert env["EDGE_TRITON_URL"] == f"triton-grpc:{grpc['ports'][0]['port']}"
    assert env["EDGE_AUTH"] == "required" and env["EDGE_OPS_AUTH"] == "false"
    keys_dir, keys_file = env["EDGE_API_KEYS_FILE"].rsplit("/", 1)
    keys_volume = next(m["name"] for m in edge_container["volumeMounts"] if m["mountPath"] == keys_dir)
    secret_ref = next(v["secret"] for v in edge_pod["spec"]["volumes"] if v["name"] == keys_volume)
    assert secret_ref["items"] == [{"key": keys_file, "path": keys_file}]
    assert keys_file in objects["Secret", secret_ref["secretName"]]["stringData"]
    assert edge_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert edge_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    edge_stop = int(edge_container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(env["EDGE_DRAIN_GRACE_S"])
    assert edge_pod["spec"]["terminationGracePeriodSeconds"] > edge_stop + drain, "no margin for the drain"

    # Images come through kustomize's `images:`, so they can be overridden.
    images = {c["image"] for pod in (triton_pod, edge_pod) for c in pod["spec"].get("initContainers", [])
              + pod["spec"]["containers"]}
    assert images == {"speech-moderation/triton:latest", "speech-moderation/edge:latest",
                      "speech-moderation/models:latest"}

    # Autoscaling and disruption budgets aim at the right pods.
    hpa = objects["HorizontalPodAutoscaler", "triton"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] > behavior["scaleUp"]["stabilizationWindowSeconds"]
    adapter_metrics = {rule["name"]["as"] for rule in load_yaml(ADAPTER_RULES)["rules"]}
    assert {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]} <= adapter_metrics
    assert selects(objects["PodDisruptionBudget", "triton"]["spec"]["selector"]["matchLabels"], triton_labels)
    assert selects(objects["PodDisruptionBudget", "edge"]["spec"]["selector"]["matchLabels"], edge_labels)

    # Only the edge reaches Triton's gRPC port.
    policy = objects["NetworkPolicy", "triton"]["spec"]
    assert selects(policy["podSelector"]["matchLabels"], triton_labels)
    grpc_rule = next(r for r in policy["ingress"] if {"protocol": "TCP", "port": 8001} in r["ports"])
    assert [selects(f["podSelector"]["matchLabels"], edge_labels) for f in grpc_rule["from"]] == [True]
    assert not any(p["port"] in (8000, 8001) for r in policy["ingress"] if r is not grpc_rule for p in r["ports"])


def scaled_object_problems(scaled: dict, hpa: dict, namespace: str) -> list[str]:
    """What is wrong with the KEDA ScaledObject, checked against the HPA it replaces."""
    problems = []
    spec = scaled.get("spec", {})
    if scaled.get("apiVersion") != "keda.sh/v1alpha1":
        problems.append(f"apiVersion {scaled.get('apiVersion')}")
    if spec.get("scaleTargetRef", {}).get("name") != hpa["spec"]["scaleTargetRef"]["name"]:
        problems.append("scaleTargetRef is not the HPA's target")
    if (spec.get("minReplicaCount"), spec.get("maxReplicaCount")) != (hpa["spec"]["minReplicas"],
                                                                       hpa["spec"]["maxReplicas"]):
        problems.append("replica bounds differ from the HPA's")
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior != hpa["spec"]["behavior"]:
        problems.append("behavior differs from the HPA's")
    triggers = spec.get("triggers") or []
    if not triggers:
        problems.append("no triggers")
    for trigger in triggers:
        meta = trigger.get("metadata", {})
        if trigger.get("type") != "prometheus" or trigger.get("metricType") not in ("Value", "AverageValue"):
            problems.append(f"trigger {trigger.get('name')}: type or metricType")
        if not all(isinstance(meta.get(k), str) and meta[k] for k in ("serverAddress", "query", "threshold")):
            problems.append(f"trigger {trigger.get('name')}: serverAddress, query and threshold must be strings")
            continue
        float(meta["threshold"])
        query = meta["query"]
        if ("nv_inference_queue_duration_us" not in query or 'model="whisper"' not in query
                or f'namespace="{namespace}"' not in query or "clamp_min" not in query or not balanced(query)):
            problems.append(f"trigger {trigger.get('name')}: query {query!r}")
    return problems


def test_keda_overlay(kustomize):
    base = by_kind(build(kustomize, K8S))
    docs = build(kustomize, KEDA)
    assert schema_problems(docs) == []
    objects = by_kind(docs)
    hpa = base["HorizontalPodAutoscaler", "triton"]
    assert set(objects) == set(base) - {("HorizontalPodAutoscaler", "triton")} | {("ScaledObject", "triton")}
    scaled = objects["ScaledObject", "triton"]
    assert scaled_object_problems(scaled, hpa, kustomization(K8S)["namespace"]) == []
    # Its behavior must be a valid HPA behavior: validate it inside the HPA it stands for.
    assert schema_problems([{**hpa, "spec": {**hpa["spec"],
                                             "behavior": scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
                                             ["behavior"]}}]) == []
    # A broken copy is caught.
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 200000
    broken["spec"]["scaleTargetRef"]["name"] = "edge"
    assert len(scaled_object_problems(broken, hpa, kustomization(K8S)["namespace"])) == 2


# --- Prometheus and Grafana -------------------------------------------------------------------

def adapter_problems(config: dict) -> list[str]:
    problems = []
    for rule in config.get("rules") or [None]:
        if not isinstance(rule, dict):
            problems.append("no rules")
            continue
        name = rule.get("name", {}).get("as", "?")
        query = rule.get("metricsQuery", "")
        if rule.get("resources", {}).get("overrides", {}) != {"namespace": {"resource": "namespace"},
                                                               "pod": {"resource": "pod"}}:
            problems.append(f"{name}: not mapped to namespace and pod")
        if not re.search(rule.get("name", {}).get("matches", "^$"), rule.get("seriesQuery", "").split("{")[0]):
            problems.append(f"{name}: name.matches does not match the seriesQuery")
        for needed in ("nv_inference_queue_duration_us", 'model="whisper"', "<<.LabelMatchers>>", "<<.GroupBy>>",
                       "clamp_min("):
            if needed not in query:
                problems.append(f"{name}: metricsQuery lacks {needed}")
        if not balanced(query):
            problems.append(f"{name}: unbalanced brackets")
        problems += [f"{name}: unknown metric {m}" for m in unknown_metrics(query, set())]
    return problems


def test_adapter_rules():
    config = load_yaml(ADAPTER_RULES)
    assert adapter_problems(config) == []
    broken = json.loads(json.dumps(config))
    broken["rules"][0]["metricsQuery"] = broken["rules"][0]["metricsQuery"].replace(
        "nv_inference_request_success", "nv_inference_request_succes").replace("clamp_min(", "(")
    assert len(adapter_problems(broken)) == 2


def test_scrape_config_labels_what_the_adapter_maps():
    (job,) = load_yaml(SCRAPE_CONFIG)["scrape_configs"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [kustomization(K8S)["namespace"]]
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"namespace", "pod", "__address__", "__metrics_path__"} <= targets


def dashboard_problems(dashboard: dict, edge_names: set[str]) -> list[str]:
    problems = []
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"]["query"] != "prometheus":
        problems.append("no Prometheus datasource variable")
    ids = [p.get("id") for p in dashboard["panels"]]
    if len(set(ids)) != len(ids):
        problems.append("duplicate panel ids")
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            continue
        title = panel.get("title", "?")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{title}: not on the datasource variable")
        targets = panel.get("targets") or []
        if not targets or not all(t.get("expr", "").strip() for t in targets):
            problems.append(f"{title}: a panel without a query")
        for target in targets:
            expr = target.get("expr", "")
            if not balanced(expr):
                problems.append(f"{title}: unbalanced brackets in {expr!r}")
            problems += [f"{title}: unknown metric {m}" for m in unknown_metrics(expr, edge_names)]
    return problems


def test_grafana_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    edge_names = edge_metric_names()
    assert dashboard_problems(dashboard, edge_names) == []
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in ("edge_active_sessions", "edge_segments_total", "edge_segment_latency_seconds_bucket",
                   "edge_triton_errors_total", "edge_triton_replica_in_flight", "edge_triton_replica_ready",
                   "edge_triton_retries_total", "edge_draining", "nv_inference_queue_duration_us",
                   "nv_inference_compute_infer_duration_us", "nv_inference_pending_request_count",
                   "nv_gpu_utilization"):
        assert metric in exprs, f"no panel shows {metric}"
    broken = json.loads(DASHBOARD.read_text())
    panel = next(p for p in broken["panels"] if p["type"] != "row")
    panel["targets"][0]["expr"] = "sum(rate(edge_segment_total[1m])"
    assert len(dashboard_problems(broken, edge_names)) == 2   # the misspelt metric, the missing ')'
    del panel["targets"]
    assert dashboard_problems(broken, edge_names) == [f"{panel['title']}: a panel without a query"]


# --- docker compose ---------------------------------------------------------------------------

def compose_config(docker_compose: str, directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` of directory's compose file, with no COMPOSE_/DOCKER_ settings or
    .env of the caller's leaking in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "TRITON_"))}
    return subprocess.run([docker_compose, "-f", "docker-compose.gpu.yml", "config"], cwd=directory,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.fixture
def compose_dir(tmp_path) -> Path:
    """A copy of the compose file beside a placeholder of its (git-ignored) secrets file."""
    shutil.copy(COMPOSE, tmp_path / "docker-compose.gpu.yml")
    (tmp_path / "edge_api_keys.txt").write_text("# placeholder\n")
    return tmp_path


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"stop_grace_period {duration!r}: write it in seconds"
    return float(match.group(1))


def test_compose_file_is_valid(docker_compose, compose_dir):
    out = compose_config(docker_compose, compose_dir)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    triton, edge = services["triton"], services["edge"]
    assert triton["deploy"]["replicas"] == 1
    assert "ports" not in triton, "Triton has no authentication: publish no port"
    assert edge["environment"]["EDGE_TRITON_URL"] == "triton:8001", "the service name lists every replica"
    assert edge["environment"]["EDGE_AUTH"] == "required"
    assert _seconds(edge["stop_grace_period"]) > float(edge["environment"]["EDGE_DRAIN_GRACE_S"])
    exit_timeout = next(a for a in triton["command"] if a.startswith("--exit-timeout-secs=")).split("=")[1]
    assert _seconds(triton["stop_grace_period"]) > float(exit_timeout)
    scaled = compose_config(docker_compose, compose_dir, TRITON_REPLICAS="3")
    assert scaled.returncode == 0 and yaml.safe_load(scaled.stdout)["services"]["triton"]["deploy"]["replicas"] == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.replace('shm_size: "1g"', "shm_size: [1g]"), "shm_size"),                         # wrong type
    (lambda s: s.replace("    stop_grace_period: 40s", "    stop_grace_periods: 40s", 1), "stop_grace_periods"),
    (lambda s: s.replace("${TRITON_REPLICAS:-1}", "many"), "replicas"),                             # not a number
])
def test_broken_compose_file_fails(docker_compose, compose_dir, mutate, message):
    path = compose_dir / "docker-compose.gpu.yml"
    text = path.read_text()
    assert mutate(text) != text, "the mutation no longer applies to docker-compose.gpu.yml"
    path.write_text(mutate(text))
    out = compose_config(docker_compose, compose_dir)
    assert out.returncode != 0 and message in out.stderr, out.stderr
