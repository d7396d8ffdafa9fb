"""The approval trail of a change: who decided what, when, in which group, on which plan. Pure.

One row per ``approval.requested``, ``approval.granted``, ``approval.denied``,
``change.scheduled`` and ``change.approved`` event, in log order; ``upm approvals ID`` prints it
as a table, JSON or CSV.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    ChangeScheduled,
    Event,
)


class TrailEntry(msgspec.Struct, frozen=True, kw_only=True):
    ts: str
    event: str
    who: str
    group: str
    plan_hash: str
    reason: str


def approval_trail(events: Sequence[Event]) -> list[TrailEntry]:
    """The trail rows of ``events`` (see the module docstring)."""
    rows = []
    for e in events:
        match e.payload:
            case ApprovalRequested(plan_hash=h, groups=groups, required=n, reason=reason, rule=rule):
                who, group, why = "policy", ",".join(groups), f"{rule}: {n} approver(s) needed. {reason}".strip()
            case ApprovalGranted(plan_hash=h, approver=who, group=group, reason=reason, by_policy=by_policy):
                why = reason or (by_policy or "")
            case ApprovalDenied(plan_hash=h, approver=who, group=group, reason=why):
                pass
            case ChangeScheduled(plan_hash=h, window=window, release_at=at):
                who, group, why = "preflight", "", f"waits for the {window} window, opening {at}"
            case ChangeApproved(plan_hash=h, lane=lane, rule=rule, approvers=approvers):
                who, group = ",".join(approvers) or "policy", ""
                why = f"{lane} lane: {rule}" if rule else f"{lane} lane"
            case _:
                continue
        rows.append(TrailEntry(ts=e.ts, event=e.type, who=who, group=group, plan_hash=h, reason=why))
    return rows
