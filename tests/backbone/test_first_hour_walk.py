"""Issue 22, the first hour end to end: approving in open mode, calibrated risk lanes, targets
checked before mutation, `upm up`/`down` agreeing on the data folder, the demo's event count,
upm.sh's progress, shell completion, and the scripted walk a new user takes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.ids import new_id
from events.model import ChangeClosed, StepOutput
from events.plan import Command, Plan
from events.store import new_event
from services.common import client, statefile
from services.common.errors import ConfigError
from services.planner import CompileInput, compile_intent
from services.preflight import load_config, parse_config
from services.preflight.checks import guarded_read
from services.preflight.core import where_groups
from services.preflight.reach import reach
from services.preflight.risk import Subject, score
from upm import app, cliargs, instances

UPM = [sys.executable, "-m", "upm.cli"]
ROOT = Path(__file__).resolve().parents[2]
NOON = datetime(2025, 10, 6, 12, 0, tzinfo=UTC)


def plan_of(request: str) -> Plan:
    return compile_intent(CompileInput(request=request, tenant="default", initiator="alice"))


def level(plan: Plan, environment: str) -> str:
    subject = Subject(tenant="default", change_id="c", environment=environment, initiator="alice", plan=plan)
    return score(subject, parse_config({}), NOON).level


# -- item 2: open mode can approve; ordinary dev changes take the automatic lane --------------------------


def test_approvers_become_platform_owners_of_every_tenant(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPM_PREFLIGHT_CONFIG", raising=False)
    path = app._preflight_config(tmp_path, ("bob", "carol"), None)
    assert path is not None
    config = load_config(path)
    assert config.group_members("any-tenant")["platform-owners"] == {"bob", "carol"}
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"groups": {"*": {"platform-owners": ["dave"]}}}))
    with pytest.raises(ConfigError, match="add them to it under groups"):
        app._preflight_config(tmp_path, ("bob",), mine)
    mine.write_text(json.dumps({"grops": {}}))
    with pytest.raises(ConfigError, match="Known keys"):  # a bad file stops `upm up`, not every pre-flight
        app._preflight_config(tmp_path, (), mine)
    with pytest.raises(Exception, match="not a name"):
        cliargs.names("bob,rm -rf")
    assert cliargs.names("bob, carol,bob") == ("bob", "carol")
    # a refused approval in open mode says how to name approvers at all
    assert "upm up --approvers" in where_groups(parse_config({}, source="embedded defaults"))
    assert str(path) in where_groups(config)


def test_ordinary_dev_changes_are_low_risk_and_prod_still_needs_two(tmp_path: Path) -> None:
    twenty = " and ".join(f"directory {tmp_path / f'd{i:02}'}" for i in range(20))
    assert level(plan_of(f"Create {twenty}"), "dev") == "low"
    delete = plan_of(f"Delete directory {tmp_path / 'old'}")
    assert level(delete, "dev") == "low"
    assert level(delete, "staging") == "medium"
    assert level(plan_of(f"Create directory {tmp_path / 'p'}"), "prod") == "medium"  # prod: two approvers (the walk)


# -- item 3: a target that cannot answer halts in pre-flight, saying what to run -----------------------


async def test_an_unconfigured_target_halts_before_mutation(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("UPM_AWS_ENDPOINT", "UPM_AWS_REGION", "UPM_AWS_OBSERVER_FILE", "UPM_PG_HOST", "UPM_PG_PORT",
                "UPM_PG_OBSERVER_USER", "UPM_PG_OBSERVER_PASSFILE"):
        monkeypatch.delenv(var, raising=False)
    aws = await reach("aws", "us-east-1", guarded_read, cache=False)
    assert not aws.ok and "upm up --with aws" in aws.detail and "--aws-endpoint URL" in aws.detail
    pg = await reach("postgres", "local", guarded_read, cache=False)
    assert not pg.ok and "upm up --with postgres" in pg.detail and "--postgres-dsn" in pg.detail


async def test_a_target_that_answered_is_not_asked_again_for_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPM_PG_PORT", "65001")  # a key of its own: no other test's answer is reused
    calls: list[tuple[str, ...]] = []
    clock = [1000.0]

    async def answers(command: Command, target: str, timeout_s: float) -> StepOutput:
        calls.append(command.argv)
        return StepOutput(rc=0, stdout="1")

    for _ in range(3):
        assert (await reach("postgres", "local", answers, cache=True, now=lambda: clock[0])).ok
    assert len(calls) == 1
    clock[0] += 61
    assert (await reach("postgres", "local", answers, cache=True, now=lambda: clock[0])).ok
    assert len(calls) == 2 and calls[0][0] == "psql" and "select 1" in calls[0]


# -- item 4: `upm down` finds what `upm up --data DIR` started ------------------------------------------


def test_the_registry_lists_running_instances_and_drops_stale_ones(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    one, two = tmp_path / "one", tmp_path / "two"
    instances.register(one)
    instances.register(two)
    assert instances.running(lambda f: True) == [one, two]
    assert instances.running(lambda f: f == two) == [two]
    assert instances.running(lambda f: True) == [two]  # the stale entry of `one` is gone
    instances.unregister(two)
    assert instances.running(lambda f: True) == []


def test_down_without_data_names_each_running_instance_and_stops_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from upm.cli import main

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("UPM_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./.upm here
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:  # two folders whose state names a live process (this one: nothing is signalled)
        folder.mkdir()
        statefile.write_state(folder, {"pids": {"nats-server": os.getpid()}})
        instances.register(folder)
    assert main(["down"]) == 2
    err = capsys.readouterr().err
    assert "2 UPM instances are running" in err and all(f"upm down --data {f}" in err for f in folders)
    assert all(app.is_running(f) for f in folders)


# -- item 7: the demo's live line and its table agree; upm.sh says what it installs ---------------------


def test_the_closing_line_counts_every_event_like_the_table() -> None:
    closed = ChangeClosed(outcome="succeeded", events=9, chain_head="0" * 64)  # nine events came before it
    event = new_event(closed, event_id=new_id(), change_id=new_id(), tenant="default", ts="2025-10-06T12:00:00Z",
                      actor="auditor", source="api")
    assert "10 events" in client.summary(event)  # what the demo's table counts: the close included


def test_upm_sh_says_it_is_installing_and_shows_pip_progress() -> None:
    script = (ROOT / "upm.sh").read_text()
    install = [line for line in script.splitlines() if "pip install" in line and "-e" in line]
    assert install and "--quiet" not in install[0]
    assert "installing dependencies" in script


# -- item 9: shell completion: click's own, asking `upm` for the words; command modules load only when needed ---


def _complete(words: str, shell: str = "bash") -> str:
    """What `upm` answers a completion script completing the last of ``words``."""
    env = {**os.environ, "_UPM_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    done = subprocess.run([*UPM], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


def test_completion_scripts_complete_every_command_subcommand_and_flag() -> None:
    for shell, marker in (("bash", "complete"), ("zsh", "#compdef")):
        done = subprocess.run([*UPM, "completion", shell], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and marker in done.stdout and "_UPM_COMPLETE" in done.stdout and not done.stderr
    assert {"approve", "approvals"} <= {line.split(",")[1] for line in _complete("upm ap").splitlines()}
    assert "--approvers" in _complete("upm up --appr")
    assert "diff" in _complete("upm plan d") and "verify" in _complete("upm evidence v")
    assert "prod" in _complete("upm submit x --env p")
    assert "approve" in _complete("upm ap", shell="zsh")


# -- the walk ------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_first_hour_walk(tmp_path: Path) -> None:
    """Fresh data folder → `upm up --approvers` → a prod change (alice) → approvals (bob, carol) → watch,
    sql, kpi, evidence → `upm down` without --data: no traceback anywhere; every refusal says what to do."""
    data, home = tmp_path / "data", tmp_path / "cwd"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPM_", "NATS_"))}
    env |= {"XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    outputs: list[str] = []

    def upm(*argv: str, code: int = 0) -> str:
        done = subprocess.run([*UPM, *argv], cwd=home, env=env, capture_output=True, text=True, timeout=60)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == code, (argv, done.stdout, done.stderr)
        return done.stdout + done.stderr

    try:
        said = upm("up", "--data", str(data), "--approvers", "bob,carol")
        assert "bob, carol can approve" in said and "upm approve CHANGE_ID --as bob" in said
        assert f"stop with `upm down --data {data}`" in said
        halted = upm("submit", "Create S3 bucket first-hour-logs", "--as", "alice", "--wait", "--timeout", "30",
                     "--data", str(data), code=1)  # no AWS target: halted in pre-flight, saying what to run
        assert "preflight" in halted and "upm up --with aws" in halted
        target = tmp_path / "prod-dir"
        change = upm("submit", f"Create directory {target} with mode 0750", "--env", "prod", "--as", "alice",
                     "--data", str(data)).strip()
        assert re.fullmatch(r"[0-9a-f-]{36}", change)
        refused = upm("approve", change, "--as", "mallory", "--data", str(data), code=2)
        assert "not a member of platform-owners" in refused and "groups" in refused  # names where to add her
        for who in ("bob", "carol"):
            upm("approve", change, "--as", who, "--reason", "looks right", "--data", str(data))
        watched = upm("watch", change, "--from-start", "--as", "alice", "--data", str(data))
        assert "prod-two-approvers" in watched or "manual" in watched
        assert "succeeded" in watched and target.is_dir()
        rows = upm("sql", f"select change_id from changes where change_id = '{change}'", "--as", "alice",
                   "--data", str(data))
        assert change in rows
        upm("kpi", "--as", "alice", "--data", str(data))
        pack = tmp_path / "pack.tar"
        upm("evidence", change, "-o", str(pack), "--as", "alice", "--data", str(data))
        assert pack.stat().st_size > 0
    finally:
        stopped = upm("down")  # no --data: it finds the one instance this walk started
    assert "supervisor" in stopped and not app.is_running(data)
    again = upm("down")
    assert "nothing was running" in again
    assert not any("Traceback" in text for text in outputs)
