"""``andes k8s render``: the RayServices' ``serveConfigV2``, generated from ``deployments/*.yaml``.

One app config, two ways to run it: ``serve run deployments/andes.yaml`` on a host, and the
KubeRay ``RayService`` in ``k8s/`` whose ``serveConfigV2`` is the same file adapted to pods.
The manifest keeps everything else (image, resources, worker groups, comments) as written;
only the ``serveConfigV2`` block is rewritten. What changes on the way:

- the Serve proxy listens on ``0.0.0.0`` (a pod must accept the Service's traffic);
- for a target with an ``autoscale_group``, the engine deployment's fixed ``num_replicas``
  becomes an ``autoscaling_config`` running the QoE autoscaler
  (``andes.serve.autoscale.QoEAutoscalingPolicy``) with its default settings, bounded by
  that worker group: ``minReplicas`` and ``maxReplicas`` times the engine replicas one worker
  pod holds (its GPUs over the engine's ``num_gpus``), starting from the file's count. So the
  worker group's bounds are the one knob for both Ray's and Serve's autoscaling.

Also writes ``k8s/grafana-dashboard.yaml``, the ConfigMap Grafana's dashboard sidecar loads,
from ``k8s/grafana/andes-dashboard.json`` when that file exists. ``--check`` writes nothing
and exits 1 when a file is out of date (what CI runs through the tests).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from andes.autoscale import QoEAutoscalingSettings
from andes.serve.autoscale import POLICY_FUNCTION

__all__ = ["DASHBOARD_JSON", "DASHBOARD_MANIFEST", "TARGETS", "Target", "dashboard_configmap",
           "main", "render", "replace_block", "serve_config"]

ENGINE_DEPLOYMENT = "EngineReplica"
DASHBOARD_JSON = "k8s/grafana/andes-dashboard.json"
DASHBOARD_MANIFEST = "k8s/grafana-dashboard.yaml"
# Serve's timing around a custom policy: both delays 0, since the QoE policy keeps its own
# (pressure_s, cooldown_s); a 15 s window averages each replica's reports (recorded every 2 s).
# Replicas push their reports every metrics_interval_s (10 s by default): Ray 2.60 reads only
# that field, deprecated as it is; the RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S
# variable its warning names is declared there but not read yet.
_SERVE_AUTOSCALING = {"upscale_delay_s": 0.0, "downscale_delay_s": 0.0, "metrics_interval_s": 2.0,
                      "look_back_period_s": 15.0}


@dataclass(frozen=True)
class Target:
    """One RayService manifest and the Serve config file its ``serveConfigV2`` comes from."""

    manifest: str
    source: str
    autoscale_group: str | None = None
    """Worker group whose bounds bound the engine's QoE autoscaling (None: fixed replicas)."""


TARGETS = (
    Target("k8s/rayservice-sim.yaml", "deployments/andes.yaml"),
    Target("k8s/rayservice-gpu.yaml", "deployments/andes-gpu.yaml", autoscale_group="gpu"),
)


def _engine(app: Mapping[str, Any]) -> dict[str, Any]:
    for deployment in app.get("deployments", ()):
        if deployment.get("name") == ENGINE_DEPLOYMENT:
            return deployment
    raise ValueError(f"application {app.get('name')!r} has no {ENGINE_DEPLOYMENT} deployment")


def _worker_group(manifest: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    groups = manifest["spec"]["rayClusterConfig"].get("workerGroupSpecs", ())
    for group in groups:
        if group.get("groupName") == name:
            return group
    raise ValueError(f"no worker group {name!r} in the RayService (found "
                     f"{[g.get('groupName') for g in groups]})")


def _gpus_per_pod(group: Mapping[str, Any]) -> int:
    containers = group["template"]["spec"]["containers"]
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers)


def _autoscaling(engine: Mapping[str, Any], group: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's ``autoscaling_config``: QoE policy, bounds from ``group``'s GPUs."""
    num_gpus = engine.get("ray_actor_options", {}).get("num_gpus", 0)
    if not num_gpus:
        raise ValueError(f"{ENGINE_DEPLOYMENT} asks for no GPU: cannot bound it by a GPU worker group")
    per_pod = int(_gpus_per_pod(group) // num_gpus)
    if per_pod < 1:
        raise ValueError(f"worker group {group['groupName']!r} pods hold fewer GPUs than one "
                         f"{ENGINE_DEPLOYMENT} needs ({num_gpus})")
    low, high = group["minReplicas"] * per_pod, group["maxReplicas"] * per_pod
    initial = min(max(int(engine.get("num_replicas", low)), low), high)
    return {"min_replicas": low, "initial_replicas": initial, "max_replicas": high,
            **_SERVE_AUTOSCALING,
            "policy": {"policy_function": POLICY_FUNCTION,
                       "policy_kwargs": QoEAutoscalingSettings().model_dump()}}


def serve_config(source: Mapping[str, Any], manifest: Mapping[str, Any], target: Target) -> dict[str, Any]:
    """The ``serveConfigV2`` content for ``target``: ``source`` (a Serve config file) for pods."""
    config = copy.deepcopy(dict(source))
    config.setdefault("http_options", {})["host"] = "0.0.0.0"
    if target.autoscale_group is not None:
        group = _worker_group(manifest, target.autoscale_group)
        for app in config["applications"]:
            engine = _engine(app)
            engine["autoscaling_config"] = _autoscaling(engine, group)
            engine.pop("num_replicas", None)
    return config


def _serve_config_text(config: Mapping[str, Any], target: Target) -> str:
    header = (f"# Generated by `andes k8s render` from {target.source}: edit that file (and, for\n"
              f"# the engine's replica bounds, the worker group below), then render again.\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)


_BLOCK = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+): \|[-+]?\s*$")


def replace_block(text: str, key: str, content: str) -> str:
    """``text`` with the literal block scalar under ``key`` (``key: |``) replaced by ``content``."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        match = _BLOCK.match(line)
        if match and match["key"] == key:
            width = len(match["indent"])
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or
                                        len(lines[end]) - len(lines[end].lstrip(" ")) > width):
                end += 1
            while end > i + 1 and not lines[end - 1].strip():  # blank lines after the block stay
                end -= 1
            pad = " " * (width + 2)
            body = [pad + row + "\n" if row else "\n" for row in content.rstrip("\n").split("\n")]
            return "".join(lines[:i + 1] + body + lines[end:])
    raise ValueError(f"no '{key}: |' block in the manifest")


def dashboard_configmap(dashboard_json: str) -> str:
    """The ConfigMap Grafana's sidecar loads (it picks ConfigMaps labelled ``grafana_dashboard``)."""
    body = "".join(f"    {row}\n" if row else "\n" for row in dashboard_json.rstrip("\n").split("\n"))
    return (f"# Generated by `andes k8s render` from {DASHBOARD_JSON}: edit that file, then render.\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: andes-grafana-dashboard\n"
            "  labels:\n    grafana_dashboard: \"1\"\n    app.kubernetes.io/name: andes\n"
            f"data:\n  andes-dashboard.json: |\n{body}")


def render(root: Path) -> dict[Path, str | None]:
    """Every generated file's new text (``None``: the file must not exist), by path."""
    out: dict[Path, str | None] = {}
    for target in TARGETS:
        path = root / target.manifest
        text = path.read_text()
        config = serve_config(yaml.safe_load((root / target.source).read_text()),
                              yaml.safe_load(text), target)
        out[path] = replace_block(text, "serveConfigV2", _serve_config_text(config, target))
    dashboard = root / DASHBOARD_JSON
    out[root / DASHBOARD_MANIFEST] = dashboard_configmap(dashboard.read_text()) if dashboard.exists() else None
    return out


def _stale(path: Path, text: str | None) -> bool:
    if text is None:
        return path.exists()
    return not path.exists() or path.read_text() != text


def main(argv: Sequence[str] | None = None) -> int:
    """Render (or with ``--check``, compare) the generated Kubernetes files."""
    parser = argparse.ArgumentParser(prog="andes k8s render", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    stale = {path: text for path, text in render(args.root).items() if _stale(path, text)}
    for path, text in stale.items():
        if args.check:
            print(f"out of date: {path}", file=sys.stderr)
        elif text is None:
            path.unlink()
            print(f"removed {path}")
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
