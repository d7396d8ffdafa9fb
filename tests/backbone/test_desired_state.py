"""The desired-state inventory (events/desired.py): a pure fold over histories of real compiled plans."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from events.desired import EMPTY, Inventory, evolve, fold, in_change, owned_by, owner_of, resource_key
from events.model import (
    ChangeClosed,
    DriftScanned,
    Event,
    ExecutionCompleted,
    ExecutionStarted,
    IntentSubmitted,
    Payload,
    PlanCompiled,
    RollbackApproved,
    RollbackCompleted,
    RollbackPlanned,
    RollbackStarted,
    RollbackStepCompleted,
    RollbackStepSkipped,
    Source,
    StepCompleted,
    StepOutput,
    VerificationFailed,
    VerificationPassed,
)
from events.plan import Plan
from services.planner import CompileInput, compile_intent

DIR = "local_directory:local:/srv/a"
FILE = "local_file:local:/srv/a.conf"
OK = StepOutput(rc=0)
_ids = itertools.count(1)


class Log:
    """A log being written: changes (each a real compiled plan) and what happened to them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.plans: dict[str, Plan] = {}
        self.tenants: dict[str, str] = {}

    def _emit(self, change: str, *payloads: Payload, source: Source = "api") -> None:
        for payload in payloads:
            self.events.append(Event(
                id=f"01a2190a-0000-7000-8000-{next(_ids):012d}", change_id=change, tenant=self.tenants[change],
                phase=payload.PHASE, ts="2026-11-26T00:00:00.000Z", actor="t", source=source, payload=payload))

    def _run(self, request: str | None, tenant: str, source: Source, spec: dict[str, Any] | None = None) -> str:
        change = f"01a2190a-0000-7000-8000-{next(_ids):012d}"
        plan = compile_intent(CompileInput(request=request, spec=spec, tenant=tenant))
        self.plans[change], self.tenants[change] = plan, tenant
        self._emit(change, IntentSubmitted(request=request, spec=spec, initiator="alice"),
                   PlanCompiled(plan=plan, compile_ms=1), source=source)
        self._emit(change, *[StepCompleted(step_id=s.id, index=s.index, command=s.command.display, output=OK)
                             for s in plan.steps], source=source)
        self._emit(change, ExecutionCompleted(plan_hash=plan.hash, duration_ms=1), source=source)
        return change

    def succeeded(self, request: str | None, tenant: str = "acme", *, source: Source = "api",
                  spec: dict[str, Any] | None = None) -> str:
        change = self._run(request, tenant, source, spec)
        self._emit(change, VerificationPassed(checks=(), baseline_hash="b", current_hash="b", duration_ms=1),
                   ChangeClosed(outcome="succeeded", events=9, chain_head="h"), source=source)
        return change

    def failed_and_rolled_back(self, request: str, tenant: str = "acme") -> str:
        """Verification failed; the automatic rollback undid every step; closed ``rolled_back``."""
        change = self._run(request, tenant, "api")
        plan = self.plans[change]
        self._emit(change, VerificationFailed(checks=(), diff=(), baseline_hash="b", current_hash="c", duration_ms=1),
                   RollbackPlanned(plan_hash=plan.hash, reason="verification failed", commands=(), automatic=True),
                   RollbackApproved(plan_hash=plan.hash, lane="auto", by="policy:auto-rollback"))
        self._undo(change)
        self._emit(change, ChangeClosed(outcome="rolled_back", events=9, chain_head="h"))
        return change

    def closed(self, request: str, outcome: Any) -> str:
        change = self._run(request, "acme", "api")
        self._emit(change, ChangeClosed(outcome=outcome, events=9, chain_head="h"))
        return change

    def operator_rollback(self, change: str, *, skipped: bool = False) -> None:
        """``upm rollback ID`` after the change closed: the events land on the same change."""
        plan = self.plans[change]
        self._emit(change, RollbackPlanned(plan_hash=plan.hash, reason="operator", commands=()),
                   RollbackApproved(plan_hash=plan.hash, lane="manual", by="bob"))
        self._undo(change, skipped=skipped)

    def _undo(self, change: str, *, skipped: bool = False) -> None:
        plan = self.plans[change]
        steps = list(reversed(plan.steps))
        self._emit(change, RollbackStarted(plan_hash=plan.hash, steps=len(steps)))
        for s in steps:
            self._emit(change, RollbackStepSkipped(step_id=s.id, index=s.index, reason="already undone") if skipped
                       else RollbackStepCompleted(step_id=s.id, index=s.index, command="undo", output=OK))
        self._emit(change, RollbackCompleted(plan_hash=plan.hash, duration_ms=1),
                   VerificationPassed(scope="rollback", checks=(), baseline_hash="b", current_hash="b", duration_ms=1))


def _create(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750")


def _update(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750")
    log.succeeded("Change mode of directory /srv/a to 0700")


def _two_updates(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750")
    log.succeeded("Change mode of directory /srv/a to 0700")
    log.succeeded("Change mode of directory /srv/a to 0705")


def _content_update(log: Log) -> None:
    log.succeeded("Create file /srv/a.conf containing 'port=1'")
    log.succeeded("Change content of file /srv/a.conf to 'port=22'")


def _delete(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750")
    log.succeeded("Delete directory /srv/a")


def _automatic_rollback(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750")
    log.failed_and_rolled_back("Change mode of directory /srv/a to 0700")
    log.failed_and_rolled_back("Create file /srv/a.conf containing 'x'")


def _operator_rollback_of_a_create(log: Log) -> None:
    log.operator_rollback(log.succeeded("Create directory /srv/a with mode 0750"))


def _operator_rollback_skipped(log: Log) -> None:
    log.operator_rollback(log.succeeded("Create directory /srv/a with mode 0750"), skipped=True)


def _operator_rollback_of_an_update(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750")
    log.operator_rollback(log.succeeded("Change mode of directory /srv/a to 0700"))


def _rollback_of_the_first_of_two(log: Log) -> None:
    """The create is rolled back after an update of the same directory: it is no longer desired."""
    first = log.succeeded("Create directory /srv/a with mode 0750")
    log.succeeded("Change mode of directory /srv/a to 0700")
    log.operator_rollback(first)


def _failed_changes(log: Log) -> None:
    log.closed("Create directory /srv/a with mode 0750", "failed")
    log.closed("Create directory /srv/b", "cancelled")
    log.closed("Create directory /srv/c", "rejected")


def _reconcile(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750")
    log.succeeded(None, source="drift", spec={"resources": [
        {"type": "local_directory", "path": "/srv/a", "mode": "0711", "action": "update"}]})


def _cross_tenant(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750", tenant="acme")
    log.succeeded("Change mode of directory /srv/a to 0700", tenant="globex")


def _recreated_after_delete(log: Log) -> None:
    log.succeeded("Create directory /srv/a with mode 0750", tenant="acme")
    log.succeeded("Delete directory /srv/a", tenant="acme")
    log.succeeded("Create directory /srv/a with mode 0700", tenant="globex")


DIR_0750 = {"exists": True, "kind": "directory", "mode": "0750"}
CASES: list[tuple[str, Callable[[Log], None], dict[str, tuple[str, dict[str, Any]]]]] = [
    ("create", _create, {DIR: ("acme", DIR_0750)}),
    ("update merges over the create", _update, {DIR: ("acme", DIR_0750 | {"mode": "0700"})}),
    ("the second change is the baseline", _two_updates, {DIR: ("acme", DIR_0750 | {"mode": "0705"})}),
    ("content update", _content_update, {FILE: ("acme", {
        "exists": True, "kind": "regular file", "mode": "0644", "size": 7,
        "sha256": hashlib.sha256(b"port=22").hexdigest()})}),
    ("delete", _delete, {}),
    ("automatic rollback sets nothing", _automatic_rollback, {DIR: ("acme", DIR_0750)}),
    ("operator rollback of a create", _operator_rollback_of_a_create, {}),
    ("operator rollback, step already undone", _operator_rollback_skipped, {}),
    ("operator rollback of an update", _operator_rollback_of_an_update, {DIR: ("acme", DIR_0750)}),
    ("rollback of the first of two changes", _rollback_of_the_first_of_two, {}),
    ("failed, cancelled, rejected changes", _failed_changes, {}),
    ("reconcile change counts", _reconcile, {DIR: ("acme", DIR_0750 | {"mode": "0711"})}),
    ("cross-tenant update keeps the owner", _cross_tenant, {DIR: ("acme", DIR_0750 | {"mode": "0700"})}),
    ("re-created after a delete: new owner", _recreated_after_delete, {DIR: ("globex", DIR_0750 | {"mode": "0700"})}),
]


@pytest.mark.parametrize(("history", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_fold(history: Callable[[Log], None], expected: dict[str, tuple[str, dict[str, Any]]]) -> None:
    log = Log()
    history(log)
    inventory = fold(log.events)
    assert {k: (r.owner, r.desired) for k, r in inventory.resources.items()} == expected
    assert all(len(r.checks) == 1 for r in inventory.resources.values())  # one baseline per resource


def test_a_content_update_replaces_what_a_re_create_writes() -> None:
    log = Log()
    _content_update(log)
    [check] = fold(log.events).resources[FILE].checks
    assert check.resource.key == FILE and check.stdin == "port=22"


def test_the_last_change_and_the_creator_are_recorded() -> None:
    log = Log()
    created = log.succeeded("Create directory /srv/a with mode 0750", tenant="acme")
    updated = log.succeeded("Change mode of directory /srv/a to 0700", tenant="globex")
    entry = fold(log.events).resources[DIR]
    assert (entry.owner, entry.created_by, entry.change_id) == ("acme", created, updated)


def test_owner_of_a_resource_key() -> None:
    log = Log()
    log.succeeded("Create directory /srv/a with mode 0750", tenant="acme")
    log.succeeded("Create directory /srv/b", tenant="globex")
    inventory = fold(log.events)
    assert owner_of(inventory, DIR) == "acme"
    assert owner_of(inventory, "local_directory:local:/srv/b") == "globex"
    assert owner_of(inventory, "local_directory:local:/srv/unmanaged") is None
    mode_step = compile_intent(CompileInput(request="Change mode of directory /srv/a to 0700")).steps[0]
    assert mode_step.resource.key != DIR and resource_key(mode_step) == DIR  # a facet's owner is its parent's
    assert owner_of(inventory, resource_key(mode_step)) == "acme"
    assert [r.key for r in owned_by(inventory, "globex")] == ["local_directory:local:/srv/b"]
    assert len(owned_by(inventory, "*")) == 2


def test_the_fold_is_incremental_and_never_mutates_its_input() -> None:
    log = Log()
    _update(log)
    half = len(log.events) // 2
    early = fold(log.events[:half])
    snapshot = (dict(early.resources), dict(early.open), dict(early.undo))
    assert fold(log.events[half:], early) == fold(log.events)
    assert (dict(early.resources), dict(early.open), dict(early.undo)) == snapshot
    drift_record = Event(id="01a2190a-0000-7000-8000-999999999999", change_id="x", tenant="acme", phase="verify",
                         ts="t", actor="v", source="drift",
                         payload=DriftScanned(managed=1, checked=1, drifted=0, unknown=0, interval_s=1, duration_ms=1))
    inventory: Inventory = fold(log.events)
    assert evolve(inventory, drift_record) is inventory
    assert fold([]) is EMPTY


def test_resources_a_change_or_a_rollback_is_acting_on_are_in_change() -> None:
    log = Log()
    created = log.succeeded("Create directory /srv/a with mode 0750")
    assert in_change(fold(log.events)) == set()
    change = log._run("Change mode of directory /srv/a to 0700", "acme", "api")
    plan = log.plans[change]
    executing = log.events[:-len(plan.steps) - 1]  # up to the plan: approved, not yet running
    assert in_change(fold(executing)) == set()
    started = Event(id="01a2190a-0000-7000-8000-888888888888", change_id=change, tenant="acme", phase="execute",
                    ts="t", actor="x", source="api", payload=ExecutionStarted(plan_hash=plan.hash, steps=1))
    assert in_change(fold([*executing, started])) == {DIR}
    log.operator_rollback(created)
    rolling = [e for e in log.events if not isinstance(e.payload, RollbackCompleted | VerificationPassed)]
    assert DIR in in_change(fold(rolling))


def test_a_rollback_running_while_another_change_closes_stays_in_change() -> None:
    """Another change closing while a rollback runs used to drop the rollback from the fold (the closed
    change's new inventory forgot ``rolling_back``): the drift loop then read the resource the rollback
    was restoring, mid-way, and could report it as drift."""
    log = Log()
    created = log.succeeded("Create directory /srv/a with mode 0750")
    log.operator_rollback(created)
    rolling = [e for e in log.events if not isinstance(e.payload, RollbackCompleted | VerificationPassed)]
    other = Log()
    other.succeeded("Create file /srv/a.conf containing 'x'")
    assert DIR in in_change(fold([*rolling, *other.events]))


def test_the_fold_keeps_only_what_a_rollback_can_still_undo() -> None:
    """A change rolled back to the end cannot be rolled back again, and a change none of whose steps
    ran has nothing to undo: neither is kept, so the fold stays as small as the undoable changes
    however long the log."""
    log = Log()
    kept = log.succeeded("Create directory /srv/a with mode 0750")
    undone = log.succeeded("Create file /srv/a.conf containing 'x'")
    log.operator_rollback(undone)
    noop = log._run("Create directory /srv/b", "acme", "api")
    log.events = [e for e in log.events if not (e.change_id == noop and isinstance(e.payload, StepCompleted))]
    log._emit(noop, ChangeClosed(outcome="succeeded", events=3, chain_head="h"))
    inventory = fold(log.events)
    assert set(inventory.undo) == {("acme", kept)}
    assert in_change(inventory) == set() and not inventory.rolling_back
