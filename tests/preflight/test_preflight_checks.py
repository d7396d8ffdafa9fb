"""Checks before any mutation: quotas, prerequisites, the dry run (with real and scripted read-backs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from preflight_helpers import config, plan_of

from events.desired import Inventory, fold
from events.ids import new_id
from events.model import (
    ChangeClosed,
    ExecutionCompleted,
    ExecutionStarted,
    IntentSubmitted,
    PlanCompiled,
    StepOutput,
)
from events.plan import Command, Plan
from events.store import new_event
from services.common import metrics
from services.preflight.checks import run_checks
from services.security.scope import Scope
from upm.emulators import free_port


def _scripted(outputs: dict[str, StepOutput]):
    async def run(command: Command, target: str, timeout_s: float) -> StepOutput:
        return outputs.get(command.display, StepOutput(rc=1, stderr="No such file"))

    return run


async def test_a_quota_per_tenant_and_type_halts_before_any_read_back() -> None:
    plan = plan_of("Create namespace a and namespace b and namespace c")
    cfg = config(quotas={"*": {"*": 100}, "acme": {"k8s_namespace": 2}})
    checks = await run_checks(plan, "acme", cfg, _scripted({}))
    (quota,) = [c for c in checks if c.name == "quota"]
    assert not quota.ok and "quota is 2 per change" in quota.detail and "quotas.acme.k8s_namespace" in quota.detail
    assert not [c for c in checks if c.name == "dry-run"]
    other = await run_checks(plan, "other", cfg, _scripted({"kubectl-1.29 cluster-info": StepOutput(rc=0)}))
    assert all(c.ok for c in other if c.name == "quota")


async def test_a_missing_prerequisite_names_the_resource_and_how_to_provide_it(tmp_path: Path) -> None:
    plan = plan_of(f"Create file {tmp_path / 'nope' / 'f'} containing 'x'")
    checks = await run_checks(plan, "acme", config())
    (missing,) = [c for c in checks if not c.ok]
    assert missing.name == "exists" and missing.target == f"local_directory:local:{tmp_path / 'nope'}"
    assert missing.detail.startswith(f"missing prerequisite local_directory {tmp_path / 'nope'} on local")
    assert "create it first or add it to this request" in missing.detail


async def test_the_dry_run_reports_create_no_op_conflict_and_unknown(tmp_path: Path) -> None:
    (tmp_path / "same").mkdir(mode=0o750)
    (tmp_path / "same").chmod(0o750)
    fresh = await run_checks(plan_of(f"Create directory {tmp_path / 'new'} with mode 0750"), "acme", config())
    assert [(c.name, c.detail) for c in fresh if c.name == "dry-run"] == [("dry-run", "create")]
    same = await run_checks(plan_of(f"Create directory {tmp_path / 'same'} with mode 0750"), "acme", config())
    assert [c.detail for c in same if c.name == "dry-run"] == ["no-op: already in the desired state"]
    (tmp_path / "same").chmod(0o700)
    clash = await run_checks(plan_of(f"Create directory {tmp_path / 'same'} with mode 0750"), "acme", config())
    (conflict,) = [c for c in clash if not c.ok]
    assert conflict.detail.startswith(f"conflict: local_directory:local:{tmp_path / 'same'} already exists")
    unknown = await run_checks(plan_of("Create namespace team-a"), "acme", config(), _scripted({
        "kubectl-1.29 cluster-info": StepOutput(rc=0),
        "kubectl-1.29 get namespace team-a -o json": StepOutput(rc=127, stderr="kubectl-1.29: not found"),
    }))
    (dry,) = [c for c in unknown if c.name == "dry-run"]
    assert dry.ok and dry.detail.startswith("create: current state unknown")


async def test_a_target_that_refuses_the_connection_halts_as_unreachable_not_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real psql against a port with nothing listening: the reachability probe halts the change,
    saying why and what to run; nothing is claimed missing or absent (no prerequisite or dry run is read
    through a target that does not answer)."""
    monkeypatch.setenv("UPM_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("UPM_PG_PORT", str(free_port()))
    for request in ("Create schema reports in database sales", "Create postgres role auditor"):
        checks = await run_checks(plan_of(request), "acme", config())
        (reachable,) = [c for c in checks if c.name == "reachable"]
        assert not reachable.ok and reachable.target == "postgres:default"
        assert "Connection refused" in reachable.detail and "upm up --with postgres" in reachable.detail
        assert not [c for c in checks if c.name in ("exists", "dry-run")]
        assert not any("missing" in c.detail or "absent" in c.detail for c in checks)


def _managed_by(tenant: str, plan: Plan) -> Inventory:
    """The inventory after ``tenant``'s change of ``plan`` closed succeeded."""
    change = "c-" + tenant
    events = [new_event(p, event_id=new_id(), change_id=change, tenant=tenant, ts="2026-01-01T00:00:00.000Z",
                        actor="test", source="api")
              for p in (IntentSubmitted(request="x", initiator="alice"), PlanCompiled(plan=plan, compile_ms=1.0),
                        ExecutionStarted(plan_hash=plan.hash, steps=1, waves=1),
                        ExecutionCompleted(plan_hash=plan.hash, duration_ms=1.0),
                        ChangeClosed(outcome="succeeded", events=5, chain_head=""))]
    return fold(events)


async def test_the_dry_run_is_a_no_op_only_when_the_desired_state_already_says_so(tmp_path: Path) -> None:
    """A managed resource that reads back as planned, but whose desired state (the inventory)
    differs, is not a no-op: the change still sets its desired state."""
    target = tmp_path / "app"
    target.mkdir()
    target.chmod(0o700)  # changed by hand to what the next change asks for
    inventory = _managed_by("acme", plan_of(f"Create directory {target} with mode 0755"))
    update = plan_of(f"Change mode of directory {target} to 0700")
    checks = await run_checks(update, "acme", config(), inventory=inventory)
    (dry,) = [c for c in checks if c.name == "dry-run"]
    assert dry.ok and dry.detail == "update: reads back as planned already; its desired state changes (mode: '0755' → '0700')"
    target.chmod(0o755)
    same = await run_checks(plan_of(f"Create directory {target} with mode 0755"), "acme", config(), inventory=inventory)
    assert [c.detail for c in same if c.name == "dry-run"] == ["no-op: already in the desired state"]


async def test_scope_and_ownership_halt_before_any_read_back(tmp_path: Path) -> None:
    target = tmp_path / "app"
    inventory = _managed_by("acme", plan_of(f"Create directory {target} with mode 0755"))
    scope = Scope(roots=(str(tmp_path / "elsewhere"),), source="scope.yaml")
    checks = await run_checks(plan_of(f"Change mode of directory {target} to 0700"), "globex", config(),
                              _scripted({}), scope=scope, inventory=inventory)
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert failed["scope"].startswith(f"rule path-scope: {target} is outside tenant globex's roots")
    assert "roots (or tenants.globex) in scope.yaml" in failed["scope"]
    assert failed["ownership"].startswith(f"policy tenant-ownership: local_directory:local:{target} is managed by "
                                          "another tenant")
    assert not [c for c in checks if c.name == "dry-run"]


async def test_the_dry_run_of_many_directories_reads_them_back_with_one_stat(tmp_path: Path) -> None:
    """Twelve directories (one as asked, one there with another mode, the rest new): one ``stat`` over
    the twelve paths, each judged as its own read-back would be (no-op, conflict, create), beside the
    one that checks their parent exists (a prerequisite)."""
    paths = [tmp_path / f"d{i:02d}" for i in range(12)]
    paths[0].mkdir()
    paths[0].chmod(0o750)
    paths[1].mkdir()
    paths[1].chmod(0o700)
    request = "Create " + " and ".join(f"directory {p} with mode 0750" for p in paths)
    plan = plan_of(request)
    before = metrics.GUARD_RUNS.labels("stat")._value.get()
    checks = await run_checks(plan, "acme", config())
    runs = metrics.GUARD_RUNS.labels("stat")._value.get() - before
    by_step = {s.id: s.resource.name for s in plan.steps}
    verdicts = {by_step[c.target]: c.detail.split(":")[0] for c in checks if c.name == "dry-run"}
    assert verdicts == {str(paths[0]): "no-op", str(paths[1]): "conflict", **{str(p): "create" for p in paths[2:]}}
    assert runs == 2, f"{runs} stat processes for the prerequisite and the dry run"
