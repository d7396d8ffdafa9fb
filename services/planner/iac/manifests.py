"""Kubernetes manifests (multi-document YAML, e.g. ``helm template`` output) → a native spec document.

``Namespace`` → ``k8s_namespace``, ``ConfigMap`` → ``k8s_configmap`` (its ``data``), ``Deployment`` →
``k8s_deployment`` (one container's image and the replica count: what ``kubectl create
deployment`` sets). The compiler orders them (a namespace before what lives in it). A ``List``'s
items are taken one by one; empty documents are skipped. Every kind the catalog has no type for is
listed at once, and so is every setting UPM would not carry (a container's env, a second container,
volumes…): nothing partial is planned. Labels and annotations are not carried (the notes say so).
Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.planner.errors import SpecError
from services.planner.iac.tfmap import name_of, refuse_unsupported

KINDS = {"Namespace": "k8s_namespace", "ConfigMap": "k8s_configmap", "Deployment": "k8s_deployment"}
_POD_KEYS = frozenset({"containers"})
_CONTAINER_KEYS = frozenset({"name", "image", "ports", "imagePullPolicy"})
_DEPLOYMENT_SPEC_KEYS = frozenset({"replicas", "selector", "template"})


def is_manifest(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` is one Kubernetes object (``apiVersion`` and ``kind``)."""
    return isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)


def manifests_to_spec(documents: Sequence[Any], source: str = "manifests") -> dict[str, Any]:
    """The native spec document for the Kubernetes objects in ``documents`` (see the module docstring)."""
    objects = list(_objects(documents, source))
    refuse_unsupported(
        [(str(obj["kind"]), f"{where}: {obj['kind']}/{_meta(obj).get('name', '?')}")
         for where, obj in objects if obj["kind"] not in KINDS],
        "kinds in the manifests",
        sorted(KINDS),
    )
    problems = [p for where, obj in objects for p in _problems(where, obj)]
    if problems:
        raise SpecError(
            f"{len(problems)} setting(s) UPM would not carry, so nothing was planned: " + "; ".join(problems)
            + ". Remove them, or apply these objects outside UPM"
        )
    resources = [_resource(obj) for _, obj in objects]
    notes = [
        f"from {where} {obj['kind']}/{_meta(obj).get('name')}: create {name_of(r['type'], r)}"
        + (" (labels and annotations not carried)" if _meta(obj).get("labels") or _meta(obj).get("annotations") else "")
        for (where, obj), r in zip(objects, resources, strict=True)
    ]
    if not resources:
        raise SpecError(f"{source} holds no Kubernetes object; give YAML documents with apiVersion and kind")
    return {"resources": resources, "notes": notes}


def _objects(documents: Sequence[Any], source: str) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    for number, doc in enumerate(documents, start=1):
        where = f"{source} document {number}"
        if doc is None:
            continue
        if not isinstance(doc, Mapping) or not is_manifest(doc):
            raise SpecError(f"{where} is not a Kubernetes object (a mapping with apiVersion and kind)")
        if doc["kind"] == "List":
            items = doc.get("items") or []
            out += [(f"{where} item {i}", item) for i, item in enumerate(items, start=1)
                    if isinstance(item, Mapping) and is_manifest(item)]
            continue
        if not isinstance(_meta(doc).get("name"), str):
            raise SpecError(f"{where} ({doc['kind']}) has no metadata.name; every object needs one")
        out.append((where, doc))
    return out


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _problems(where: str, obj: Mapping[str, Any]) -> list[str]:
    at = f"{where} {obj['kind']}/{_meta(obj)['name']}"
    if obj["kind"] == "ConfigMap":
        return [f"{at}: binaryData"] if obj.get("binaryData") else []
    if obj["kind"] != "Deployment":
        return []
    spec = obj.get("spec") or {}
    pod = _dig(spec, "template", "spec") or {}
    containers = pod.get("containers") if isinstance(pod, Mapping) else None
    found = [f"{at}: spec.{k}" for k in sorted(spec) if k not in _DEPLOYMENT_SPEC_KEYS]
    found += [f"{at}: spec.template.spec.{k}" for k in sorted(pod) if k not in _POD_KEYS]
    if not isinstance(containers, list) or len(containers) != 1:
        found.append(f"{at}: exactly one container is carried, not {len(containers or [])}")
    else:
        found += [f"{at}: containers[0].{k}" for k in sorted(containers[0]) if k not in _CONTAINER_KEYS]
    return found


def _resource(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = _meta(obj)
    out: dict[str, Any] = {"type": KINDS[str(obj["kind"])], "name": meta["name"]}
    if obj["kind"] != "Namespace" and meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    if obj["kind"] == "ConfigMap":
        out["data"] = dict(obj.get("data") or {})
    if obj["kind"] == "Deployment":
        spec = obj.get("spec") or {}
        out["image"] = _dig(spec, "template", "spec")["containers"][0].get("image")
        if spec.get("replicas") is not None:
            out["replicas"] = spec["replicas"]
    return out
