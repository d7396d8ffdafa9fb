"""Property: over random Rego approval policies and random approve/deny/revise sequences, no change
is ever released (``change.approved``) without the approvals its policy required."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st
from preflight_helpers import MONDAY_NOON, command, event, history, plan_of

from events.lifecycle import fold
from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    Event,
    PlanCompiled,
)
from services.preflight import decide_command, decide_preflight
from services.preflight.config import parse_config
from services.preflight.core import Assessment
from services.preflight.errors import ApprovalRefused
from services.preflight.policy import build_pack
from services.preflight.risk import Subject, score
from services.preflight.verdict import evaluate, policy_input

GROUPS = ("ops", "sec", "dba")
USERS = ("alice", "bob", "carol", "dave", "erin")
PLANS = [plan_of(f"Create directory /srv/app{i}") for i in range(3)]

requirement = st.tuples(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True),
                        st.integers(min_value=1, max_value=2), st.booleans())
action = st.tuples(st.sampled_from(("approve", "approve", "approve", "deny", "revise")), st.sampled_from(USERS),
                   st.sampled_from((None, "current", "stale")), st.sampled_from((None, *GROUPS)))


def _pack(reqs: list[tuple[list[str], int, bool]]) -> str:
    rules = []
    for i, (groups, count, prod_only) in enumerate(reqs):
        cond = 'input.environment == "prod"' if prod_only else "true"
        rules.append(
            f'approval contains {{"rule": "r{i}", "groups": {list(groups)!r}, "count": {count}}} if {{ {cond} }}'
            .replace("'", '"')
        )
    rules.append('auto_approve contains {"rule": "never-in-prod", "message": "m"} if { input.environment != "prod" }')
    return "package upm.preflight\n\nimport rego.v1\n\n" + "\n\n".join(rules) + "\n"


def _required_met(events: list[Event], plan_hash: str, members: dict[str, set[str]]) -> bool:
    """Independent oracle: the requests of the latest revision are each met by distinct,
    non-initiator approvers of that revision who belong to one of the requested groups (no group
    named: any group)."""
    start = max(i for i, e in enumerate(events) if isinstance(e.payload, PlanCompiled))
    initiator = next(e.payload.initiator for e in events if e.type == "intent.submitted")  # type: ignore[union-attr]
    revision = events[start:]
    requests = [e.payload for e in revision if isinstance(e.payload, ApprovalRequested)]
    if any(isinstance(e.payload, ApprovalDenied) for e in revision):
        return False
    approvers = {e.payload.approver for e in revision
                 if isinstance(e.payload, ApprovalGranted) and e.payload.plan_hash == plan_hash}
    approvers.discard(initiator)
    return all(
        len({a for a in approvers if any(a in members.get(g, set()) for g in r.groups or members)}) >= r.required
        for r in requests
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=st.lists(requirement, max_size=3),
    membership=st.dictionaries(st.sampled_from(GROUPS), st.sets(st.sampled_from(USERS), min_size=1, max_size=4)),
    environment=st.sampled_from(("dev", "prod")),
    initiator=st.sampled_from(USERS),
    actions=st.lists(action, max_size=14),
)
def test_no_change_is_released_without_the_approvals_its_policy_required(
    reqs: list[tuple[list[str], int, bool]],
    membership: dict[str, set[str]],
    environment: str,
    initiator: str,
    actions: list[tuple[str, str, str | None, str | None]],
) -> None:
    cfg = parse_config({"groups": {"*": {g: sorted(m) for g, m in membership.items()}}})
    pack = build_pack("random", Path("/random"), [("p.rego", _pack(reqs))])
    events = history(PLANS[0], environment=environment, initiator=initiator)
    revisions = 1

    def preflight() -> None:
        state = fold(events)
        assert state.plan is not None
        subject = Subject(tenant="acme", change_id="c", environment=environment, initiator=initiator,
                          plan=state.plan, revision=state.revision)
        risk = score(subject, cfg, MONDAY_NOON)
        verdict, records = evaluate([pack], policy_input(subject, risk, cfg, MONDAY_NOON), state.plan.hash, risk)
        assessment = Assessment(plan=state.plan, environment=environment, checks=(), risk=risk, verdict=verdict,
                                records=records)
        events.extend(event(p) for p in decide_preflight(assessment, cfg, MONDAY_NOON))

    preflight()
    for verb, by, which, group in actions:
        if verb == "revise":
            plan = PLANS[revisions % len(PLANS)]
            revisions += 1
            events.append(event(PlanCompiled(plan=plan, revision=revisions, compile_ms=1.0)))
            preflight()
            continue
        state = fold(events)
        stale = next(p.hash for p in PLANS if p.hash != state.plan_hash)
        plan_hash = {None: None, "current": state.plan_hash, "stale": stale}[which]
        try:
            payloads = decide_command(state, verb, command(by, plan_hash=plan_hash, group=group), cfg, MONDAY_NOON)
        except ApprovalRefused:
            continue
        events.extend(event(p) for p in payloads)

    lane_auto = environment != "prod" and not [r for r in reqs if not r[2]]
    released: dict[str, int] = {}
    for i, e in enumerate(events):
        if isinstance(e.payload, ChangeApproved):
            released[e.payload.plan_hash] = released.get(e.payload.plan_hash, 0) + 1
            if e.payload.lane == "manual":
                assert _required_met(events[: i + 1], e.payload.plan_hash, membership)
            else:
                assert lane_auto, "the auto lane was used although the policy asked for approvals"
    label(f"released {sum(released.values())} time(s), status {fold(events).status}")
    assert all(n <= revisions for n in released.values())
    state = fold(events)
    if state.approval is not None:
        assert state.denied is None
