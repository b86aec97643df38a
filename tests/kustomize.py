"""The part of kustomize that deploy/kubernetes uses, in Python (no kubectl here): resources
(files, or folders holding a kustomization), namespace, labels, images, configMapGenerator
(create, merge, replace) and patches (JSON 6902 operation lists, or strategic-merge documents
merged as plain maps). Anything else in a kustomization is refused, so that a field the tests
do not understand cannot slip through unrendered."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "images",
    "configMapGenerator",
    "generatorOptions",
    "patches",
}


class KustomizeError(AssertionError):
    pass


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k folder` would apply."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    if unknown:
        raise KustomizeError(f"{folder}: fields this renderer does not know: {unknown}")
    objects: list[dict[str, Any]] = []
    for res in spec.get("resources", []):
        path = (folder / res).resolve()
        if path.is_dir():
            objects += render(path)
        elif path.is_file():
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
        else:
            raise KustomizeError(f"{folder}: resource {res} does not exist")
    options = spec.get("generatorOptions") or {}
    for gen in spec.get("configMapGenerator", []):
        data = dict(lit.split("=", 1) for lit in gen.get("literals", []))
        behavior = gen.get("behavior", "create")
        held = [o for o in objects if o["kind"] == "ConfigMap" and _named(o, gen["name"])]
        if behavior == "create":
            if held:
                raise KustomizeError(f"ConfigMap {gen['name']} is generated twice")
            name = gen["name"]
            if not options.get("disableNameSuffixHash"):
                raise KustomizeError("name suffix hashes are not rendered here")
            objects.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
            )
        elif behavior in ("merge", "replace"):
            if len(held) != 1:
                raise KustomizeError(f"{behavior}: no ConfigMap {gen['name']} to change")
            held[0]["data"] = {**held[0].get("data", {}), **data} if behavior == "merge" else data
        else:
            raise KustomizeError(f"unknown generator behavior {behavior}")
    for patch in spec.get("patches", []):
        _patch(folder, objects, patch)
    for image in spec.get("images", []):
        for obj in objects:
            for c in containers(obj):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    c["image"] = (
                        f"{new}:{image.get('newTag', tag)}" if image.get("newTag", tag) else new
                    )
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if spec.get("namespace") and obj["kind"] != "Namespace":
            meta["namespace"] = spec["namespace"]
        for group in spec.get("labels", []):
            meta.setdefault("labels", {}).update(group["pairs"])
    return objects


def _named(obj: dict[str, Any], name: str) -> bool:
    return obj.get("metadata", {}).get("name") == name


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec) if obj["kind"] != "Pod" else spec
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _patch(folder: Path, objects: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    doc = yaml.safe_load((folder / patch["path"]).read_text())
    target = patch.get("target", {})
    hits = [
        o
        for o in objects
        if (not target.get("kind") or o["kind"] == target["kind"])
        and (not target.get("name") or _named(o, target["name"]))
    ]
    if not hits:
        raise KustomizeError(f"patch {patch['path']}: no object matches {target}")
    for obj in hits:
        if isinstance(doc, list):
            for op in doc:
                _json6902(obj, op)
        else:
            merged = _merge(obj, doc)
            obj.clear()
            obj.update(merged)


def _json6902(obj: dict[str, Any], op: dict[str, Any]) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent: Any = obj
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    if op["op"] == "add":
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        else:
            parent[last] = op["value"]
    elif op["op"] == "replace":
        if isinstance(parent, list):
            parent[int(last)] = op["value"]
        else:
            if last not in parent:
                raise KustomizeError(f"replace: {op['path']} does not exist")
            parent[last] = op["value"]
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise KustomizeError(f"JSON patch op {op['op']} is not rendered here")


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return copy.deepcopy(patch)
