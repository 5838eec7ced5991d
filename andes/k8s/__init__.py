"""Kubernetes tooling: render the KubeRay manifests in ``k8s/`` from ``deployments/*.yaml`` and
validate them offline. A tools-layer package: nothing in the core, engines or serve imports it.
"""
