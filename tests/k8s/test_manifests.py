"""The manifests in k8s/: generated from deployments/*.yaml and valid offline (andes.k8s).

The KubeRay CRDs come from ../shared/schemas/kuberay/ beside the repository (CI has it there);
ANDES_SHARED_DIR points elsewhere. Each broken-manifest test breaks one thing in a copy of a
committed manifest and checks that the validation names it.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from andes.k8s import render, validate

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"


@pytest.fixture(scope="module")
def schemas():
    crds = Path(os.environ.get("ANDES_SHARED_DIR", REPO.parent / "shared")) / "schemas" / "kuberay"
    if not crds.is_dir():
        pytest.fail(f"KubeRay CRDs not found at {crds} (set ANDES_SHARED_DIR to the shared folder)")
    return validate.crd_schemas(crds)


@pytest.fixture(scope="module")
def manifests():
    return {(m.path.name, m.index): m for m in validate.load_manifests(K8S)}


def doc(manifests, name: str, index: int = 0) -> dict:
    return copy.deepcopy(manifests[(name, index)].doc)


def errors(document: dict, schemas) -> list[str]:
    return validate.check_manifest(validate.Manifest(Path("broken.yaml"), 0, document), schemas)


# ------------------------------------------------------------------------------ generated


def test_committed_manifests_equal_their_rendering():
    stale = {path: text for path, text in render.render(REPO).items()
             if (path.read_text() if path.exists() else None) != text}
    assert not stale, f"out of date (run `andes k8s render`): {sorted(map(str, stale))}"


def test_serve_config_is_the_deployment_file_made_ready_for_pods(manifests):
    for name, source in (("rayservice-sim.yaml", "andes.yaml"), ("rayservice-gpu.yaml", "andes-gpu.yaml")):
        embedded = yaml.safe_load(doc(manifests, name)["spec"]["serveConfigV2"])
        original = yaml.safe_load((REPO / "deployments" / source).read_text())
        assert embedded["http_options"]["host"] == "0.0.0.0"
        assert embedded["applications"][0]["args"] == original["applications"][0]["args"]
        engines = [[d for d in c["applications"][0]["deployments"] if d["name"] == "EngineReplica"][0]
                   for c in (embedded, original)]
        assert engines[0]["user_config"] == engines[1]["user_config"]


def test_gpu_engine_autoscales_one_replica_per_gpu_within_the_worker_group(manifests):
    service = doc(manifests, "rayservice-gpu.yaml")
    (group,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    engine = [d for d in app["deployments"] if d["name"] == "EngineReplica"][0]
    scaling = engine["autoscaling_config"]
    assert "num_replicas" not in engine and engine["ray_actor_options"]["num_gpus"] == 1
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (group["minReplicas"], group["maxReplicas"])
    assert scaling["policy"]["policy_function"] == "andes.serve.autoscale:QoEAutoscalingPolicy"
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


@pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")
def test_gpu_replicas_push_their_qoe_stats_every_two_seconds(manifests):
    # Ray 2.60's replicas push every AutoscalingConfig.metrics_interval_s (10 s by default),
    # whatever RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S says.
    from ray.serve.config import AutoscalingConfig

    service = doc(manifests, "rayservice-gpu.yaml")
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    engine = [d for d in app["deployments"] if d["name"] == "EngineReplica"][0]
    scaling = AutoscalingConfig(**engine["autoscaling_config"])
    assert scaling.metrics_interval_s == 2.0 < scaling.look_back_period_s


def test_bounds_scale_with_the_gpus_a_pod_holds(manifests):
    service = doc(manifests, "rayservice-gpu.yaml")
    (group,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    group.update(minReplicas=2, maxReplicas=3)
    group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    source = yaml.safe_load((REPO / "deployments" / "andes-gpu.yaml").read_text())
    config = render.serve_config(source, service, render.TARGETS[1])
    engine = config["applications"][0]["deployments"][0]
    assert engine["autoscaling_config"]["min_replicas"] == 8
    assert engine["autoscaling_config"]["max_replicas"] == 12


def test_check_finds_a_stale_manifest_and_render_fixes_it(tmp_path):
    for part in ("k8s", "deployments"):
        shutil.copytree(REPO / part, tmp_path / part)
    source = tmp_path / "deployments" / "andes.yaml"
    source.write_text(source.read_text().replace("model_name: andes-sim", "model_name: andes-renamed"))
    assert render.main(["--root", str(tmp_path), "--check"]) == 1
    assert render.main(["--root", str(tmp_path)]) == 0
    assert "andes-renamed" in (tmp_path / "k8s" / "rayservice-sim.yaml").read_text()
    assert render.main(["--root", str(tmp_path), "--check"]) == 0


def test_replace_block_keeps_the_rest_of_the_file():
    text = "a:\n  # note\n  key: |\n    old\n    lines\n\n  next: 1\n"
    assert render.replace_block(text, "key", "new\n") == "a:\n  # note\n  key: |\n    new\n\n  next: 1\n"
    with pytest.raises(ValueError, match="no 'other: |' block"):
        render.replace_block(text, "other", "x")


def test_dashboard_configmap_is_a_valid_configmap_for_the_sidecar():
    text = render.dashboard_configmap('{\n  "title": "test",\n  "panels": []\n}\n')
    configmap = yaml.safe_load(text)
    assert validate.check_builtin(configmap) == []
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(configmap["data"]["andes-dashboard.json"]) == {"title": "test", "panels": []}


# ------------------------------------------------------------------------------ valid


def test_every_manifest_is_valid(schemas):
    manifests = validate.load_manifests(K8S)
    kinds = sorted(m.doc["kind"] for m in manifests)
    # ConfigMap: the Grafana dashboard; Secret: the (optional) API keys
    assert kinds == ["ConfigMap", "PodMonitor", "RayService", "RayService", "Secret", "Service"]
    assert validate.check_all(manifests, schemas) == []


# ------------------------------------------------------------------------------ broken


def at(document: dict, *path):
    for part in path:
        document = document[part]
    return document


HEAD = ("spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0)
WORKER = ("spec", "rayClusterConfig", "workerGroupSpecs", 0)


@pytest.mark.parametrize("break_it, expected", [
    (lambda d: at(d, *HEAD).update(imagePullPolicyy="Always"), r"imagePullPolicyy.*unexpected"),
    (lambda d: at(d, *WORKER).update(minReplicas="1"), r"minReplicas: '1' is not of type 'integer'"),
    (lambda d: at(d, *WORKER).pop("groupName"), r"'groupName' is a required property"),
    (lambda d: at(d, "spec").update(serveConfigV3="x"), r"serveConfigV3.*unexpected"),
    (lambda d: at(d, "metadata").update(name="Andes_GPU"), r"metadata\.name"),
    (lambda d: at(d, "metadata", "labels").update(broken=3), r"metadata\.labels\.broken"),
])
def test_a_broken_rayservice_fails_its_crd(manifests, schemas, break_it, expected):
    document = doc(manifests, "rayservice-gpu.yaml")
    break_it(document)
    assert any(re.search(expected, e) for e in errors(document, schemas)), errors(document, schemas)


def with_serve_config(document: dict, edit) -> dict:
    config = yaml.safe_load(document["spec"]["serveConfigV2"])
    edit(config["applications"][0])
    document["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    return document


def engine(app: dict) -> dict:
    return [d for d in app["deployments"] if d["name"] == "EngineReplica"][0]


@pytest.mark.parametrize("edit, expected", [
    (lambda app: engine(app)["user_config"]["policy"].update(name="sjf"), r"user_config\.policy\.name"),
    (lambda app: app["args"]["gateway"].update(max_tokens_per_event=0),
     r"args\.gateway\.max_tokens_per_event"),
    (lambda app: app["args"]["router"].update(stale_after_s=0.5), r"args\.router: stale_after_s"),
    (lambda app: engine(app)["autoscaling_config"]["policy"]["policy_kwargs"].update(qoe_target=2.0),
     r"policy_kwargs\.qoe_target"),
    (lambda app: engine(app).update(num_replicas=2), r"num_replicas is not allowed"),
    (lambda app: engine(app).update(max_ongoing_requests=0), r"max_ongoing_requests"),
])
def test_a_broken_serve_config_fails_as_serve_run_would(manifests, schemas, edit, expected):
    document = with_serve_config(doc(manifests, "rayservice-gpu.yaml"), edit)
    found = errors(document, schemas)
    assert any(re.search(expected, e) for e in found), found


def test_a_broken_service_fails_kubernetes_schema(manifests, schemas):
    service = doc(manifests, "gateway-service.yaml")
    service["spec"]["ports"][0]["prot"] = 8000
    assert any("'prot' was unexpected" in e for e in errors(service, schemas))
    service = doc(manifests, "gateway-service.yaml")
    service["spec"]["type"] = 3
    assert errors(service, schemas)


@pytest.mark.parametrize("break_it, expected", [
    (lambda d: d.update(apiVersion="monitoring.coreos.com/v2"), "apiVersion"),
    (lambda d: d["spec"]["selector"].update(matchLabel={"a": "b"}), "matchLabel"),
    (lambda d: d["spec"].update(podMetricsEndpoints=[]), "at least one endpoint"),
    (lambda d: d["spec"]["podMetricsEndpoints"][0].pop("port"), "port name"),
])
def test_a_broken_podmonitor_fails_the_minimal_check(manifests, schemas, break_it, expected):
    monitor = doc(manifests, "podmonitor.yaml")
    break_it(monitor)
    assert any(expected in e for e in errors(monitor, schemas))


def test_selectors_and_ports_must_meet_the_pods(manifests):
    good = [copy.deepcopy(m) for m in manifests.values()]
    assert validate.check_ports(good) == []
    service = next(m for m in good if m.doc["kind"] == "Service")
    service.doc["spec"]["selector"]["app.kubernetes.io/name"] = "other"
    monitor = next(m for m in good if m.doc["kind"] == "PodMonitor")
    monitor.doc["spec"]["podMetricsEndpoints"][0]["port"] = "prometheus"
    found = validate.check_ports(good)
    assert any("Service/andes: selects no pod" in e for e in found)
    assert any("port 'prometheus' is not declared by" in e and "gpu" in e for e in found)


def test_every_andes_container_reads_the_optional_api_keys_secret():
    """The keys reach whichever pod runs the gateway, from the Secret, never from the YAML."""
    manifests = validate.load_manifests(K8S)
    (secret,) = [m.doc for m in manifests if m.doc["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "andes-api-keys" and secret["stringData"] == {"keys": ""}
    for service in (m.doc for m in manifests if m.doc["kind"] == "RayService"):
        spec = service["spec"]["rayClusterConfig"]
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        for group in groups:
            for container in group["template"]["spec"]["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                ref = env["ANDES_API_KEYS"]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": "andes-api-keys", "key": "keys", "optional": True}
