"""Render a kustomization to its objects without kubectl: the subset of kustomize these manifests use.

    python docker/k8s/render.py docker/k8s/overlays/dev     # what `kubectl kustomize` prints, as YAML

Why a renderer of our own: `make test` on a fresh clone must render and validate every
overlay, and no kustomize (or kubectl) binary installs from the registries the project
uses.  To keep it honest it understands only ``resources`` (files and kustomization
directories), ``namespace``, ``images`` and ``patches`` (strategic-merge patch files that
name their target by kind and name), and refuses every other field, so a kustomization can
never use a feature this renderer would silently ignore.  ``tests/docker/test_k8s.py``
compares its output with ``kubectl kustomize`` wherever a kubectl is on PATH.

Strategic merge follows Kubernetes' merge keys for the lists these manifests patch
(containers and volumes by ``name``, volume mounts by ``mountPath``, ports by
``containerPort``); other lists are replaced, as Kubernetes does for lists without a key.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

FIELDS = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
# Kubernetes' patchMergeKey for the lists that appear in these manifests' pod specs.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "volumeClaimTemplates": None}
# Kinds without a namespace (the namespace transformer leaves them alone).
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                            "StorageClass", "CustomResourceDefinition", "PriorityClass"})


class RenderError(ValueError):
    """A kustomization this renderer cannot render faithfully (one line, for a CLI error)."""


@dataclass(frozen=True)
class ObjectId:
    """How kustomize tells objects apart within one build: kind and name (namespace set later)."""

    kind: str
    name: str

    @classmethod
    def of(cls, obj: dict) -> "ObjectId":
        try:
            return cls(obj["kind"], obj["metadata"]["name"])
        except (KeyError, TypeError) as exc:
            raise RenderError(f"an object without kind or metadata.name: {str(obj)[:120]}") from exc


def _documents(path: Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"cannot read {path}: {exc}") from exc


def _kustomization(directory: Path) -> dict:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"{directory} has no kustomization.yaml")
    docs = _documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{path} must hold one mapping")
    unknown = set(docs[0]) - FIELDS
    if unknown:
        raise RenderError(f"{path}: fields {sorted(unknown)} are not supported by docker/k8s/render.py "
                          f"(supported: {sorted(FIELDS)})")
    return docs[0]


def _merge_list(base: list, patch: list, key: str | None) -> list:
    if key is None or not all(isinstance(x, dict) and key in x for x in base + patch):
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(x) for x in base]
    for item in patch:
        index = next((i for i, x in enumerate(merged) if x[key] == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[index] = strategic_merge(merged[index], item)
    return merged


def strategic_merge(base: dict, patch: dict) -> dict:
    """``patch`` merged into a copy of ``base``: maps recursively, keyed lists by key, ``null`` deletes."""
    out = copy.deepcopy(base)
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        elif isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = strategic_merge(out[name], value)
        elif isinstance(value, list) and isinstance(out.get(name), list):
            out[name] = _merge_list(out[name], value, MERGE_KEYS.get(name))
        else:
            out[name] = copy.deepcopy(value)
    return out


def _pod_specs(obj: dict) -> list[dict]:
    spec = obj.get("spec") or {}
    template = (spec.get("jobTemplate") or {}).get("spec", spec).get("template") or {}
    return [template["spec"]] if "spec" in template else []


def _split_image(image: str) -> tuple[str, str]:
    """(name, tag) of ``registry:5000/name:tag``: the tag follows the last colon after the last slash."""
    name, sep, tag = image.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (image, "")


def _set_images(objects: list[dict], images: list[dict]) -> None:
    for rule in images:
        if set(rule) - {"name", "newName", "newTag"} or "name" not in rule:
            raise RenderError(f"images entry {rule} must have name and only newName/newTag")
        for obj in objects:
            for pod in _pod_specs(obj):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    name, tag = _split_image(container["image"])
                    if name == rule["name"]:
                        tag = rule.get("newTag", tag)
                        container["image"] = rule.get("newName", name) + (f":{tag}" if tag else "")


def render(directory: Path) -> list[dict]:
    """The objects ``kubectl kustomize directory`` would print (order aside)."""
    directory = Path(directory)
    kustomization = _kustomization(directory)
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects += render(path) if path.is_dir() else _documents(path)
    ids = [ObjectId.of(o) for o in objects]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1}, key=str)
        raise RenderError(f"{directory}: an object is defined twice: {twice}")
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise RenderError(f"{directory}: patches entries must be {{path: FILE}} (got {entry})")
        for patch in _documents(directory / entry["path"]):
            target = ObjectId.of(patch)
            if target not in ids:
                raise RenderError(f"{directory / entry['path']}: no {target.kind} {target.name!r} to patch")
            index = ids.index(target)
            objects[index] = strategic_merge(objects[index], patch)
    _set_images(objects, kustomization.get("images", []))
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: render.py KUSTOMIZATION_DIR", file=sys.stderr)
        return 2
    try:
        objects = render(Path(argv[0]))
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
