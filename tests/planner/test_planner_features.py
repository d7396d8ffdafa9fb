"""Variants, annotations, simulation, plan diff, graph export, spec/config loading, errors of specs."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from events.plan import Plan
from services.planner import CompileInput, PlannerConfig, compile_intent, load_config, load_spec
from services.planner.diff import diff_plans
from services.planner.errors import (
    ConfigError,
    DependencyCycle,
    InputError,
    SpecError,
    UnknownResourceType,
    UnsupportedAction,
    VariantError,
)
from services.planner.export import export_graph
from services.planner.render import render_diff, render_plan, render_simulation
from services.planner.simulate import simulate
from tests.planner.keyed import KEYED

EXAMPLE = "Create AKS cluster aks-demo in eastus and namespace team-alpha"
FLEET = (
    "Update deployment web image to nginx:1.28 in namespace shop in clusters c1, c2, c3, c4, c5, c6, c7, c8"
)


def test_canary_runs_the_first_target_alone_first() -> None:
    plan = compile_intent(CompileInput(request=FLEET + " as a canary"), KEYED)
    assert plan.variant == "canary"
    assert [(w.name, w.targets) for w in plan.waves] == [
        ("canary", ("c1",)),
        ("rest", tuple(f"c{i}" for i in range(2, 9))),
    ]
    assert [s.target for s in plan.steps] == [f"c{i}" for i in range(1, 9)]


def test_waves_follow_configured_percentages() -> None:
    plan = compile_intent(CompileInput(request=FLEET, variant="waves"), KEYED)
    assert [len(w.targets) for w in plan.waves] == [1, 1, 6]
    config = PlannerConfig(waves=("1", "50%"))
    plan = compile_intent(CompileInput(request=FLEET, variant="waves"), config)
    assert [len(w.targets) for w in plan.waves] == [1, 3, 4]


def test_variant_from_configuration_and_override_order() -> None:
    config = PlannerConfig(variant="canary")
    assert compile_intent(CompileInput(request=FLEET), config).variant == "canary"
    assert (
        compile_intent(CompileInput(request=FLEET + " in waves", variant="all-at-once"), config).variant
        == "all-at-once"
    )


def test_blue_green_creates_alongside_switches_and_retires() -> None:
    plan = compile_intent(
        CompileInput(
            request="Update deployment web image nginx:1.28 with 3 replicas in namespace shop using blue-green"
        ), KEYED)
    assert [s.command.display for s in plan.steps] == [
        "kubectl-1.29 create deployment web-green --image=nginx:1.28 --replicas=3 -n shop",
        """kubectl-1.29 patch service web -n shop -p '{"spec":{"selector":{"app":"web-green"}}}'""",
        "kubectl-1.29 scale deployment/web-blue --replicas=0 -n shop",
    ]
    assert [c.display for c in plan.rollback] == [
        "kubectl-1.29 scale deployment/web-blue --replicas=3 -n shop",
        """kubectl-1.29 patch service web -n shop -p '{"spec":{"selector":{"app":"web-blue"}}}'""",
        "kubectl-1.29 delete deployment web-green -n shop",
    ]
    assert [w.name for w in plan.waves] == ["green", "switch", "retire"]
    assert {p.resource.key for p in plan.resources_needed} >= {
        "k8s_service_selector:default:shop/web",
        "k8s_deployment:default:shop/web-blue",
    }


def test_blue_green_needs_a_deployment() -> None:
    with pytest.raises(VariantError, match="deployment"):
        compile_intent(CompileInput(request="Create namespace x using blue-green"), KEYED)


def test_annotations_who_why_when_impact_cost() -> None:
    plan = compile_intent(
        CompileInput(
            request=EXAMPLE + " and delete namespace old-team",
            initiator="user-123",
            reason="new team",
            window="2025-10-09T22:00Z/2025-10-10T02:00Z",
        ), KEYED)
    a = plan.annotations
    assert (a.initiator, a.reason, a.window) == (
        "user-123",
        "new team",
        "2025-10-09T22:00Z/2025-10-10T02:00Z",
    )
    assert a.impact.destroyed == ("k8s_namespace:default:old-team",)
    assert a.impact.destructive
    assert "az_aks:default:aks-demo" in a.impact.created
    assert a.cost.monthly == pytest.approx(140.16)
    text = render_plan(plan)
    assert "DESTRUCTIVE" in text and "rollback:" in text and "user-123" in text


@pytest.mark.parametrize("window", ["tomorrow", "2025-10-10T02:00Z/2025-10-09T22:00Z", "2025-10-09T22:00Z"])
def test_bad_window_is_rejected(window: str) -> None:
    with pytest.raises(InputError, match="ISO 8601"):
        compile_intent(CompileInput(request=EXAMPLE, window=window), KEYED)


def test_input_needs_exactly_one_form() -> None:
    with pytest.raises(InputError):
        compile_intent(CompileInput(), KEYED)
    with pytest.raises(InputError):
        compile_intent(CompileInput(request=EXAMPLE, spec={"resources": []}), KEYED)


def test_simulation_reports_create_update_noop_delete() -> None:
    plan = compile_intent(
        CompileInput(
            spec={
                "resources": [
                    {"type": "local_directory", "path": "/srv/a", "mode": "0750"},
                    {"type": "local_directory", "path": "/srv/b", "mode": "0750"},
                    {"type": "local_directory", "path": "/srv/c", "mode": "0750"},
                    {"type": "local_directory", "path": "/srv/old", "action": "delete"},
                    {"type": "local_directory", "path": "/srv/gone", "action": "delete"},
                ]
            }
        ), KEYED)
    observed = {
        "local_directory:local:/srv/b": {"kind": "directory", "mode": "0750", "owner": "root"},
        "local_directory:local:/srv/c": {"kind": "directory", "mode": "0700", "owner": "root"},
        "local_directory:local:/srv/old": {"kind": "directory", "mode": "0755", "owner": "root"},
        "local_directory:local:/srv/gone": None,
    }
    report = simulate(plan, observed)
    outcomes = {s.step: s.outcome for s in report.steps}
    assert outcomes == {
        "local_directory:local:/srv/a": "create",
        "local_directory:local:/srv/b": "no-op",
        "local_directory:local:/srv/c": "update",
        "local_directory:local:/srv/old": "delete",
        "local_directory:local:/srv/gone": "no-op",
    }
    (update,) = [s for s in report.steps if s.outcome == "update"]
    assert [(d.field, d.desired, d.observed) for d in update.diffs] == [("mode", "0750", "0700")]
    assert report.changes == 3
    assert "0700" in render_simulation(report)


def test_simulation_of_facets_uses_the_parent_entry() -> None:
    plan = compile_intent(CompileInput(request="Create S3 bucket logs-acme with versioning"), KEYED)
    report = simulate(
        plan, {"aws_s3_bucket:us-east-1:logs-acme": {"versioning": True, "public_access_block": True}}
    )
    assert [s.outcome for s in report.steps] == ["no-op", "no-op", "no-op"]
    update = compile_intent(CompileInput(request="Scale deployment web to 3 replicas"), KEYED)
    assert [s.outcome for s in simulate(update, {}).steps] == ["blocked"]


def test_plan_diff_between_revisions() -> None:
    r1 = compile_intent(CompileInput(request=EXAMPLE), KEYED)
    r2 = compile_intent(
        CompileInput(request="Create AKS cluster aks-demo in eastus with 3 nodes and namespace team-beta"), KEYED)
    diff = diff_plans(r1, r2)
    assert [s.id for s in diff.added] == ["k8s_namespace:default:team-beta"]
    assert [s.id for s in diff.removed] == ["k8s_namespace:default:team-alpha"]
    (changed,) = diff.changed
    assert changed.step == "az_aks:default:aks-demo"
    fields = {c.field: (c.before, c.after) for c in changed.changes}
    assert "--node-count 3" in fields["command"][1]
    assert fields["desired"] == ({"exists": True, "node_count": 2}, {"exists": True, "node_count": 3})
    text = render_diff(diff)
    assert "+ k8s_namespace:default:team-beta" in text and "- k8s_namespace:default:team-alpha" in text
    as_json = json.loads(msgspec.json.encode(diff))
    assert as_json["added"][0]["id"] == "k8s_namespace:default:team-beta"
    assert diff_plans(r1, r1).identical


def test_graph_exports() -> None:
    plan = compile_intent(CompileInput(request=EXAMPLE), KEYED)
    graph = json.loads(export_graph(plan, "json"))
    assert [e["target"] for e in graph["edges"]] == [
        "az_aks:default:aks-demo",
        "k8s_namespace:default:team-alpha",
    ]
    dot = export_graph(plan, "dot")
    assert dot.startswith("digraph plan {") and "s0 -> s1;" in dot and "s1 -> s2;" in dot
    mermaid = export_graph(plan, "mermaid")
    assert mermaid.splitlines()[0] == "flowchart TD" and "s1 --> s2" in mermaid


def test_plan_round_trips_through_json() -> None:
    plan = compile_intent(CompileInput(request=EXAMPLE), KEYED)
    assert msgspec.json.decode(msgspec.json.encode(plan), type=Plan) == plan


def test_spec_files_yaml_and_json_compile_like_the_request(tmp_path: Path) -> None:
    spec = {
        "resources": [
            {"type": "az_aks", "name": "aks-demo", "location": "eastus"},
            {"type": "k8s_namespace", "name": "team-alpha"},
        ]
    }
    (tmp_path / "s.json").write_text(json.dumps(spec))
    (tmp_path / "s.yaml").write_text(
        "resources:\n  - {type: k8s_namespace, name: team-alpha}\n  - {type: az_aks, name: aks-demo, location: eastus}\n"
    )
    nl = compile_intent(CompileInput(request=EXAMPLE), KEYED)
    for name in ("s.json", "s.yaml"):
        plan = compile_intent(CompileInput(spec=load_spec(tmp_path / name)), KEYED)
        assert plan.steps == nl.steps and plan.resources == nl.resources


@pytest.mark.parametrize(
    ("content", "suffix", "words"),
    [
        ("{not json", ".json", "not valid JSON"),
        ("- a\n- b\n", ".yaml", "mapping at the top level"),
        ("resources: []\n", ".yaml", "non-empty list"),
        ("resources: [{name: x}]\n", ".yaml", "'type'"),
        ("resources: [{type: k8s_namespace, name: x, action: explode}]\n", ".yaml", "action"),
        ("resources: [{type: k8s_namespace, name: x}]\nextra: 1\n", ".yaml", "unknown top-level keys"),
    ],
)
def test_malformed_spec_files(tmp_path: Path, content: str, suffix: str, words: str) -> None:
    path = tmp_path / f"spec{suffix}"
    path.write_text(content)
    with pytest.raises(SpecError, match=words):
        compile_intent(CompileInput(spec=load_spec(path)), KEYED)


def test_missing_spec_file() -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec("/nonexistent/spec.yaml")


def test_spec_errors_unknown_type_cycle_unknown_field_facet() -> None:
    with pytest.raises(UnknownResourceType, match="k8s_namespace"):
        compile_intent(CompileInput(spec={"resources": [{"type": "k8s_namespce", "name": "x"}]}), KEYED)
    with pytest.raises(UnknownResourceType, match="field 'versioning'"):
        compile_intent(CompileInput(spec={"resources": [{"type": "aws_s3_bucket_versioning", "name": "x"}]}), KEYED)
    cycle = {
        "resources": [
            {"type": "k8s_namespace", "name": "a", "depends_on": ["k8s_namespace:b"]},
            {"type": "k8s_namespace", "name": "b", "depends_on": ["k8s_namespace:c"]},
            {"type": "k8s_namespace", "name": "c", "depends_on": ["k8s_namespace:a"]},
        ]
    }
    with pytest.raises(DependencyCycle) as caught:
        compile_intent(CompileInput(spec=cycle), KEYED)
    assert len(caught.value.cycle) == 4 and caught.value.cycle[0] == caught.value.cycle[-1]
    assert "remove one" in caught.value.message
    with pytest.raises(SpecError, match="matches no resource"):
        compile_intent(
            CompileInput(
                spec={
                    "resources": [{"type": "k8s_namespace", "name": "a", "depends_on": ["k8s_namespace:zz"]}]
                }
            ), KEYED)
    from services.planner.errors import InvalidFieldValue

    with pytest.raises(InvalidFieldValue, match="its fields are"):
        compile_intent(
            CompileInput(spec={"resources": [{"type": "k8s_namespace", "name": "a", "colour": "red"}]}), KEYED)
    with pytest.raises(UnsupportedAction, match="cannot be updated"):
        compile_intent(
            CompileInput(
                spec={"resources": [{"type": "pg_schema", "name": "a", "database": "d", "action": "update"}]}
            ), KEYED)


def test_explicit_dependencies_order_independent_resources() -> None:
    spec = {
        "resources": [
            {"type": "k8s_namespace", "name": "a", "depends_on": ["k8s_namespace:z"]},
            {"type": "k8s_namespace", "name": "z"},
        ]
    }
    plan = compile_intent(CompileInput(spec=spec), KEYED)
    assert [s.resource.name for s in plan.steps] == ["z", "a"]


def test_config_files(tmp_path: Path) -> None:
    path = tmp_path / "planner.yaml"
    path.write_text(
        "ssh_public_key: ssh-ed25519 AAAA test\nvariant: canary\naws_region: eu-west-1\ncosts: {az_aks: 10}\n"
    )
    config = load_config(path)
    assert config.variant == "canary" and config.aws_region == "eu-west-1"
    plan = compile_intent(CompileInput(request=EXAMPLE), config)
    assert plan.annotations.cost.monthly == 20.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"variant": "yolo"}))
    with pytest.raises(ConfigError, match="variant 'yolo'"):
        load_config(bad)
    bad.write_text(json.dumps({"colour": "red"}))
    with pytest.raises(ConfigError, match="colour"):
        load_config(bad)


def test_no_secret_values_in_plans() -> None:
    plan = compile_intent(CompileInput(request="Create postgres role app with login and SQS queue jobs"), KEYED)
    text = msgspec.json.encode(plan).decode().lower()
    assert "password" not in text and "secret" not in text and "token" not in text
