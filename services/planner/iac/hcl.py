"""Terraform / OpenTofu configuration (``.tf`` files, parsed with ``python-hcl2``) → a native spec document.

Each ``resource`` block becomes its catalog resource (:mod:`services.planner.iac.tfmap`).
Resolved here: variables (the given ``variables``, from ``--var`` / ``--var-file``, else the
declaration's ``default``), ``locals``, string templates (``"acme-${var.env}"``), references to
another resource's configured attribute (``aws_sqs_queue.jobs.name``; ``.id`` where Terraform's id
is the name), each of which, like ``depends_on``, becomes an edge of the plan's DAG; ``count`` of
a known number (``count.index`` in the names); a provider's ``region`` (the AWS resources' target).
Refused, naming the construct and ``file:line``: ``data`` sources, ``module`` calls, function calls, provider aliases,
``for_each``, ``dynamic`` blocks, provisioners, values known only after apply (``.arn``), missing
variables, and every resource type the catalog does not have (all at once). Pure: text in, spec out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.planner.errors import SpecError
from services.planner.iac.tfmap import (
    TYPES,
    fields_set,
    merge_settings,
    name_of,
    refuse_unsupported,
    with_region,
)

_IGNORED_BLOCKS = frozenset({"terraform", "output", "moved", "import", "removed", "check"})
_META_ARGS = frozenset({"depends_on", "count", "lifecycle"})
_REFUSED_ARGS = {"for_each": "for_each", "dynamic": "a dynamic block", "provisioner": "a provisioner",
                 "connection": "a connection block", "provider": "a provider alias"}
# Terraform types whose ``id`` is the name UPM knows them by.
_ID_IS = {"aws_s3_bucket": "bucket", "aws_iam_role": "name", "aws_dynamodb_table": "name",
          "postgresql_database": "name", "postgresql_role": "name"}
_REF = re.compile(r"([a-z][a-z0-9_]*)\.([A-Za-z_][\w-]*)(?:\[(\d+)\])?(?:\.([A-Za-z_]\w*))?")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


@dataclass
class _Resource:
    type: str
    name: str
    body: Mapping[str, Any]
    where: str
    index: int | None = None

    @property
    def address(self) -> str:
        return f"{self.type}.{self.name}" + ("" if self.index is None else f"[{self.index}]")


@dataclass
class _Config:
    declared: dict[str, tuple[Mapping[str, Any], str]] = field(default_factory=dict)
    locals: dict[str, tuple[Any, str]] = field(default_factory=dict)
    resources: list[_Resource] = field(default_factory=list)
    regions: dict[str, Any] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def hcl_to_spec(files: Mapping[str, str], variables: Mapping[str, Any]) -> dict[str, Any]:
    """The native spec document for the ``.tf`` ``files`` (name → text) with ``variables``."""
    config = _Config()
    for name in sorted(files):
        _collect(config, name, files[name])
    refuse_unsupported(
        sorted({(r.type, f"{r.where}: resource {r.type}.{r.name}") for r in config.resources if r.type not in TYPES}),
        "resource types in the configuration",
        sorted(TYPES),
    )
    if config.refused:
        raise SpecError(
            f"{len(config.refused)} construct(s) UPM cannot resolve, so nothing was planned: "
            + "; ".join(config.refused)
        )
    ev = _Evaluator(config, _variables(config, variables))
    region = ev.value(config.regions["aws"][0], config.regions["aws"][1]) if "aws" in config.regions else None
    resources: list[dict[str, Any]] = []
    settings: list[dict[str, Any]] = []
    notes: list[str] = []
    for res in _expand(config.resources, ev):
        entry, deps = ev.resource(res)
        entry = with_region(entry, region)
        if deps:
            entry["depends_on"] = sorted(deps)
        setting = TYPES[res.type].setting
        (settings if setting else resources).append(entry)
        what = f"set {fields_set(entry)} of" if setting else "create"
        notes.append(f"from {res.address} ({res.where}): {what} {name_of(entry['type'], entry)}")
    if not resources and not settings:
        raise SpecError(f"{', '.join(sorted(files))} hold no resource block; nothing to plan")
    return {"resources": merge_settings(resources, settings), "notes": notes}


def _collect(config: _Config, file: str, text: str) -> None:
    doc = _parse(text, file)
    lines = text.splitlines()
    for kind, items in doc.items():
        for item in items if isinstance(items, list) else [items]:
            if kind == "locals":
                for key, value in item.items():
                    if key != "__is_block__":
                        config.locals[key] = (value, f"{file}:{_line(lines, 'locals')}")
                continue
            for label, body in item.items():
                _block(config, file, lines, kind, _unquote(label), body)


def _parse(text: str, file: str) -> dict[str, Any]:
    """``text`` parsed by python-hcl2 (imported here: it builds its grammar on first use)."""
    import hcl2
    from lark.exceptions import LarkError, UnexpectedInput

    try:
        doc: dict[str, Any] = hcl2.loads(text)
    except UnexpectedInput as exc:
        raise SpecError(
            f"{file}:{exc.line}:{exc.column} is not valid HCL ({type(exc).__name__}); fix the syntax "
            "(`terraform validate` names it too)"
        ) from None
    except (LarkError, ValueError) as exc:
        raise SpecError(f"{file} is not valid HCL: {str(exc).splitlines()[0]}") from None
    return doc


def _block(config: _Config, file: str, lines: list[str], kind: str, label: str, body: Any) -> None:
    if kind in _IGNORED_BLOCKS:
        return
    if kind == "variable":
        config.declared[label] = (body, f"{file}:{_line(lines, 'variable', label)}")
        return
    if kind == "provider":
        if isinstance(body, Mapping) and "region" in body and "alias" not in body:
            config.regions[label] = (body["region"], f"{file}:{_line(lines, 'provider', label)}")
        return
    if kind == "data":
        for name in body:
            where = f"{file}:{_line(lines, 'data', label, _unquote(name))}"
            config.refused.append(f"{where}: data source data.{label}.{_unquote(name)} (UPM plans from known values; "
                                  "write the value in the configuration or pass it with --var)")
        return
    if kind == "module":
        config.refused.append(f"{file}:{_line(lines, 'module', label)}: module {label!r} (modules are not expanded; "
                              "plan the module's resources directly, or give `terraform show -json` of a plan)")
        return
    if kind != "resource":
        config.refused.append(f"{file}:{_line(lines, kind, label)}: a {kind!r} block (not a Terraform construct UPM knows)")
        return
    for raw_name, resource_body in body.items():
        name = _unquote(raw_name)
        where = f"{file}:{_line(lines, 'resource', label, name)}"
        for arg, what in _REFUSED_ARGS.items():
            if arg in resource_body:
                config.refused.append(f"{where}: {what} in resource {label}.{name} (write each instance out)")
        config.resources.append(_Resource(label, name, resource_body, where))


def _line(lines: list[str], kind: str, *labels: str) -> int:
    """The line where the block ``kind "label"…`` starts (1-based; 0 when not found)."""
    pattern = re.compile(r"\s*" + re.escape(kind) + "".join(rf'\s+"?{re.escape(label)}"?' for label in labels)
                         + r"\s*\{")
    return next((n for n, text in enumerate(lines, start=1) if pattern.match(text)), 0)


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _variables(config: _Config, given: Mapping[str, Any]) -> dict[str, Any]:
    undeclared = sorted(set(given) - set(config.declared))
    if undeclared:
        raise SpecError(f"variable(s) {', '.join(undeclared)} given but not declared in the configuration; "
                        "declare them (variable \"NAME\" {}) or drop the --var")
    out: dict[str, Any] = {}
    missing = []
    for name, (body, where) in sorted(config.declared.items()):
        if name in given:
            out[name] = _typed(given[name], body.get("type") if isinstance(body, Mapping) else None, name, where)
        elif isinstance(body, Mapping) and "default" in body:
            out[name] = _Evaluator(config, {}).value(body["default"], where)
        else:
            missing.append(f"{name} ({where})")
    if missing:
        raise SpecError(f"variable(s) without a value: {', '.join(missing)}; give --var NAME=VALUE, "
                        "a --var-file FILE.tfvars, or a default in the declaration")
    return out


def _typed(value: Any, declared: Any, name: str, where: str) -> Any:
    if not isinstance(value, str) or declared not in ("number", "bool"):
        return value
    if declared == "bool" and value in ("true", "false"):
        return value == "true"
    if declared == "number" and _NUMBER.fullmatch(value):
        return float(value) if "." in value else int(value)
    raise SpecError(f"variable {name} ({where}) is a {declared}, not {value!r}")


def _expand(resources: list[_Resource], ev: _Evaluator) -> list[_Resource]:
    out: list[_Resource] = []
    for res in resources:
        if "count" not in res.body:
            out.append(res)
            continue
        count = ev.value(res.body["count"], res.where)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise SpecError(f"{res.where}: count of {res.address} is {count!r}, not a whole number UPM can expand")
        out += [_Resource(res.type, res.name, res.body, res.where, i) for i in range(count)]
    return out


class _Evaluator:
    """Values of HCL expressions (as python-hcl2 8 writes them) with variables, locals and references."""

    def __init__(self, config: _Config, variables: Mapping[str, Any]) -> None:
        self.config = config
        self.variables = variables
        self.by_name = {(r.type, r.name): r for r in config.resources}
        self.deps: set[str] = set()
        self.index: int | None = None
        self._locals: dict[str, Any] = {}
        self._stack: list[str] = []

    def resource(self, res: _Resource) -> tuple[dict[str, Any], set[str]]:
        """The native spec entry of ``res`` and the ``type:name`` references it depends on."""
        self.deps, self.index = set(), res.index
        attrs = {k: self.value(v, f"{res.where} {res.address}.{k}") for k, v in res.body.items()
                 if k not in _META_ARGS and k != "__is_block__"}
        for ref in res.body.get("depends_on") or []:
            self._reference(str(ref).removeprefix("${").removesuffix("}"), f"{res.where} {res.address}", value=False)
        tf = TYPES[res.type]
        entry = {"type": tf.upm, **tf.translate(attrs, f"{res.where}: {res.address}")}
        deps = self.deps - {name_of(entry["type"], entry)}
        return entry, deps

    def value(self, raw: Any, where: str) -> Any:
        if isinstance(raw, Mapping):
            return {_unquote(str(k)): self.value(v, where) for k, v in raw.items() if k != "__is_block__"}
        if isinstance(raw, list):
            return [self.value(v, where) for v in raw]
        if not isinstance(raw, str):
            return raw
        if raw.startswith('"<<') and raw.endswith('"'):
            return self._template(_heredoc(raw[1:-1]), where)
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            return self._template(raw[1:-1], where)
        if raw.startswith("${") and raw.endswith("}"):
            return self._expression(raw[2:-1].strip(), where)
        return self._expression(raw, where)

    def _template(self, text: str, where: str) -> Any:
        parts = re.split(r"(?<!\$)\$\{([^{}]*)\}", text)
        if len(parts) == 3 and parts[0] == parts[2] == "":
            return self._expression(parts[1].strip(), where)
        out = []
        for i, part in enumerate(parts):
            if i % 2:
                value = self._expression(part.strip(), where)
                out.append(str(value).lower() if isinstance(value, bool) else str(value))
            else:
                out.append(part.replace("$${", "${").replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
        return "".join(out)

    def _expression(self, expr: str, where: str) -> Any:
        if expr in ("true", "false"):
            return expr == "true"
        if expr == "null":
            return None
        if _NUMBER.fullmatch(expr):
            return float(expr) if "." in expr else int(expr)
        if expr.startswith('"') and expr.endswith('"'):
            return self._template(expr[1:-1], where)
        if expr == "count.index" and self.index is not None:
            return self.index
        head = expr.split(".", 1)[0].split("(", 1)[0]
        if "(" in expr:
            raise SpecError(f"{where}: the function call {expr!r} (UPM does not evaluate functions, "
                            f"{head}() included); write the value, or pass it with --var")
        if head in ("var", "local") and "." in expr:
            name, *path = expr.split(".")[1:]
            if head == "var" and name not in self.variables:
                raise SpecError(f"{where}: var.{name} is not declared; add variable \"{name}\" {{}} and give a value")
            return _walk(self.variables[name] if head == "var" else self._local(name, where), path, expr, where)
        if head in ("data", "module", "each", "count", "path", "terraform", "self"):
            what = {"data": "a data source", "module": "a module output", "each": "for_each"}.get(head, head)
            raise SpecError(f"{where}: {expr!r} refers to {what}, which UPM cannot resolve before apply; "
                            "write the value, or pass it with --var")
        if _REF.fullmatch(expr):
            return self._reference(expr, where)
        raise SpecError(f"{where}: the expression {expr!r} is more than UPM resolves (variables, locals, "
                        "string templates and resource.name.attribute references); write the value")

    def _local(self, name: str, where: str) -> Any:
        if name in self._locals:
            return self._locals[name]
        if name not in self.config.locals:
            raise SpecError(f"{where}: local.{name} is not defined in a locals block")
        if name in self._stack:
            raise SpecError(f"{where}: locals refer to each other in a loop: {' -> '.join([*self._stack, name])}")
        self._stack.append(name)
        raw, at = self.config.locals[name]
        self._locals[name] = self.value(raw, f"{at} local.{name}")
        self._stack.pop()
        return self._locals[name]

    def _reference(self, expr: str, where: str, *, value: bool = True) -> Any:
        match = _REF.fullmatch(expr)
        target = self.by_name.get((match.group(1), match.group(2))) if match else None
        if match is None or target is None:
            raise SpecError(f"{where}: {expr!r} names no resource of this configuration")
        attr = match.group(4) or "id"
        if not value and match.group(4):
            raise SpecError(f"{where}: depends_on lists resources ({target.type}.{target.name}), not {expr!r}")
        saved, self.index = self.index, int(match.group(3)) if match.group(3) else None
        try:
            values = self._configured(target, where)
        finally:
            self.index = saved
        tf = TYPES.get(target.type)
        if tf is not None:
            self.deps.add(name_of(tf.upm, tf.translate(values, f"{target.where}: {target.address}")))
        if not value:
            return None
        key = _ID_IS.get(target.type) if attr == "id" else attr
        if key is None or key not in values:
            raise SpecError(f"{where}: {expr} is known only after apply, and UPM plans exact commands; "
                            f"refer to an attribute the configuration sets (e.g. {target.type}.{target.name}."
                            f"{_ID_IS.get(target.type, 'name')}), or keep the reference only in depends_on")
        return values[key]

    def _configured(self, target: _Resource, where: str) -> dict[str, Any]:
        key = f"resource {target.type}.{target.name}"
        if key in self._stack:
            raise SpecError(f"{where}: resources refer to each other in a loop: {' -> '.join([*self._stack, key])}")
        self._stack.append(key)
        saved = self.deps
        try:
            return {k: self.value(v, f"{target.where} {target.address}.{k}") for k, v in target.body.items()
                    if k not in _META_ARGS and k != "__is_block__"}
        finally:
            self.deps = saved
            self._stack.pop()



def _heredoc(text: str) -> str:
    """The body of ``<<ID`` / ``<<-ID`` … ``ID`` (``<<-`` drops the common indentation, as Terraform does)."""
    lines = text.splitlines()[1:-1]
    if text.startswith("<<-"):
        indent = min((len(x) - len(x.lstrip(" \t")) for x in lines if x.strip()), default=0)
        lines = [x[indent:] for x in lines]
    return "".join(x + "\n" for x in lines)


def _walk(value: Any, path: list[str], expr: str, where: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            raise SpecError(f"{where}: {expr} has no {key!r}")
        value = value[key]
    return value


def tfvars_values(text: str, file: str) -> dict[str, Any]:
    """The variable values a ``.tfvars`` file sets (literal values only)."""
    doc = _parse(text, file)
    ev = _Evaluator(_Config(), {})
    return {k: ev.value(v, f"{file} {k}") for k, v in doc.items() if k != "__is_block__"}
