"""Health at a glance and metrics: ``upm health`` on a real ``upm up``, the health query over the
bus, and the supervisor's aggregated ``/metrics``.

* On a running ``upm up`` (temporary data folder) after one change: every service up, restarts 0,
  no lag, the stream's state, the newest signed head; ``/metrics`` counts events handled by each of
  the five pipeline services. After ``kill -9`` of a service the supervisor restarts it and health
  reports the restart (and is healthy again); a SIGSTOPped service, and a service killed after
  the supervisor, make ``upm health`` exit 1 naming them.
* Over the bus, under an access file, only operators, auditors and admins may ask.
* The pure assessment: what counts as down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from events.lifecycle import ChangeState
from events.store import EventStore
from services.auditor.service import Witnessed
from services.auditor.watchdog import Deadlines
from services.common import connection, statefile
from services.common.errors import CommandRejected
from services.security.access import parse
from upm import app, health, processes

PIPELINE = ("planner", "preflight", "executor", "verifier", "auditor")


def _upm(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def _health(data: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = _upm("health", "--json", "--data", str(data), env=env)
    return done.returncode, json.loads(done.stdout)


def _services(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["services"]}


def _wait(predicate: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {within}s")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_upm_health_and_metrics_on_a_running_upm(tmp_path: Path) -> None:
    data, target = tmp_path / "upm", tmp_path / "made"
    target.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "UPM_DATA")}
    up = _upm("up", "--data", str(data), env=env)
    assert up.returncode == 0, up.stderr
    try:
        done = _upm("submit", f"Create directory {target}/d", "--wait", "--data", str(data), env=env)
        assert done.returncode == 0, done.stdout + done.stderr

        def healthy_with_head() -> dict[str, Any] | None:
            code, report = _health(data, env)
            idle = code == 0 and all(s["pending"] == 0 and s["ack_pending"] == 0
                                     for s in report["services"] if s["name"] in PIPELINE)
            return report if idle and report["head"] else None

        # the change's evidence signed, and every consumer done with the events that followed its close
        report = _wait(healthy_with_head, 30, "a healthy, idle report with a signed head")
        assert report["ok"] and report["problems"] == []
        services = _services(report)
        assert set(services) == set(app.SERVICE_NAMES)
        assert all(s["up"] and s["restarts"] == 0 and s["instances"] == 1 and s["version"] for s in services.values())
        stream = report["stream"]
        assert stream["name"] == "UPM_EVENTS" and stream["messages"] >= 9 and stream["last_seq"] == stream["messages"]
        assert stream["replicas"] == 1 and stream["consumers"] >= len(PIPELINE)
        assert 0 < report["head"]["size"] <= stream["last_seq"] and report["head"]["key_id"].startswith("ed25519:")
        assert report["nats"]["reachable"] and report["supervisor"]["running"]

        # one endpoint sums every process's metrics: each pipeline service handled events
        with urllib.request.urlopen(report["metrics"], timeout=5) as reply:
            scraped = reply.read().decode()
        handled = {n: sum(float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
                          if line.startswith(f'upm_events_handled_total{{service="{n}"'))
                   for n in PIPELINE}
        assert all(count > 0 for count in handled.values()), handled
        assert "upm_handle_seconds_bucket" in scraped and "upm_executor_step_seconds_count" in scraped

        # kill -9: the supervisor restarts it, and health says so
        state = statefile.read_state(data) or {}
        old = int(state["pids"]["planner"])
        os.kill(old, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            code, report = _health(data, env)
            planner = _services(report)["planner"]
            return report if code == 0 and planner["restarts"] == 1 and planner["pid"] != old else None

        report = _wait(restarted, 30, "the planner restarted and healthy")
        assert _services(report)["planner"]["up"]
        with urllib.request.urlopen(report["metrics"], timeout=5) as reply:
            hosting = next(p for p, names in state["processes"].items() if "planner" in names)
            assert f'upm_supervisor_restarts_total{{process="{hosting}"}} 1.0' in reply.read().decode()

        # a stopped process is down, whatever its pid says (the verifier's: restarted with the planner's)
        state = statefile.read_state(data) or {}
        verifier = int(state["pids"]["verifier"])
        os.kill(verifier, signal.SIGSTOP)
        try:
            code, report = _health(data, env)
        finally:
            os.kill(verifier, signal.SIGCONT)
        assert code == 1 and not report["ok"]
        assert [p for p in report["problems"] if p.startswith("verifier:")], report["problems"]
        assert not _services(report)["verifier"]["up"] and _services(report)["executor"]["up"]

        # nothing restarts a service once the supervisor is gone
        os.kill(int(state["supervisor"]), signal.SIGKILL)
        os.kill(int(state["pids"]["executor"]), signal.SIGKILL)
        _wait(lambda: not processes.alive(int(state["pids"]["executor"])), 5, "the executor gone")
        done = _upm("health", "--data", str(data), env=env)
        assert done.returncode == 1
        assert "PROBLEM: executor: not running" in done.stdout and "PROBLEM: supervisor" in done.stdout
    finally:
        _upm("down", "--data", str(data), env=env)


async def _witnessed(tmp_path: Path) -> Witnessed:
    return Witnessed(states=list, head=lambda: None, deadlines=Deadlines(), data_dir=tmp_path)


async def test_under_an_access_file_only_operators_auditors_and_admins_may_ask(
    store: EventStore, tmp_path: Path, host: Any
) -> None:
    nc = store.nc
    access = parse({"admins": ["root"], "tenants": {"acme": {"alice": ["requester"], "olga": ["operator"],
                                                              "audrey": ["auditor"]}}}, "test")
    responder = health.Responder(nc, await _witnessed(tmp_path), services=(), durables=(), access=access)
    await host(responder)
    for who in ("olga", "audrey", "root"):
        asker = await connection.connect(nc.connected_url.geturl(), identity=who)
        try:
            answer = await health.ask_health(asker, principal=who)
            assert answer.problems == [] and answer.stream is not None and answer.stream.name == "UPM_EVENTS"
        finally:
            await asker.close()
    alice = await connection.connect(nc.connected_url.geturl(), identity="alice")
    try:
        with pytest.raises(CommandRejected, match="alice may not ask for health"):
            await health.ask_health(alice, principal="alice")
    finally:
        await alice.close()


# -- the pure assessment ------------------------------------------------------------------------

EXPECTED = ("gateway", "planner")


def _beat(service: str) -> health.Heartbeat:
    return health.Heartbeat(service=service, pid=1, host="h", version="1", started_at="2026-01-01T00:00:00Z")


def _bus(*beats: str, problems: tuple[str, ...] = ()) -> health.BusHealth:
    return health.BusHealth(heartbeats=[_beat(b) for b in beats], consumers=[health.ConsumerLag(service="planner")],
                            stream=None, head=None, stalled=[], problems=list(problems), ping_s=1.5, max_backlog=10,
                            answered_by="test")


def _local(running: dict[str, bool], supervisor: bool = True) -> health.Local:
    state = {"pids": {n: i + 10 for i, n in enumerate(running)}, "supervisor": 99,
             "restarts": {"planner": {"count": 2, "last_exit": -9}}}
    alive = {i + 10: up for i, up in enumerate(running.values())} | {99: supervisor}
    return health.local_facts(state, alive=lambda pid: alive[pid])


def test_healthy_when_every_process_runs_and_answers() -> None:
    report = health.assess(EXPECTED, url="u", local=_local({"gateway": True, "planner": True, "nats-server": True}),
                           bus=_bus("gateway", "planner"))
    assert report.ok and [s.restarts for s in report.services] == [0, 2]
    assert [s.pending for s in report.services] == [None, 0]


def test_a_service_that_does_not_answer_is_down_even_if_its_pid_lives() -> None:
    report = health.assess(EXPECTED, url="u", local=_local({"gateway": True, "planner": True}), bus=_bus("gateway"))
    assert not report.ok and report.problems == [
        "planner: did not answer the health ping within 1.5s (stopped, hung or disconnected)"]


def test_a_dead_supervisor_and_a_dead_service_are_named() -> None:
    report = health.assess(EXPECTED, url="u", local=_local({"gateway": False, "planner": True}, supervisor=False),
                           bus=_bus("planner"))
    assert report.problems[0].startswith("supervisor (pid 99) is not running")
    assert report.problems[1] == "gateway: not running (pid 10 is gone)"


def test_unreachable_nats_and_a_silent_responder_are_problems() -> None:
    down = health.assess(EXPECTED, url="nats://x", local=None, bus=None, unreachable="connection refused")
    assert down.problems == ["nats-server unreachable at nats://x: connection refused"]
    silent = health.assess(EXPECTED, url="nats://x", local=None, bus=None, silent="no answer within 9s")
    assert silent.problems == ["the health responder (hosted by the auditor) did not answer: no answer within 9s"]
    assert health.assess(EXPECTED, url="u", local=None, bus=_bus("gateway", "planner", problems=("x",))).problems \
        == ["x"]


def test_a_silent_responder_takes_down_every_service_of_its_process_and_no_other() -> None:
    shared = {"pids": {"gateway": 10, "auditor": 10, "planner": 11}, "supervisor": 99}
    local = health.local_facts(shared, alive=lambda pid: True)  # alive, but stopped or hung: nobody answers
    report = health.assess(("gateway", "auditor", "planner"), url="u", local=local, bus=None, silent="no answer")
    assert {s.name: s.up for s in report.services} == {"gateway": False, "auditor": False, "planner": True}
    assert [p.split(":")[0] for p in report.problems] == ["the health responder (hosted by the auditor) did not answer",
                                                          "gateway", "auditor"]


def test_a_backlog_beyond_the_limit_counts_only_while_it_does_not_shrink() -> None:
    lag = [health.ConsumerLag(service="planner", pending=900, ack_pending=200)]
    assert health.growing_backlogs({}, lag, 1000) == [
        "planner: 1100 events behind (pending 900, unacknowledged 200; limit 1000) and not catching up; see its log"]
    assert health.growing_backlogs({"planner": 1100}, lag, 1000) != []
    assert health.growing_backlogs({"planner": 5000}, lag, 1000) == []  # catching up
    assert health.growing_backlogs({}, lag, 2000) == []


def test_stalled_changes_are_those_past_their_deadline_or_just_nudged() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ts = (now - timedelta(seconds=200)).isoformat().replace("+00:00", "Z")
    late = ChangeState(change_id="c1", tenant="t", status="planning", last_ts=ts, last_type="intent.submitted")
    fresh = ChangeState(change_id="c2", tenant="t", status="executing", last_ts=ts, last_type="step.started")
    nudged = ChangeState(change_id="c3", tenant="t", status="executing", last_ts=ts, last_type="change.stalled")
    found = health.stalled_changes([late, fresh, nudged], now, Deadlines())
    assert [s.change_id for s in found] == ["c1", "c3"]


async def test_every_hosted_service_answers_the_ping(pipeline: Any, tmp_path: Path) -> None:
    responder = health.Responder(pipeline.nc, await _witnessed(tmp_path), services=app.SERVICE_NAMES,
                                 durables=PIPELINE, access=parse({"tenants": {"t": {"x": ["auditor"]}}}, "t"))
    with anyio.fail_after(10):
        report = await responder.report()
    assert sorted(b.service for b in report.heartbeats) == sorted(app.SERVICE_NAMES)
    assert [c.service for c in report.consumers] == list(PIPELINE) and not report.problems
    assert report.stream is not None and report.stream.replicas == 1
