"""The console's change page model from a real change history (tests/console/ has the rest)."""

from __future__ import annotations

from upm_history import History, failed, happy

from events.model import decode_event
from events.store import StoredEvent
from projections.console import views
from services.security.access import parse

ACCESS = parse({"tenants": {"acme": {"alice": ["requester"], "dave": ["requester"], "audrey": ["auditor"]}}}, "test")


def stored(h: History, change_id: str) -> list[StoredEvent]:
    out = []
    for seq, data in h.records:
        event = decode_event(data)
        if event.change_id == change_id:
            out.append(StoredEvent(seq=seq, event=event, data=data))
    return out


def test_a_succeeded_change_shows_every_phase_its_plan_steps_approval_and_evidence() -> None:
    h = History()
    c = happy(h, "acme")
    events = stored(h, c.change_id)
    view = views.change_view(events, "alice", ACCESS)
    assert view.state.status == "closed" and view.state.outcome == "succeeded"
    assert [e.seq for e in view.timeline] == [s.seq for s in events]
    assert sum(n for _, n in view.phases) == len(events) and [p for p, _ in view.phases] == ["plan", "preflight", "execute", "verify", "audit"]
    assert c.plan is not None and all(f'data-id="{n.id}"' in view.graph_svg for n in c.plan.graph.nodes)
    assert [s["command"] for s in view.plan_steps] == [s.command.display for s in c.plan.steps]
    assert view.steps and {s.status for s in view.steps} == {"completed"}
    assert [a.kind for a in view.approvals] == ["approved"]
    assert view.evidence is not None and view.can_evidence  # the initiator may download it
    assert not views.change_view(events, "dave", ACCESS).can_evidence  # another requester may not
    assert views.change_view(events, "audrey", ACCESS).can_evidence
    assert not view.can_approve and "not awaiting approval" in view.why_not_approve
    view.with_drift({})
    assert {status for _, status in view.drift} == {"ok"}  # read back as desired by the verification
    key = view.resources[0]
    view.with_drift({key: "detected"})
    assert dict(view.drift)[key] == "drifted"


def test_a_failed_change_shows_its_failed_verification_and_the_rollback() -> None:
    h = History()
    c = failed(h, "acme")
    view = views.change_view(stored(h, c.change_id), "audrey", ACCESS)
    assert [v["passed"] for v in view.verification if v["scope"] == "change"] == [False]
    assert view.rollback_plan and view.rollback_result == "completed"
    view.with_drift({})
    assert {status for _, status in view.drift} == {"unknown"}  # nothing read it back as desired
