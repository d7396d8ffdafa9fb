"""Shared helpers of the pre-flight tests (a uniquely named module, imported by the test modules)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from events.commands import ChangeCommand
from events.ids import new_id
from events.model import Event, IntentSubmitted, Payload, PlanCompiled
from events.plan import Plan
from events.store import new_event
from services.planner import CompileInput, compile_intent
from services.preflight.config import PreflightConfig, parse_config

CHANGE = "0190a8f6-0000-7000-8000-000000000001"
TENANT = "acme"
MONDAY_NOON = datetime(2025, 10, 6, 12, 0, tzinfo=UTC)  # a Monday
SATURDAY_NIGHT = datetime(2025, 10, 11, 23, 0, tzinfo=UTC)


def plan_of(request: str, tenant: str = TENANT) -> Plan:
    return compile_intent(CompileInput(request=request, tenant=tenant, initiator="alice"))


def config(**extra: Any) -> PreflightConfig:
    """Groups: platform-owners = bob, carol, dave; security = erin; plus ``extra`` keys."""
    data: dict[str, Any] = {
        "groups": {"*": {"platform-owners": ["bob", "carol", "dave", "alice"], "security": ["erin"]}},
        **extra,
    }
    return parse_config(data, source="test-config")


PROD_WINDOW = {"prod": {"timezone": "UTC", "weekly": ["sat 22:00-06:00"]}}


def event(payload: Payload, at: datetime = MONDAY_NOON, actor: str = "test") -> Event:
    return new_event(payload, event_id=new_id(int(at.timestamp() * 1000)), change_id=CHANGE, tenant=TENANT,
                     ts=at.isoformat().replace("+00:00", "Z"), actor=actor, source="api")


def history(plan: Plan, environment: str = "dev", initiator: str = "alice", revision: int = 1) -> list[Event]:
    return [
        event(IntentSubmitted(request=plan.request, initiator=initiator, environment=environment)),
        event(PlanCompiled(plan=plan, revision=revision, compile_ms=1.0)),
    ]


def command(by: str, plan_hash: str | None = None, group: str | None = None, reason: str = "") -> ChangeCommand:
    return ChangeCommand(change_id=CHANGE, by=by, plan_hash=plan_hash, group=group, reason=reason)


@dataclass
class FakeClock:
    """An injected clock: ``clock()`` is ``now``; tests move it with ``advance``."""

    now: datetime = MONDAY_NOON

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
