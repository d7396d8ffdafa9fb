"""The compiler: an :class:`Intent` (from a request or a spec) → a sealed, deterministic :class:`Plan`.

Steps: resolve each resource intent to nodes (one per target), add facets (one step per owned
setting), apply the variant (blue-green rewrites deployments), resolve dependencies (edges to
resources in the plan; implied resources added; the rest become ``resources_needed``), assign
waves, order topologically (tie-break: wave, target rank, key), then render each node's commands.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections import deque
from datetime import datetime
from typing import Any

import msgspec

from events.codec import canonical_json
from events.plan import (
    Action,
    Annotations,
    Impact,
    Plan,
    Prerequisite,
    ResourceRef,
    seal,
)
from providers import CATALOG, TARGET_RULES, ResourceType, facets_of
from providers.base import command, is_set
from providers.errors import ProviderError
from providers.k8s import kubectl
from services.planner.assemble import assemble
from services.planner.config import DEFAULT_CONFIG, PlannerConfig
from services.planner.errors import (
    ConflictingActions,
    InputError,
    InvalidFieldValue,
    MissingRequiredField,
    SpecError,
    UnknownResourceType,
    UnsupportedAction,
    VariantError,
)
from services.planner.model import VARIANTS, Intent, ResourceIntent
from services.planner.nl import parse_request, suggest
from services.planner.nodes import Node, as_plan_error, make_key, validate
from services.planner.spec import spec_to_intent
from services.planner.variants import blue_green, waves_for


class CompileInput(msgspec.Struct, frozen=True, kw_only=True):
    """What to compile: a natural-language ``request`` or a ``spec`` document, plus annotations."""

    request: str | None = None
    spec: dict[str, Any] | None = None
    tenant: str = "default"
    initiator: str = ""
    reason: str = ""
    window: str | None = None
    variant: str | None = None


def compile_intent(inp: CompileInput, config: PlannerConfig = DEFAULT_CONFIG) -> Plan:
    """Compile ``inp`` into a sealed plan, or raise a :class:`~services.planner.errors.PlanError`."""
    if (inp.request is None) == (inp.spec is None):
        raise InputError("give exactly one of a request (natural language) or a spec (declarative)")
    if inp.request is not None:
        intent = parse_request(inp.request)
        request = inp.request.strip()
    else:
        assert inp.spec is not None
        intent = spec_to_intent(inp.spec)
        request = str(inp.spec.get("request", ""))
    variant = inp.variant or intent.variant or config.variant
    if variant not in VARIANTS:
        raise VariantError(f"variant {variant!r} is unknown; use one of {', '.join(VARIANTS)}")
    window = inp.window or intent.window
    _check_window(window)
    compiler = _Compiler(config)
    compiler.add_all(intent)
    if variant == "blue-green":
        blue_green(compiler.nodes, compiler.make, compiler.put)
    compiler.expand()
    rollout = compiler.rollout_targets(intent)
    wave_names = waves_for(variant, rollout, compiler.nodes, config)
    annotations = Annotations(
        initiator=inp.initiator or intent.initiator,
        reason=inp.reason or intent.reason,
        window=window,
        impact=Impact(notes=(*intent.notes, *sorted(set(compiler.assumed)))),
    )
    plan = assemble(
        compiler.nodes,
        compiler.edges,
        compiler.needed,
        config,
        request,
        inp.tenant,
        variant,
        rollout,
        wave_names,
        annotations,
    )
    return _with_notes(plan, intent.notes)


def _with_notes(plan: Plan, notes: tuple[str, ...]) -> Plan:
    """``plan`` with the spec's ``notes`` (where a translated resource came from) after its impact notes."""
    if not notes:
        return plan
    impact = msgspec.structs.replace(plan.annotations.impact, notes=plan.annotations.impact.notes + notes)
    return seal(msgspec.structs.replace(plan, annotations=msgspec.structs.replace(plan.annotations, impact=impact)))


def _check_window(window: str | None) -> None:
    if window is None:
        return
    parts = window.split("/")
    try:
        start, end = (datetime.fromisoformat(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        start = end = None
    if start is None or end is None or (start.tzinfo is None) != (end.tzinfo is None) or end <= start:
        raise InputError(
            f"window {window!r} is not START/END in ISO 8601 with END after START, "
            "e.g. 2025-10-09T22:00Z/2025-10-10T02:00Z"
        )


class _Compiler:
    def __init__(self, config: PlannerConfig) -> None:
        self.config = config
        self.context = config.context()
        self.defaults: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, Node] = {}
        self.edges: set[tuple[str, str]] = set()
        self.needed: dict[str, Prerequisite] = {}
        self.explicit: list[tuple[Node, tuple[str, ...]]] = []
        self.multi: list[tuple[bytes, tuple[str, ...]]] = []
        self.added: list[str] = []
        self.clusters: list[Node] = []
        self.assumed: list[str] = []
        self.unset = config.unset()

    # -- intake ---------------------------------------------------------------------------

    def add_all(self, intent: Intent) -> None:
        for item in intent.resources:
            rtype = CATALOG.get(item.type)
            if rtype is None or rtype.facet_of:
                raise UnknownResourceType(_unknown_type(item.type, rtype))
            targets = self._targets(rtype, item, intent)
            pattern, rule = TARGET_RULES[rtype.provider]
            for target in targets:
                if rtype.fixed_target is None and not re.fullmatch(pattern, target):
                    raise InvalidFieldValue(f"{target!r} is not a valid target for {rtype.name}: use {rule}")
            if len(targets) > 1:
                self.multi.append((canonical_json([item.type, item.fields]), targets))
            for target in targets:
                node = self.put(self.make(rtype, item.action, target, item.fields))
                if item.depends_on:
                    self.explicit.append((node, item.depends_on))
            self._assume(rtype, item, intent, node)

    def _assume(self, rtype: ResourceType, item: ResourceIntent, intent: Intent, node: Node) -> None:
        """Note every default applied to ``item``: the plan lists them as assumptions."""
        label = f"{rtype.name} {node.name}"
        if (
            not item.targets
            and rtype.fixed_target is None
            and rtype.provider != "local"
            and not (rtype.cluster_bound and intent.targets)
        ):
            where = ", ".join(self.config.default_target(rtype.provider))
            self.assumed.append(f"{label}: target {where} assumed (planner config default)")
        for spec in rtype.fields:
            value = node.values.get(spec.name)
            if spec.name not in item.fields and is_set(value):
                self.assumed.append(f"{label}: {spec.name} {value!r} assumed (default)")
        for var, key in self.unset:
            if any(f"{{{var}}}" in token for token in _templates(rtype, node.action)):
                raise MissingRequiredField(
                    f"{label}: {rtype.name} {node.action} needs {key}, which has no safe default; set it in "
                    f"the planner configuration (upm plan --config FILE with '{key}: …'; "
                    "see services/planner/README.md)"
                )

    def _targets(self, rtype: ResourceType, item: ResourceIntent, intent: Intent) -> tuple[str, ...]:
        if rtype.fixed_target is not None:
            return (rtype.fixed_target,)
        if item.targets:
            return item.targets
        if rtype.cluster_bound and intent.targets:
            return intent.targets
        return self.config.default_target(rtype.provider)

    def make(
        self, rtype: ResourceType, action: Action, target: str, fields: dict[str, Any], **kw: Any
    ) -> Node:
        """A validated node (fields checked for ``action``, config defaults and context applied)."""
        defaults = self.defaults.get(rtype.name)
        if defaults is None:
            given = self.config.provider_defaults(rtype.provider)
            defaults = self.defaults[rtype.name] = {k: v for k, v in given.items() if k in rtype.field_names}
        values = validate(rtype, {**defaults, **fields}, action)
        try:
            return Node(
                rtype=rtype,
                action=action,
                target=target,
                values=values,
                given=frozenset(fields),
                context=self.context,
                **kw,
            )
        except ProviderError as exc:
            raise as_plan_error(rtype, exc) from None

    def put(self, node: Node) -> Node:
        """Add ``node``; the same resource twice must be asked for identically."""
        old = self.nodes.get(node.key)
        if old is None:
            self.nodes[node.key] = node
            self.added.append(node.key)
            return node
        if old.action == node.action and old.values == node.values and old.extra == node.extra:
            old.given |= node.given
            old.implied = old.implied and node.implied
            return old
        what = "both " + " and ".join(sorted({old.action + "d", node.action + "d"}))
        if old.action == node.action:
            what = f"{node.action}d twice with different fields"
        raise ConflictingActions(
            f"{node.rtype.name} {node.name} on {node.target} is {what} in this request; "
            "ask for one action per resource (split the change in two if you need both)"
        )

    # -- expansion ------------------------------------------------------------------------

    def expand(self) -> None:
        for node in list(self.nodes.values()):
            if node.parent is None:
                self._facets(node)
        self.clusters = [
            n
            for n in self.nodes.values()
            if n.rtype.name == "az_aks" and n.action != "update" and n.parent is None
        ]
        queue = deque(sorted(self.nodes))
        while queue:
            count = len(self.added)
            self._requirements(self.nodes[queue.popleft()])
            queue.extend(sorted(self.added[count:]))
        for node, refs in self.explicit:
            for ref in refs:
                self._link(self._resolve(node, ref), node)

    def _facets(self, node: Node) -> None:
        facets = facets_of(node.rtype.name)
        own = {"create": node.rtype.create, "update": node.rtype.update, "delete": node.rtype.delete}[
            node.action
        ]
        if node.action == "create":
            chosen = [f for f in facets if f.on_create and is_set(node.values.get(f.facet_field))]
        elif node.action == "update":
            chosen = [f for f in facets if f.facet_field in node.given]
            owned = {name for f in chosen for name in (f.facet_field, *f.state)}
            # done by its facets alone when it names nothing else (own update would reset the rest to defaults)
            node.virtual = own is None or (bool(chosen) and not node.given - owned - set(node.rtype.ident_fields))
        else:
            chosen = []
        if own is None and not chosen:
            changeable = sorted({f.facet_field for f in facets})
            hint = (
                f"change one of: {', '.join(changeable)}" if changeable else "delete and re-create it instead"
            )
            raise UnsupportedAction(f"{node.rtype.name} cannot be {node.action}d in place; {hint}")
        for facet in chosen:
            child = self.put(
                Node(
                    rtype=facet,
                    action=node.action,
                    target=node.target,
                    values=node.values,
                    given=node.given,
                    extra=node.extra,
                    context=node.context,
                    implied=node.implied,
                    parent=node.key,
                    wave=node.wave,
                    depends_on=node.depends_on,
                )
            )
            if not node.virtual:
                self.edges.add((node.key, child.key))

    def _requirements(self, node: Node) -> None:
        if node.virtual:
            return
        if node.rtype.cluster_bound:
            self._cluster(node)
        if node.action == "update":
            self._exists_before(node)
            return
        for req in node.rtype.requires:
            if req.skip is not None and req.skip(node.variables):
                continue
            wanted = {other: node.variables.get(mine) for other, mine in req.match.items()}
            if not all(is_set(v) for v in wanted.values()):
                continue
            rtype = CATALOG[req.type]
            target = rtype.fixed_target or node.target
            fields = {**wanted, **{o: node.variables.get(m) for o, m in req.implied_fields.items()}}
            probe: Action = "create" if req.implied else "update"
            dep = self.make(rtype, probe, target, fields, implied=True, implied_by=node.key)
            keys = (dep.key, *(make_key(other, dep.target, dep.name) for other in req.satisfied_by))
            present = next((self.nodes[k] for k in keys if k in self.nodes), None)
            if present is not None:
                self._link(present, node)
            elif req.implied and node.action != "delete":
                self._link(self.put(dep), node)
            else:
                self._need(dep, f"needed by {node.label}")

    def _exists_before(self, node: Node) -> None:
        base = self.nodes.get(node.parent) if node.parent else node
        assert base is not None
        if base.action == "create" and not base.virtual:
            return
        self._need(base, f"{node.label} changes it in place")

    def _cluster(self, node: Node) -> None:
        clusters = [n for n in self.clusters if n.values["name"] == node.target or node.target == "default"]
        if len(clusters) == 1:
            self._link(clusters[0], node)
            return
        ref = ResourceRef(
            provider="k8s",
            type="k8s_cluster",
            name=node.target,
            target=node.target,
            key=make_key("k8s_cluster", node.target, node.target),
        )
        check = command(kubectl("cluster-info"), {"context": "" if node.target == "default" else node.target})
        assert check is not None
        self.needed.setdefault(
            ref.key,
            Prerequisite(
                resource=ref,
                check=check,
                hint=f"cluster context {node.target!r} must be reachable with kubectl-1.29 "
                "(or create the AKS cluster in the same request)",
            ),
        )

    def _need(self, node: Node, why: str) -> None:
        check = command(node.rtype.exists or node.rtype.readback, node.variables)
        assert check is not None
        self.needed.setdefault(
            node.key,
            Prerequisite(
                resource=node.ref,
                check=check,
                hint=f"{node.rtype.name} {node.name} must already exist on {node.target} ({why}); "
                "create it first or add it to this request",
            ),
        )

    def _link(self, dep: Node, node: Node) -> None:
        if dep.key == node.key:
            return
        if dep.action == "delete" and node.action != "delete":
            raise ConflictingActions(
                f"{node.label} needs {dep.rtype.name} {dep.name}, which this request deletes; "
                "drop the delete or the change that depends on it"
            )
        if dep.virtual:
            return
        self.edges.add((node.key, dep.key) if dep.action == node.action == "delete" else (dep.key, node.key))

    def _resolve(self, node: Node, ref: str) -> Node:
        parts = ref.split(":", 2)
        if len(parts) == 3 and make_key(*parts) in self.nodes:
            return self.nodes[make_key(*parts)]
        if len(parts) >= 2:
            type_name, name = parts[0], ref.split(":", 1)[1]
            hits = [n for n in self.nodes.values() if n.rtype.name == type_name and n.name == name]
            same = [n for n in hits if n.target == node.target]
            if same or len(hits) == 1:
                return (same or hits)[0]
        raise SpecError(
            f"depends_on {ref!r} of {node.label} matches no resource of this spec; "
            "write type:name (or type:target:name) of a resource listed under resources"
        )

    # -- output ---------------------------------------------------------------------------

    def rollout_targets(self, intent: Intent) -> tuple[str, ...]:
        """The targets in rollout order: as the request names them, else as multi-target resources
        list them (resources taken in a canonical order, so reordering a spec changes nothing)."""
        if intent.targets:
            return intent.targets
        return tuple(dict.fromkeys(t for _, targets in sorted(self.multi) for t in targets))


def _templates(rtype: ResourceType, action: Action) -> tuple[Any, ...]:
    """The template tokens a step of ``action`` on ``rtype`` renders (its command and read-back)."""
    template = {"create": rtype.create, "update": rtype.update, "delete": rtype.delete}[action]
    return (*(template or ()), *(rtype.readback or ()))


def _unknown_type(name: str, rtype: ResourceType | None) -> str:
    if rtype is not None:
        return f"{name} is a setting of {', '.join(rtype.facet_of)}: set its field {rtype.facet_field!r} there instead"
    public = sorted(n for n, t in CATALOG.items() if not t.facet_of and t.nouns)
    close = suggest(name, public)
    hint = f"; did you mean {close}?" if close else ""
    return f"unknown resource type {name!r}{hint} Known types: {', '.join(public)}"
