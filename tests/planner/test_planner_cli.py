"""``upm plan``: the command group of upm/commands/plan.py (compile, the default, and diff), run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.planner.keyed import upm

EXAMPLE = "Create AKS cluster aks-demo in eastus and namespace team-alpha"




def test_plan_prints_commands_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    assert upm(["plan", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "  1. az group create --name rg-demo --location eastus" in out
    assert "kubectl-1.29 delete ns team-alpha" in out


def test_plan_json_is_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert upm(["plan", EXAMPLE, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["hash"].startswith("sha256:")
    assert [s["command"]["display"] for s in plan["steps"]][2] == "kubectl-1.29 create namespace team-alpha"


@pytest.mark.parametrize(
    ("fmt", "start"), [("dot", "digraph plan {"), ("mermaid", "flowchart TD"), ("json", "{")]
)
def test_plan_graph(fmt: str, start: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert upm(["plan", EXAMPLE, "--graph", fmt]) == 0
    assert capsys.readouterr().out.startswith(start)


def test_plan_error_exits_2_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert upm(["plan", "Create role analyst"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("upm plan: ") and "iam role" in err
    assert upm(["plan"]) == 2


def test_simulate_with_state_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"az_resource_group:default:rg-demo": {"location": "eastus"}}))
    assert upm(["plan", EXAMPLE, "--simulate", "--state", str(state), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["outcome"] for s in doc["simulation"]["steps"]] == ["no-op", "create", "create"]
    assert upm(["plan", EXAMPLE, "--simulate"]) == 0
    assert "3 change(s), nothing executed" in capsys.readouterr().out
    state.write_text("[1, 2]")
    assert upm(["plan", EXAMPLE, "--simulate", "--state", str(state)]) == 2


def test_spec_file_variant_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r1 = tmp_path / "r1.yaml"
    r1.write_text("resources:\n  - {type: k8s_namespace, name: team-alpha}\n")
    r2 = tmp_path / "r2.yaml"
    r2.write_text(
        "resources:\n  - {type: k8s_namespace, name: team-alpha}\n  - {type: k8s_namespace, name: team-beta}\n"
    )
    assert upm(["plan", "--file", str(r1), "--json"]) == 0
    plan_json = tmp_path / "r1.plan.json"
    plan_json.write_text(capsys.readouterr().out)
    assert upm(["plan", "diff", str(plan_json), str(r2)]) == 0
    assert "+ k8s_namespace:default:team-beta" in capsys.readouterr().out
    assert upm(["plan", "diff", str(r1), str(r2), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"][0]["id"] == "k8s_namespace:default:team-beta"
    with pytest.raises(SystemExit) as usage:  # a missing B is click's usage error (exit 2), as for any command
        upm(["plan", "diff", str(r1)])
    assert usage.value.code == 2 and "Missing argument 'B'" in capsys.readouterr().err
    assert upm(["plan", "--file", str(r2), "--variant", "canary", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variant"] == "canary"
