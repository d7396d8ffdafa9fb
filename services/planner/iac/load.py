"""Reading ``--file`` for ``upm plan`` / ``upm submit``: a native spec, or infrastructure code by content.

A directory or a ``.tf`` file is HCL (every ``*.tf`` of the directory, not its subdirectories); a
JSON document with ``format_version`` and ``resource_changes`` is a Terraform plan; YAML with
several documents, or one holding ``apiVersion`` and ``kind``, is Kubernetes manifests; anything
else is a native spec (:func:`services.planner.spec.load_spec`). Infrastructure code becomes an
input document (``{format, files: {name: original text}, variables}``, see
:mod:`services.planner.iac`) so the intent, and with it the evidence pack, keeps the original text.
Each file is a bounded regular UTF-8 file, scanned for secrets before it is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from events import jsonbounds
from events.errors import InvalidEvent
from services.common.configfile import parse_documents, read_text
from services.planner.errors import SpecError
from services.planner.iac.hcl import tfvars_values
from services.planner.iac.manifests import is_manifest
from services.planner.iac.terraform_plan import is_plan
from services.planner.spec import load_spec, no_secrets


def load_input(path: str | Path, variables: Sequence[str] = (), var_files: Sequence[str] = ()) -> dict[str, Any]:
    """The spec document ``path`` holds (see the module docstring); ``variables`` (``NAME=VALUE``)
    and ``var_files`` (``.tfvars`` / ``.tfvars.json``) are for HCL only."""
    file = Path(path)
    if file.is_dir() or file.suffix == ".tf":
        tf = sorted(file.glob("*.tf")) if file.is_dir() else [file]
        if not tf:
            raise SpecError(f"spec file {file} is not a regular file and holds no .tf file; give a spec file, "
                            "a .tf file or a directory of .tf files")
        return {"format": "hcl", "files": {p.name: _text(p) for p in tf},
                "variables": _variables(variables, var_files)}
    text = _text(file)
    fmt = _detect(file, text)
    if variables or var_files:
        raise SpecError("--var and --var-file are for Terraform configuration (.tf files or a directory of them)")
    if fmt is None:
        return load_spec(file)
    return {"format": fmt, "files": {file.name: text}}


def _text(file: Path) -> str:
    text = read_text(file, what="spec file", error=SpecError)
    no_secrets(text, file)
    return text


def _detect(file: Path, text: str) -> str | None:
    if file.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            jsonbounds.check(text.encode("utf-8", "surrogatepass"), what="the file")
            doc = json.loads(text)
        except (InvalidEvent, ValueError):
            return None  # load_spec names what is wrong, and where
        return "terraform-plan" if isinstance(doc, dict) and is_plan(doc) else None
    try:
        docs = [d for d in parse_documents(text) if d is not None]
    except yaml.YAMLError:
        return None  # load_spec names the line
    if len(docs) > 1 or (docs and isinstance(docs[0], dict) and is_manifest(docs[0])):
        return "kubernetes"
    return None


def _variables(given: Sequence[str], var_files: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in var_files:
        path = Path(name)
        text = _text(path)
        if path.name.endswith(".json"):
            try:
                values = json.loads(text)
            except ValueError as exc:
                raise SpecError(f"--var-file {path} is not valid JSON: {exc}") from None
            if not isinstance(values, dict):
                raise SpecError(f"--var-file {path} must hold an object of NAME: VALUE")
        else:
            values = tfvars_values(text, str(path))
        out.update(values)
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SpecError(f"--var {item!r} is not NAME=VALUE, e.g. --var env=prod")
        out[name.strip()] = value
    return out
