"""What a drifted local resource is reconciled to, for each kind of drift."""

from __future__ import annotations

from events.plan import Step
from providers.reconcile import reconcile_resource
from services.planner import CompileInput, compile_intent


def _step(request: str, index: int = 0) -> Step:
    return compile_intent(CompileInput(request=request)).steps[index]


def test_a_deleted_directory_is_created_again_with_its_mode() -> None:
    step = _step("Create directory /srv/app with mode 0750")
    assert reconcile_resource(step, None) == {"type": "local_directory", "path": "/srv/app", "mode": "0750"}


def test_a_chmodded_directory_gets_its_mode_back() -> None:
    step = _step("Create directory /srv/app with mode 0750")
    observed = {"exists": True, "kind": "directory", "mode": "0777", "owner": "root"}
    assert reconcile_resource(step, observed) == {
        "type": "local_directory", "path": "/srv/app", "mode": "0750", "action": "update"}


def test_an_edited_file_gets_its_content_back_and_a_deleted_one_is_recreated() -> None:
    step = _step("Create file /srv/app.conf containing 'port=8080'")
    edited = {"exists": True, "kind": "regular file", "mode": "0644", "owner": "root", "size": 3}
    assert reconcile_resource(step, edited) == {
        "type": "local_file", "path": "/srv/app.conf", "action": "update", "content": "port=8080"}
    assert reconcile_resource(step, None) == {
        "type": "local_file", "path": "/srv/app.conf", "mode": "0644", "content": "port=8080"}


def test_a_same_size_edit_gets_the_content_back_and_an_untouched_file_nothing() -> None:
    step = _step("Create file /srv/app.conf containing 'port=8080'")
    same_size = {"exists": True, "kind": "regular file", "mode": "0644", "owner": "root", "size": 9,
                 "sha256": "0" * 64}
    assert reconcile_resource(step, same_size) == {
        "type": "local_file", "path": "/srv/app.conf", "action": "update", "content": "port=8080"}
    untouched = same_size | {"sha256": step.desired["sha256"]}
    assert reconcile_resource(step, untouched) is None


def test_a_directory_replaced_by_a_file_needs_a_person() -> None:
    step = _step("Create directory /srv/app")
    assert reconcile_resource(step, {"exists": True, "kind": "regular file", "mode": "0644"}) is None


def test_a_resource_without_a_rule_is_alarm_only() -> None:
    step = _step("Create namespace team-alpha")
    assert reconcile_resource(step, None) is None
