"""Infrastructure code → the native spec: Terraform/OpenTofu plan JSON, HCL (``.tf``), Kubernetes manifests.

A spec document (from ``upm plan --file`` / ``upm submit --file``, or an intent's ``spec`` on the
bus) is one of:

- a native spec (``resources: [...]``), used as it is;
- a ``terraform show -json`` plan, or one Kubernetes object, recognised by content;
- an *input document* carrying the original files, which is what the CLI sends::

      format: terraform-plan | hcl | kubernetes
      files: {main.tf: "<the file's text>", ...}     # the original text, byte for byte
      variables: {region: us-east-1}                 # hcl only: -var / .tfvars values
      # optional native keys: variant, targets, initiator, reason, window

:func:`to_native` turns any of them into the native spec document, purely (the same input, the
same native spec, the same plan hash as writing that native spec by hand). The intent keeps the
original text, so the evidence pack (its ``events.jsonl`` and ``source/`` files) holds exactly what
the team gave, and its sha256.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from events import jsonbounds
from events.errors import InvalidEvent
from services.common.configfile import parse_documents
from services.planner.errors import SpecError
from services.planner.iac.hcl import hcl_to_spec
from services.planner.iac.manifests import is_manifest, manifests_to_spec
from services.planner.iac.terraform_plan import is_plan, plan_to_spec

FORMATS = ("terraform-plan", "hcl", "kubernetes")
_PASSED = ("variant", "targets", "initiator", "reason", "window")
_INPUT_KEYS = frozenset({"format", "files", "variables", *_PASSED})

__all__ = ["FORMATS", "is_input", "to_native"]


def is_input(spec: Mapping[str, Any]) -> bool:
    """Whether ``spec`` is infrastructure code (an input document, a plan JSON, a manifest)."""
    return "format" in spec or is_plan(spec) or is_manifest(spec)


def to_native(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The native spec document ``spec`` stands for (see the module docstring); :class:`SpecError`
    (or :class:`UnknownResourceType`) naming the file, line or address and what to do."""
    if "format" not in spec:
        if is_plan(spec):
            return plan_to_spec(spec)
        if is_manifest(spec):
            return manifests_to_spec([spec])
        return spec
    fmt = spec["format"]
    if fmt not in FORMATS:
        raise SpecError(f"format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    unknown = sorted(set(spec) - _INPUT_KEYS)
    if unknown:
        raise SpecError(f"a {fmt} input has unknown keys {unknown}; allowed: {', '.join(sorted(_INPUT_KEYS))}")
    files = spec.get("files")
    if not isinstance(files, Mapping) or not files or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise SpecError(f"a {fmt} input needs 'files': a non-empty mapping of file name to its text")
    variables = spec.get("variables") or {}
    if not isinstance(variables, Mapping) or (variables and fmt != "hcl"):
        raise SpecError("'variables' is a mapping of name to value, and only for format hcl")
    if fmt == "hcl":
        native = hcl_to_spec(files, variables)
    elif fmt == "terraform-plan":
        if len(files) != 1:
            raise SpecError("a terraform-plan input holds one file: the output of `terraform show -json PLANFILE`")
        ((name, text),) = files.items()
        native = plan_to_spec(_json(name, text), source=name)
    else:
        native = manifests_to_spec(_yaml_documents(files), source=", ".join(sorted(files)))
    return {**native, **{k: spec[k] for k in _PASSED if k in spec}}


def _json(name: str, text: str) -> dict[str, Any]:
    try:
        jsonbounds.check(text.encode("utf-8", "surrogatepass"), what=name)
        doc = json.loads(text)
    except InvalidEvent as exc:
        raise SpecError(f"{name}: {exc}") from None
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        where = f" line {line}" if line else ""
        raise SpecError(f"{name}{where} is not valid JSON: {exc}; give the output of `terraform show -json PLANFILE`") from None
    if not isinstance(doc, dict) or not is_plan(doc):
        raise SpecError(f"{name} is not a terraform plan in JSON (no format_version and resource_changes); "
                        "give the output of `terraform show -json PLANFILE`")
    return doc


def _yaml_documents(files: Mapping[str, str]) -> list[Any]:
    docs: list[Any] = []
    for name in sorted(files):
        try:
            docs += parse_documents(files[name])
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise SpecError(f"{name}{where} is not valid YAML: {exc}") from None
    return docs
