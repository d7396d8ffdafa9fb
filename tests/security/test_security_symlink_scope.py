"""A symlink is in scope only if what it points to is: planner, pre-flight and executor share
``Scope.step_refusal``, so a link from inside the tenant's roots to a path outside them is refused
like a write outside them (issue 24: "symlink A to B")."""

from __future__ import annotations

from services.planner import CompileInput, compile_intent
from services.security.scope import Scope

SCOPE = Scope(roots=("/srv/acme",))


def refusals(request: str) -> list[str]:
    return SCOPE.plan_refusals("acme", compile_intent(CompileInput(request=request)))


def test_a_symlink_pointing_outside_the_roots_is_refused_naming_the_target() -> None:
    found = refusals("symlink /srv/acme/current to /etc/shadow")
    assert len(found) == 1
    assert "rule path-scope" in found[0] and "/etc/shadow" in found[0]
    assert "symlink /srv/acme/current would point to" in found[0]


def test_a_symlink_inside_the_roots_pointing_inside_them_is_allowed() -> None:
    assert refusals("symlink /srv/acme/current to /srv/acme/releases") == []
    assert refusals("create symlink /srv/acme/current pointing to /srv/acme/releases") == []


def test_deleting_a_symlink_does_not_judge_its_old_target() -> None:
    assert refusals("delete symlink /srv/acme/current") == []


def test_a_symlink_outside_the_roots_is_refused_for_its_own_path_first() -> None:
    found = refusals("symlink /opt/current to /srv/acme/releases")
    assert len(found) == 1 and "/opt/current is outside tenant acme's roots" in found[0]
