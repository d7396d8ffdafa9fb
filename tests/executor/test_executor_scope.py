"""Scope at execution: what pre-flight checked is checked again as the step runs, with no gap.

The changes are appended straight to the log as approved (pre-flight passed on the path as it was
then); the filesystem is changed afterwards, as a racing attacker would. The real executor runs
the real local writer (``upm-localfs``) on real files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from executor_helpers import running, submit, wait_for
from nats.aio.client import Client as NATS

from events.model import StepFailed
from events.plan import Plan
from events.store import EventStore
from services.planner import CompileInput, compile_intent

ORIGINAL = "the original content, in no plan\n"


def plan_of(resources: list[dict[str, str]]) -> Plan:
    return compile_intent(CompileInput(spec={"resources": resources}))


def untouched(path: Path, mode: int = 0o640) -> bool:
    return path.read_text() == ORIGINAL and path.stat().st_mode & 0o777 == mode and not path.is_symlink()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file in no plan."""
    (tmp_path / "outside").mkdir()
    victim = tmp_path / "outside" / "victim.txt"
    victim.write_text(ORIGINAL)
    victim.chmod(0o640)
    return victim


def swap_file(path: Path, outside: Path) -> None:
    """``path`` (a regular file when pre-flight read it) becomes a link to the outside file."""
    path.unlink()
    path.symlink_to(outside)


def swap_parent(path: Path, outside: Path) -> None:
    """``path``'s directory becomes a link to the outside folder (holding a file of the same name)."""
    path.parent.rename(path.parent.with_name("moved-away"))
    path.parent.symlink_to(outside.parent)


def failure(found: list[object]) -> StepFailed:
    (failed,) = [e.payload for e in found if isinstance(e.payload, StepFailed)]  # type: ignore[attr-defined]
    return failed


@pytest.mark.parametrize("swap", [swap_file, swap_parent], ids=["the-file", "a-parent"])
async def test_a_link_swapped_in_after_preflight_is_not_followed_when_the_content_is_written(
    nc: NATS, store: EventStore, tmp_path: Path, outside: Path, swap: Callable[[Path, Path], None]
) -> None:
    conf = tmp_path / "targets" / outside.name
    conf.parent.mkdir()
    conf.write_text("old\n")
    plan = plan_of([{"type": "local_file", "path": str(conf), "content": "overwritten\n", "action": "update"}])
    assert plan.steps[0].command.argv[:2] == ("upm-localfs", "write")
    swap(conf, outside)
    async with running(nc):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.failed")
    failed = failure(found)
    assert failed.output.rc == 1 and "is a symbolic link; UPM never follows one (rule path-symlink)" in failed.error
    assert untouched(outside)


async def test_a_directory_swapped_for_a_link_is_not_followed_by_a_mode_change(
    nc: NATS, store: EventStore, tmp_path: Path, outside: Path
) -> None:
    target = tmp_path / "targets" / "app"
    target.mkdir(parents=True, mode=0o755)
    plan = plan_of([{"type": "local_directory", "path": str(target), "mode": "0700", "action": "update"}])
    target.rmdir()
    target.symlink_to(outside)
    async with running(nc):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.failed")
    assert "rule path-symlink" in failure(found).error
    assert untouched(outside)


async def test_the_executor_refuses_a_path_out_of_scope_even_in_an_approved_plan(
    nc: NATS, store: EventStore, tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan that reached the executor without the planner's and pre-flight's checks (appended
    straight to the log) is still held to the tenant's roots."""
    scope = tmp_path / "scope.yaml"
    scope.write_text(f"roots: [/srv/upm]\ntenants: {{acme: [{tmp_path / 'targets'}]}}\n")
    monkeypatch.setenv("UPM_SCOPE_CONFIG", str(scope))
    plan = plan_of([{"type": "local_file", "path": str(outside), "content": "owned\n"}])
    async with running(nc):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.failed")
    failed = failure(found)
    assert failed.output.rc == 126 and "rule path-scope" in failed.error and "tenants.acme" in failed.error
    assert untouched(outside)
