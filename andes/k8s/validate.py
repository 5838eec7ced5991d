"""Offline checks of the manifests in ``k8s/``: what the API server, KubeRay and ``serve run``
would reject, found without a cluster.

- Built-in kinds (Service, ConfigMap, ...): ``kubernetes-validate``'s strict schemas, so an
  unknown field fails as it would with ``kubectl apply --validate=strict``.
- ``RayService``/``RayCluster``: the KubeRay CRD's ``openAPIV3Schema`` with unknown fields
  rejected (``additionalProperties: false`` wherever the schema lists properties and does not
  say ``x-kubernetes-preserve-unknown-fields``, as the API server prunes them); ``metadata``
  against Kubernetes' ObjectMeta. CEL rules (``x-kubernetes-validations``) are not evaluated.
- ``PodMonitor``/``ServiceMonitor`` (no CRD shipped here): kind, apiVersion, a well-formed
  label selector and at least one endpoint naming a port.
- The ``serveConfigV2`` of each RayService as ``serve run`` checks a config file: Ray's
  ``ServeDeploySchema``, then the app's builder (``andes.serve.app:build_app`` validates
  ``args``), each engine ``user_config`` as ``EngineReplica.reconfigure`` validates it, and
  the autoscaling config as Serve builds it (policy included).
- Across files: every Service and PodMonitor selects the Andes pods and names a port each of
  them declares.

``kubernetes-validate``, ``jsonschema`` and Ray are imported only by the checks that use them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

__all__ = ["K8S_VERSION", "Manifest", "check_all", "check_builtin", "check_custom",
           "check_manifest", "check_monitor", "check_ports", "check_serve_config", "crd_schemas",
           "load_manifests"]

K8S_VERSION = "1.33"
"""Kubernetes version whose schemas the built-in kinds are checked against."""
RAY_KINDS = ("RayService", "RayCluster")
MONITOR_KINDS = ("PodMonitor", "ServiceMonitor")
_KUBERAY_LABELS = ("ray.io/",)  # labels KubeRay puts on pods itself (not in the templates)


@dataclass(frozen=True)
class Manifest:
    """One YAML document of a manifest file."""

    path: Path
    index: int
    doc: dict[str, Any]

    @property
    def label(self) -> str:
        name = (self.doc.get("metadata") or {}).get("name", "?")
        return f"{self.path.name}[{self.index}] {self.doc.get('kind')}/{name}"


def load_manifests(directory: Path) -> list[Manifest]:
    """Every non-empty YAML document of ``directory/*.yaml``, in file order."""
    out = []
    for path in sorted(directory.glob("*.yaml")):
        docs = yaml.safe_load_all(path.read_text())
        out += [Manifest(path, i, doc) for i, doc in enumerate(docs) if doc]
    return out


def _path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def check_builtin(doc: Mapping[str, Any], version: str = K8S_VERSION) -> list[str]:
    """Errors of a built-in kind against Kubernetes' strict schema."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(dict(doc), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_path(exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def _check_metadata(metadata: Any) -> list[str]:
    # ObjectMeta through a ConfigMap, the smallest built-in kind that holds nothing else.
    wrapped = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
    return check_builtin(wrapped)


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _check_name(doc: Mapping[str, Any]) -> list[str]:
    """The API server's rule for object names (the schemas cannot say it): a DNS subdomain."""
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        return [f"metadata.name: {name!r} is not a DNS subdomain (lower case, digits, '-', '.')"]
    return []


def _strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema that rejects properties it does not list."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=4)
def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): strict openAPIV3Schema}`` of every served version of the CRDs."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are about 1 MB each
    out = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                out[key] = _strict(version["schema"]["openAPIV3Schema"])
    return out


def check_custom(doc: Mapping[str, Any], schemas: Mapping[tuple[str, str], Mapping]) -> list[str]:
    """Errors of a custom resource against its CRD schema (and ObjectMeta)."""
    import jsonschema

    schema = schemas.get((doc.get("apiVersion"), doc.get("kind")))
    if schema is None:
        return [f"no CRD serves {doc.get('apiVersion')} {doc.get('kind')}"]
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{_path(e.absolute_path)}: {e.message}"
              for e in sorted(validator.iter_errors(dict(doc)), key=lambda e: list(map(str, e.path)))]
    return errors + _check_metadata(doc.get("metadata"))


def _check_selector(selector: Any, where: str) -> list[str]:
    # A LabelSelector through a NetworkPolicy's podSelector, the built-in field of that type.
    wrapped = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "selector"}, "spec": {"podSelector": selector}}
    return [f"{where}{e.removeprefix('spec.podSelector')}" for e in check_builtin(wrapped)]


def check_monitor(doc: Mapping[str, Any]) -> list[str]:
    """Minimal checks of a Prometheus Operator PodMonitor/ServiceMonitor (no CRD shipped)."""
    errors = []
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        errors.append(f"apiVersion: expected monitoring.coreos.com/v1 (got {doc.get('apiVersion')!r})")
    spec = doc.get("spec") or {}
    if "selector" not in spec:
        errors.append("spec.selector: missing")
    else:
        errors += _check_selector(spec["selector"], "spec.selector")
    key = "podMetricsEndpoints" if doc.get("kind") == "PodMonitor" else "endpoints"
    endpoints = spec.get(key)
    if not isinstance(endpoints, list) or not endpoints:
        errors.append(f"spec.{key}: needs at least one endpoint")
    else:
        errors += [f"spec.{key}.{i}.port: a port name is needed" for i, e in enumerate(endpoints)
                   if not isinstance(e, dict) or not isinstance(e.get("port"), str)]
    return errors + _check_metadata(doc.get("metadata"))


def check_serve_config(doc: Mapping[str, Any]) -> list[str]:
    """The RayService's ``serveConfigV2`` checked as ``serve run`` checks a config file."""
    text = (doc.get("spec") or {}).get("serveConfigV2")
    if not isinstance(text, str):
        return ["spec.serveConfigV2: missing (Andes RayServices carry their Serve config)"]
    try:
        return _serve_errors(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        return [f"spec.serveConfigV2: not YAML: {exc}"]


def _serve_errors(config: Any) -> list[str]:
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from andes.config import ReplicaConfig, load_config
    from andes.serve.app import build_app
    from andes.serve.autoscale import POLICY_FUNCTION, QoEAutoscalingPolicy

    try:
        ServeDeploySchema.model_validate(config)
        for app in config["applications"]:
            if app.get("import_path") == "andes.serve.app:build_app":
                build_app(app.get("args") or {})
            for deployment in app.get("deployments", ()):
                if deployment.get("name") == "EngineReplica" and "user_config" in deployment:
                    load_config(ReplicaConfig, deployment["user_config"], where="user_config")
                autoscaling = deployment.get("autoscaling_config")
                if autoscaling is not None:
                    policy = AutoscalingConfig.model_validate(autoscaling).policy
                    if policy.policy_function == POLICY_FUNCTION:
                        QoEAutoscalingPolicy(**policy.policy_kwargs)
    except (ValidationError, ValueError) as exc:  # ConfigError is a ValueError
        return [f"spec.serveConfigV2: {exc}"]
    return []


def _pod_templates(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterConfig", spec) if doc.get("kind") == "RayService" else spec
    groups = [("head", cluster.get("headGroupSpec") or {})]
    groups += [(g.get("groupName", "?"), g) for g in cluster.get("workerGroupSpecs") or ()]
    return [(name, group.get("template") or {}) for name, group in groups]


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items() if not k.startswith(_KUBERAY_LABELS))


def check_ports(manifests: list[Manifest]) -> list[str]:
    """Each Service and monitor selects some Andes pods, and every pod it selects declares the
    port it names (labels KubeRay adds itself, ``ray.io/*``, are assumed present)."""
    pods = [(f"{m.label} {group}", template) for m in manifests if m.doc.get("kind") in RAY_KINDS
            for group, template in _pod_templates(m.doc)]
    errors = []
    for m in manifests:
        kind, spec = m.doc.get("kind"), m.doc.get("spec") or {}
        if kind == "Service":
            selector, ports = spec.get("selector") or {}, [p.get("targetPort") for p in spec.get("ports", ())]
        elif kind in MONITOR_KINDS:
            endpoints = spec.get("podMetricsEndpoints") or spec.get("endpoints") or ()
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            ports = [e.get("port") for e in endpoints]
        else:
            continue
        chosen = [(name, t) for name, t in pods
                  if _selects(selector, (t.get("metadata") or {}).get("labels") or {})]
        if not chosen:
            errors.append(f"{m.label}: selects no pod of any RayService ({selector})")
        for name, template in chosen:
            declared = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", ())}
            errors += [f"{m.label}: port {port!r} is not declared by {name}"
                       for port in ports if isinstance(port, str) and port not in declared]
    return errors


def check_manifest(manifest: Manifest, schemas: Mapping[tuple[str, str], Mapping]) -> list[str]:
    """Every error of one document, by its kind."""
    kind = manifest.doc.get("kind")
    if kind in RAY_KINDS:
        errors = check_custom(manifest.doc, schemas)
        if kind == "RayService":
            errors += check_serve_config(manifest.doc)
    elif kind in MONITOR_KINDS:
        errors = check_monitor(manifest.doc)
    else:
        errors = check_builtin(manifest.doc)
    return [f"{manifest.label}: {e}" for e in _check_name(manifest.doc) + errors]


def check_all(manifests: list[Manifest], schemas: Mapping[tuple[str, str], Mapping]) -> list[str]:
    """Every error of every manifest (empty: all valid); ``schemas`` from ``crd_schemas``."""
    return [e for m in manifests for e in check_manifest(m, schemas)] + check_ports(manifests)
