"""A small kustomize renderer for the deploy tests (no kustomize binary is available here).

Implements exactly the kustomization features `deploy/kubernetes/` uses — `resources` (files and
directories holding a kustomization.yaml), `namespace`, `images`, `replicas` and `patches` with
a strategic-merge patch file — and fails on any other key, so a manifest change that needs more
of kustomize fails the tests instead of being validated wrongly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

Resource = dict[str, Any]


def load_kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(data) - SUPPORTED
    if unsupported:
        raise ValueError(f"{directory}: kustomization keys this renderer lacks: {unsupported}")
    if data.get("kind") != "Kustomization":
        raise ValueError(f"{directory}: not a Kustomization")
    return dict(data)


def render(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` would output (order aside)."""
    k = load_kustomization(directory)
    resources: list[Resource] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only file patches are supported, got {patch}")
        body = yaml.safe_load((directory / patch["path"]).read_text())
        target = _find(resources, body["kind"], body["metadata"]["name"])
        merged = strategic_merge(target, body)
        target.clear()
        target.update(merged)
    for image in k.get("images", []):
        for resource in resources:
            for container in _containers(resource):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new_name = image.get("newName", name)
                    container["image"] = f"{new_name}:{image.get('newTag', tag)}"
    for replica in k.get("replicas", []):
        _find(resources, "Deployment", replica["name"])["spec"]["replicas"] = replica["count"]
    if "namespace" in k:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = k["namespace"]
    return resources


def strategic_merge(base: Any, patch: Any) -> Any:
    """Maps merge key by key; lists of named maps merge by name; anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        by_name = {item["name"]: item for item in base}
        for item in patch:
            by_name[item["name"]] = strategic_merge(by_name.get(item["name"], {}), item)
        return list(by_name.values())
    return patch


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _find(resources: list[Resource], kind: str, name: str) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise ValueError(f"no {kind} named {name} to patch")


def _containers(resource: Resource) -> list[dict[str, Any]]:
    if resource["kind"] not in {"Deployment", "StatefulSet", "DaemonSet"}:
        return []
    spec = resource["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]
