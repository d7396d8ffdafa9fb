"""Property tests: any valid spec compiles to a plan whose order respects every dependency and
whose rollback is the reverse-ordered inverse of its steps; resource order never matters."""

from __future__ import annotations

import itertools
import shlex
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from events.plan import Plan, plan_digest
from services.planner import CompileInput, compile_intent
from tests.planner.keyed import KEYED

_META = (";", "&&", "||", "\\", "$(", "`", "<", ">", "\n")
_names = st.sampled_from(["alpha", "beta", "gamma", "delta"])


@st.composite
def resources(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def add(item: dict[str, Any]) -> None:
        key = item["type"] + ":" + str(item.get("name") or item.get("path") or item.get("role"))
        out.setdefault(key, item)

    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        kind = draw(
            st.sampled_from(
                [
                    "dir",
                    "file",
                    "link",
                    "ns",
                    "deploy",
                    "cm",
                    "db",
                    "role",
                    "grant",
                    "schema",
                    "bucket",
                    "queue",
                    "table",
                    "iam",
                    "attach",
                    "aks",
                ]
            )
        )
        name = draw(_names)
        mode = draw(st.sampled_from(["0700", "0750", "0755"]))
        if kind == "dir":
            add({"type": "local_directory", "path": f"/srv/{name}", "mode": mode})
            if draw(st.booleans()):
                add({"type": "local_directory", "path": f"/srv/{name}/sub", "mode": mode})
        elif kind == "file":
            add({"type": "local_file", "path": f"/srv/{name}/f.txt", "content": draw(st.text(max_size=20))})
        elif kind == "link":
            add({"type": "local_symlink", "path": f"/srv/{name}-link", "target": f"/srv/{name}"})
        elif kind == "ns":
            add({"type": "k8s_namespace", "name": name})
        elif kind == "deploy":
            add(
                {
                    "type": "k8s_deployment",
                    "name": "web",
                    "namespace": name,
                    "image": "nginx:1.27",
                    "replicas": draw(st.integers(min_value=0, max_value=5)),
                }
            )
        elif kind == "cm":
            add({"type": "k8s_configmap", "name": "cfg", "namespace": name, "data": {"k": name}})
        elif kind == "db":
            add({"type": "pg_database", "name": name, **({"owner": "owner"} if draw(st.booleans()) else {})})
        elif kind == "role":
            add({"type": "pg_role", "name": name, "login": draw(st.booleans())})
        elif kind == "grant":
            add(
                {
                    "type": "pg_grant",
                    "role": name,
                    "database": "orders",
                    "privilege": draw(st.sampled_from(["read", "write", "all"])),
                }
            )
        elif kind == "schema":
            add({"type": "pg_schema", "name": name, "database": "orders"})
        elif kind == "bucket":
            add(
                {
                    "type": "aws_s3_bucket",
                    "name": f"logs-{name}",
                    "versioning": draw(st.booleans()),
                    "tags": {"team": name},
                }
            )
        elif kind == "queue":
            add({"type": "aws_sqs_queue", "name": name})
        elif kind == "table":
            add({"type": "aws_dynamodb_table", "name": f"t-{name}"})
        elif kind == "iam":
            add({"type": "aws_iam_role", "name": name, "service": "lambda.amazonaws.com"})
        elif kind == "attach":
            add(
                {
                    "type": "aws_iam_role_policy_attachment",
                    "role": name,
                    "policy_arn": "arn:aws:iam::aws:policy/ReadOnlyAccess",
                }
            )
        else:
            add({"type": "az_aks", "name": f"aks-{name}", "location": "eastus"})
    return list(out.values())


def _check(plan: Plan) -> None:
    position = {s.id: s.index for s in plan.steps}
    assert [s.index for s in plan.steps] == list(range(len(plan.steps)))
    for step in plan.steps:
        for dep in step.depends_on:
            assert position[dep] < step.index, (dep, step.id)
    for edge in plan.graph.edges:
        assert position[edge.source] < position[edge.target]
    assert plan.rollback == tuple(s.rollback for s in reversed(plan.steps) if s.rollback is not None)
    for step in plan.steps:
        if step.action == "create" and not step.implied and step.rollback is not None:
            assert step.rollback.argv != step.command.argv
        for cmd in (step.command, step.readback, step.rollback, step.guard, step.health):
            if cmd is not None:
                assert shlex.split(cmd.display) == list(cmd.argv)
                assert not any(m in cmd.display for m in _META), cmd.display
    assert plan.hash == plan_digest(plan)
    assert len({s.id for s in plan.steps}) == len(plan.steps)


@settings(max_examples=60, deadline=None)
@given(resources(), st.randoms(use_true_random=False))
def test_any_valid_spec_compiles_to_an_ordered_reversible_plan(items: list[dict[str, Any]], rnd: Any) -> None:
    plan = compile_intent(CompileInput(spec={"resources": items}), KEYED)
    _check(plan)
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert compile_intent(CompileInput(spec={"resources": shuffled}), KEYED) == plan


@settings(max_examples=30, deadline=None)
@given(
    resources(),
    st.lists(st.sampled_from(["c1", "c2", "c3", "c4", "c5"]), min_size=1, max_size=5, unique=True),
    st.sampled_from(["all-at-once", "canary", "waves"]),
)
def test_variants_keep_dependencies_and_never_run_a_step_before_its_wave(
    items: list[dict[str, Any]], targets: list[str], variant: str
) -> None:
    spec = {
        "resources": [*items, {"type": "k8s_namespace", "name": "team"}],
        "targets": targets,
        "variant": variant,
    }
    plan = compile_intent(CompileInput(spec=spec), KEYED)
    _check(plan)
    waves = [s.wave for s in plan.steps]
    assert waves == sorted(waves)
    by_id = {s.id: s for s in plan.steps}
    for step in plan.steps:
        assert all(by_id[d].wave <= step.wave for d in step.depends_on)
    assert sorted(sid for w in plan.waves for sid in w.steps) == sorted(by_id)


@settings(max_examples=40, deadline=None)
@given(resources())
def test_deleting_what_a_spec_creates_runs_in_reverse_dependency_order(items: list[dict[str, Any]]) -> None:
    created = compile_intent(CompileInput(spec={"resources": items}), KEYED)
    deletes = [{**r, "action": "delete"} for r in items]
    plan = compile_intent(CompileInput(spec={"resources": deletes}), KEYED)
    _check(plan)
    order = [s.id for s in plan.steps]
    explicit = [
        s.id for s in created.steps if not s.implied and s.resource.type in {r["type"] for r in items}
    ]
    ranks = {sid: i for i, sid in enumerate(order)}
    kept = [sid for sid in explicit if sid in ranks]
    for a, b in itertools.pairwise(kept):
        step_b = next(s for s in created.steps if s.id == b)
        if a in step_b.depends_on:
            assert ranks[b] < ranks[a]
