"""The deployment files, validated offline: deploy/k8s as kustomize builds it, checked against
Kubernetes' own schemas (kubernetes-validate, strict: unknown fields fail), the KEDA overlay,
docker-compose.gpu.yml (docker-compose v1's `config`, which needs no Docker engine), the
prometheus-adapter rules and the Grafana dashboard; the batch-job workers, their Redis and shared
upload volume in both, with their stop grace periods checked against the timeouts they must cover.
Every validator is also shown a broken copy and must reject it, so these tests can fail. Needs
kubectl (kustomize v4+) and docker-compose (scripts/install_system_deps.sh); no Triton, cluster or
Docker engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from edge.settings import EdgeSettings
from jobs.pipeline import RETRY_BACKOFF_MAX_S
from jobs.settings import JobSettings
from moderation.triton import longest_call_s
from scripts.service.embedded import REDIS_STOP_GRACE_S, WORKER_STOP_GRACE_S

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
WORKER_COMMAND = ["python", "-m", "jobs.worker"]
SHARED_SETTINGS = ("EDGE_TRITON_", "EDGE_VAD_", "EDGE_MIN_SILENCE_MS", "EDGE_MIN_SPEECH_MS", "EDGE_MAX_SEGMENT_S",
                   "EDGE_PRE_ROLL_MS", "EDGE_POST_ROLL_MS", "EDGE_HARMFUL_THRESHOLD", "EDGE_SPAN_WORD_TIMES",
                   "REDIS_URL", "JOBS_DATA_DIR")
"""Settings (names or prefixes) the edge and the job workers must agree on: Triton, the VAD and
verdict settings a recording's segments and verdicts come from (docs/JOBS.md), Redis, the uploads."""
WORKER_STOP_MARGIN_S = 10.0
"""What a worker's stop grace period must leave beyond ``worker_handover_s``: its Redis writes, the
hand-back of its jobs to the queue, the lease release and the process exit."""


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


def worker_handover_s(env: Mapping[str, str]) -> float:
    """The longest a SIGTERMed job worker with environment ``env`` may take before it can hand its
    jobs back (jobs/pipeline.py, jobs/handler.py): its slowest segment in flight (a retry backoff,
    then its longest Triton call: EDGE_TRITON_TIMEOUT_S + the gRPC margin), plus the callback of a
    job that was finishing, plus that job's LLM summary when one is configured."""
    def setting(model: type, field: str, variable: str) -> float:
        return float(env.get(variable, model.model_fields[field].default))

    triton_timeout_s = setting(EdgeSettings, "triton_timeout_s", "EDGE_TRITON_TIMEOUT_S")
    needed = RETRY_BACKOFF_MAX_S + longest_call_s(triton_timeout_s)
    needed += setting(JobSettings, "callback_timeout_s", "JOBS_CALLBACK_TIMEOUT_S")
    if env.get("SUMMARY_LLM_URL") or env.get("JOBS_SUMMARY_LLM_URL"):
        needed += setting(JobSettings, "summary_llm_timeout_s", "JOBS_SUMMARY_LLM_TIMEOUT_S")
    return needed


def test_launcher_worker_grace_covers_the_handover():
    # `make run`'s worker (scripts/service/embedded.py) with the default settings.
    assert WORKER_STOP_GRACE_S >= worker_handover_s({}) + WORKER_STOP_MARGIN_S


# --- Kubernetes -------------------------------------------------------------------------------

def container_env(container: dict, objects: dict[tuple[str, str], dict]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: its ConfigMaps and Secrets (envFrom),
    then its own ``env``, which wins."""
    env = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env.update(objects.get(("Secret", source["secretRef"]["name"]), {}).get("stringData", {}))
        else:
            env.update(objects["ConfigMap", source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def pod_template(objects: dict[tuple[str, str], dict], kind: str, name: str) -> dict:
    """The pod template of a Deployment or StatefulSet ({} when there is none)."""
    return objects.get((kind, name), {}).get("spec", {}).get("template", {})


def volume_at(pod: dict, container: dict, path: str) -> dict:
    """The pod volume ``container`` mounts at ``path`` ({} when none)."""
    name = next((m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == path), None)
    return next((v for v in pod["spec"].get("volumes", []) if v["name"] == name), {})


def test_kustomization_lists_every_manifest():
    listed = kustomization(K8S)["resources"]
    present = {p.name for p in K8S.iterdir() if p.is_file()}
    assert sorted(present - K8S_NOT_RESOURCES) == sorted(listed), "a manifest is missing from kustomization.yaml"
    assert kustomization(KEDA)["resources"][0] == "../k8s"


def test_k8s_manifests_pass_strict_schemas(kustomize, tmp_path):
    docs = build(kustomize, K8S)
    assert schema_problems(docs) == []
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted(["Deployment", "Deployment", "Deployment", "StatefulSet", "Service", "Service", "Service",
                            "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PodDisruptionBudget",
                            "PodDisruptionBudget", "NetworkPolicy", "NetworkPolicy", "Secret", "Secret", "ConfigMap",
                            "PersistentVolumeClaim"])
    # Incidents: the edge takes DATABASE_URL from its Secret and writes clips to the shared volume.
    objects = by_kind(docs)
    edge = pod_template(objects, "Deployment", "edge")["spec"]["containers"][0]
    assert "DATABASE_URL" in objects["Secret", "incidents-database"]["stringData"]
    clips = objects["ConfigMap", "moderation-settings"]["data"]["EDGE_CLIPS_DIR"]
    worker = pod_template(objects, "Deployment", "jobs-worker")["spec"]["containers"][0]
    for part in (edge, worker):  # both write incidents and their clips
        assert {"secretRef": {"name": "incidents-database", "optional": True}} in part["envFrom"]
        assert any(m["mountPath"] == clips and m["name"] == "jobs-data" and m.get("subPath") == "clips"
                   for m in part["volumeMounts"])
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
    ("jobs-worker-deployment.yaml", _set("spec.template.spec.containers.0.comand", WORKER_COMMAND), "comand"),
    ("redis-statefulset.yaml", _set("spec.volumeClaimTemplates.0.spec.accessMode", ["ReadWriteOnce"]),
     "accessMode"),
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
    worker_labels = pod_template(objects, "Deployment", "jobs-worker")["metadata"]["labels"]

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
    env = container_env(edge_container, objects)
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

    # Images come through kustomize's `images:`, so they can be overridden; the workers run the edge's.
    pods = [doc["spec"]["template"] for (kind, _), doc in objects.items() if kind in ("Deployment", "StatefulSet")]
    images = {c["image"] for pod in pods for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]}
    assert images == {"speech-moderation/triton:latest", "speech-moderation/edge:latest",
                      "speech-moderation/models:latest", "redis:7.4-alpine"}
    assert {image.split(":")[0] for image in images} == {i["name"] for i in kustomization(K8S)["images"]}

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

    # Only the edge and the job workers reach Triton's gRPC port.
    policy = objects["NetworkPolicy", "triton"]["spec"]
    assert selects(policy["podSelector"]["matchLabels"], triton_labels)
    grpc_rule = next(r for r in policy["ingress"] if {"protocol": "TCP", "port": 8001} in r["ports"])
    assert [[selects(f["podSelector"]["matchLabels"], labels) for labels in (edge_labels, worker_labels)]
            for f in grpc_rule["from"]] == [[True, False], [False, True]]
    assert not any(p["port"] in (8000, 8001) for r in policy["ingress"] if r is not grpc_rule for p in r["ports"])


def batch_job_problems(objects: dict[tuple[str, str], dict]) -> list[str]:
    """What keeps the batch-job objects from working together: the workers, the edge's job API,
    Redis, the shared upload volume, the network policy and the workers' stop grace period."""
    problems = []
    edge, worker = pod_template(objects, "Deployment", "edge"), pod_template(objects, "Deployment", "jobs-worker")
    (edge_container,), (worker_container,) = edge["spec"]["containers"], worker["spec"]["containers"]
    edge_env, worker_env = container_env(edge_container, objects), container_env(worker_container, objects)
    edge_labels, worker_labels = edge["metadata"]["labels"], worker["metadata"]["labels"]
    if worker_container.get("command") != WORKER_COMMAND:
        problems.append(f"worker command {worker_container.get('command')}")
    if worker_container["image"] != edge_container["image"]:
        problems.append("the workers do not run the edge's image")
    if edge_env.get("EDGE_JOBS") != "true":
        problems.append("the edge does not serve /v1/jobs (EDGE_JOBS)")
    problems += [f"the workers lack {name}" for name in ("REDIS_URL", "JOBS_DATA_DIR", "EDGE_TRITON_URL")
                 if name not in worker_env]
    # Everything both read must agree (set in one only, the other has the default).
    for name in sorted(n for n in {*edge_env, *worker_env} if n.startswith(SHARED_SETTINGS)):
        if worker_env.get(name) != edge_env.get(name):
            problems.append(f"{name} differs between the edge and the workers")
    if worker_container.get("securityContext") != edge_container.get("securityContext"):
        problems.append("the workers' securityContext is not the edge's")

    # Redis: REDIS_URL names the Service, which selects the StatefulSet's pod and its port.
    url = re.fullmatch(r"rediss?://(?:[^@/]*@)?([a-z0-9.-]+):(\d+)/\d+", worker_env.get("REDIS_URL", ""))
    host, port = (url.group(1), int(url.group(2))) if url else (None, None)
    redis = objects.get(("StatefulSet", "redis"), {}).get("spec", {})
    redis_pod = pod_template(objects, "StatefulSet", "redis")
    redis_labels = redis_pod.get("metadata", {}).get("labels", {})
    service = objects.get(("Service", host), {}).get("spec", {})
    if not selects(service.get("selector", {}), redis_labels):
        problems.append(f"REDIS_URL {worker_env.get('REDIS_URL')!r} does not reach the redis StatefulSet")
    else:
        (redis_container,) = redis_pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in redis_container["ports"]}
        if [(p["port"], ports.get(p["targetPort"])) for p in service["ports"]] != [(port, port)]:
            problems.append("the redis Service does not lead to Redis's port")
        args = " ".join(redis_container.get("args", redis_container.get("command", [])))
        if "--appendonly yes" not in args or "--maxmemory-policy noeviction" not in args:
            problems.append("Redis without its append-only file, or with eviction")
        data_dir = re.search(r"--dir (\S+)", args)
        mounts = {m["mountPath"]: m["name"] for m in redis_container.get("volumeMounts", [])}
        templates = {t["metadata"]["name"] for t in redis.get("volumeClaimTemplates", [])}
        if not data_dir or mounts.get(data_dir.group(1)) not in templates:
            problems.append("Redis's --dir is not on its PersistentVolumeClaim")
        if redis.get("serviceName") != host:
            problems.append("the StatefulSet's serviceName is not the redis Service")

    # One ReadWriteMany claim at JOBS_DATA_DIR in the edge and every worker.
    claims = {volume_at(pod, container, env.get("JOBS_DATA_DIR", "")).get("persistentVolumeClaim", {}).get("claimName")
              for pod, container, env in ((edge, edge_container, edge_env), (worker, worker_container, worker_env))}
    modes = objects.get(("PersistentVolumeClaim", min(claims, key=str)), {}).get("spec", {}).get("accessModes", [])
    if len(claims) != 1 or "ReadWriteMany" not in modes:
        problems.append(f"JOBS_DATA_DIR is not one ReadWriteMany claim in the edge and the workers: {claims}")
    # The edge's root is read-only: uploads over 1 MB spool to a writable /tmp while they arrive.
    read_only = edge_container.get("securityContext", {}).get("readOnlyRootFilesystem")
    if read_only and "emptyDir" not in volume_at(edge, edge_container, "/tmp"):
        problems.append("the edge has no writable /tmp for uploads")

    # The edge and the workers, and nothing else, reach Redis; node drains take one worker at a time.
    policy = objects.get(("NetworkPolicy", "redis"), {}).get("spec", {})
    allowed = [f.get("podSelector", {}).get("matchLabels", {}) for r in policy.get("ingress", [])
               for f in r.get("from", [])]
    if (not selects(policy.get("podSelector", {}).get("matchLabels", {}), redis_labels)
            or len(allowed) != 2 or not any(selects(a, edge_labels) for a in allowed)
            or not any(selects(a, worker_labels) for a in allowed)):
        problems.append("the redis NetworkPolicy does not admit exactly the edge and the workers")
    pdb = objects.get(("PodDisruptionBudget", "jobs-worker"), {}).get("spec", {})
    if not selects(pdb.get("selector", {}).get("matchLabels", {}), worker_labels):
        problems.append("no PodDisruptionBudget for the workers")

    # A stopped worker finishes its segments in flight and hands its jobs back before the kill.
    grace = worker["spec"].get("terminationGracePeriodSeconds", 30)
    if grace < worker_handover_s(worker_env) + WORKER_STOP_MARGIN_S:
        problems.append(f"worker terminationGracePeriodSeconds {grace} < "
                        f"{worker_handover_s(worker_env) + WORKER_STOP_MARGIN_S}")
    return problems


def test_k8s_batch_jobs_fit_together(kustomize):
    objects = by_kind(build(kustomize, K8S))
    assert batch_job_problems(objects) == []
    redis = objects["StatefulSet", "redis"]["spec"]
    assert redis["replicas"] == 1 and redis["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The arithmetic in jobs-worker-deployment.yaml: 25 s for the slowest segment in flight (a 5 s
    # retry backoff + EDGE_TRITON_TIMEOUT_S 15 s + 5 s) + 10 s for a finishing job's callback +
    # 10 s margin, with the timeouts the workers get.
    worker = pod_template(objects, "Deployment", "jobs-worker")
    worker_env = container_env(worker["spec"]["containers"][0], objects)
    assert worker_handover_s(worker_env) == RETRY_BACKOFF_MAX_S + longest_call_s(15) + 10
    assert worker["spec"]["terminationGracePeriodSeconds"] == worker_handover_s(worker_env) + WORKER_STOP_MARGIN_S
    assert pod_template(objects, "StatefulSet", "redis")["spec"]["terminationGracePeriodSeconds"] >= REDIS_STOP_GRACE_S


def _worker(objects: dict) -> dict:
    return pod_template(objects, "Deployment", "jobs-worker")


def _edge(objects: dict) -> dict:
    return pod_template(objects, "Deployment", "edge")


@pytest.mark.parametrize("mutate, expected", [
    (lambda o: _worker(o)["spec"]["containers"][0].update(command=["python", "-m", "edge"]), "worker command"),
    (lambda o: o["PersistentVolumeClaim", "jobs-data"]["spec"].update(accessModes=["ReadWriteOnce"]),
     "ReadWriteMany"),
    (lambda o: o["ConfigMap", "moderation-settings"]["data"].update(EDGE_TRITON_TIMEOUT_S="60"),
     "terminationGracePeriodSeconds"),                        # a longer Triton call outlasts the grace
    (lambda o: _worker(o)["spec"]["containers"][0]["env"].append({"name": "EDGE_HARMFUL_THRESHOLD",
                                                                 "value": "0.9"}), "EDGE_HARMFUL_THRESHOLD differs"),
    (lambda o: o["ConfigMap", "moderation-settings"]["data"].update(REDIS_URL="redis://redis-master:6379/0"),
     "does not reach"),
    (lambda o: _edge(o)["spec"]["containers"][0]["env"].pop(0), "EDGE_JOBS"),
    (lambda o: o["NetworkPolicy", "redis"]["spec"]["ingress"][0]["from"].pop(), "NetworkPolicy"),
    (lambda o: _edge(o)["spec"]["containers"][0]["volumeMounts"].pop(), "/tmp"),
    (lambda o: _worker(o)["spec"].update(terminationGracePeriodSeconds=30), "terminationGracePeriodSeconds"),
    (lambda o: _worker(o)["spec"]["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
     "securityContext"),
    (lambda o: o.pop(("PodDisruptionBudget", "jobs-worker")), "PodDisruptionBudget"),
])
def test_broken_batch_jobs_are_caught(kustomize, mutate, expected):
    objects = by_kind(json.loads(json.dumps(build(kustomize, K8S))))
    mutate(objects)
    problems = batch_job_problems(objects)
    assert len(problems) == 1 and expected in problems[0], problems


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
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("COMPOSE_", "DOCKER_", "TRITON_", "JOBS_", "REDIS_", "EDGE_"))}
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


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> named volume (or host path) of a service in `config`'s output."""
    return {volume.split(":")[1]: volume.split(":")[0] for volume in service.get("volumes", [])}


def test_compose_batch_jobs(docker_compose, compose_dir):
    out = compose_config(docker_compose, compose_dir)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    edge, worker, redis = services["edge"], services["worker"], services["redis"]
    # Workers: the edge's image, its Triton and the settings both must agree on.
    assert worker["command"] == WORKER_COMMAND
    assert worker["build"] == edge["build"]
    assert worker["deploy"]["replicas"] == 1
    assert "ports" not in worker and "ports" not in redis, "Redis has no password: publish no port"
    assert edge["environment"]["EDGE_JOBS"] == "true"
    for name in {*edge["environment"], *worker["environment"]}:
        if name.startswith(SHARED_SETTINGS):
            assert worker["environment"].get(name) == edge["environment"].get(name), f"{name} differs"
    # Redis: the service REDIS_URL names, with its append-only file on a named volume.
    host = re.fullmatch(r"redis://([a-z0-9-]+):6379/\d+", worker["environment"]["REDIS_URL"]).group(1)
    assert host in services and services[host] is redis
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert _mounts(redis)["/data"] in config["volumes"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert {"redis", "triton"} <= set(worker["depends_on"]) and "redis" in edge["depends_on"]
    # Uploads: one named volume at JOBS_DATA_DIR in the edge and the workers.
    data_dir = worker["environment"]["JOBS_DATA_DIR"]
    assert edge["environment"]["JOBS_DATA_DIR"] == data_dir
    assert _mounts(edge)[data_dir] == _mounts(worker)[data_dir] and _mounts(worker)[data_dir] in config["volumes"]
    # Stop grace: a worker's hand-over (its arithmetic in the file), Redis's AOF fsync and exit.
    assert _seconds(worker["stop_grace_period"]) >= worker_handover_s(worker["environment"]) + WORKER_STOP_MARGIN_S
    assert _seconds(redis["stop_grace_period"]) >= REDIS_STOP_GRACE_S
    scaled = compose_config(docker_compose, compose_dir, JOBS_WORKERS="4")
    assert scaled.returncode == 0 and yaml.safe_load(scaled.stdout)["services"]["worker"]["deploy"]["replicas"] == 4


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.replace('shm_size: "1g"', "shm_size: [1g]"), "shm_size"),                         # wrong type
    (lambda s: s.replace("    stop_grace_period: 40s", "    stop_grace_periods: 40s", 1), "stop_grace_periods"),
    (lambda s: s.replace("${TRITON_REPLICAS:-1}", "many"), "replicas"),                             # not a number
    (lambda s: s.replace("${JOBS_WORKERS:-1}", "several"), "replicas"),
    (lambda s: s.replace("    stop_grace_period: 45s", "    stop_grace_period: [45s]"), "stop_grace_period"),
])
def test_broken_compose_file_fails(docker_compose, compose_dir, mutate, message):
    path = compose_dir / "docker-compose.gpu.yml"
    text = path.read_text()
    assert mutate(text) != text, "the mutation no longer applies to docker-compose.gpu.yml"
    path.write_text(mutate(text))
    out = compose_config(docker_compose, compose_dir)
    assert out.returncode != 0 and message in out.stderr, out.stderr
