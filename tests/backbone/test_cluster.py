"""Scale-out on NATS itself, as a user runs it: ``upm up --cluster 3 --replicas 2`` and
``upm up --replicas 2`` through the CLI, real processes, real ``kill -9``.

* A three-node JetStream cluster on loopback, two copies of every service: under a load of
  changes the stream leader's node is killed, then the node the services are connected through,
  then one copy of each service. Every acknowledged change closes ``succeeded`` exactly once, no
  step runs twice, nothing is stuck; every stream, key-value and object store UPM made (and every
  durable consumer) has three replicas.
* Two copies of every service, on one server and on the cluster: every change closes without the stall watchdog
  (its deadline set to an hour: no ``change.stalled`` may appear), so no delivery was acknowledged
  without its output; no copy dies on the log heads both auditors write.

Bounded for a 2-core box (the file runs in about 2.5 minutes): ``UPM_CLUSTER_CHANGES`` (default
200) changes under the kills, ``UPM_REPLICA_CHANGES`` (default 1,000) on one server and
``UPM_REPLICA_CLUSTER_CHANGES`` (default 300) on the cluster without kills.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
from upm_load import (
    assert_each_closed_once_and_ran_once,
    clean_env,
    connect,
    outcomes,
    state,
    submit_all,
    upm,
)

from events.model import ChangeStalled
from events.subjects import STREAM
from services.executor.outputs import OutputStore
from upm import app, processes

CLUSTER_CHANGES = int(os.environ.get("UPM_CLUSTER_CHANGES", "200"))  # the brief's 200
REPLICA_CHANGES = {1: int(os.environ.get("UPM_REPLICA_CHANGES", "1000")),  # one server: the brief's 1,000
                   3: int(os.environ.get("UPM_REPLICA_CLUSTER_CHANGES", "300"))}  # R3 on 2 cores: ~3x slower
BACK_WITHIN_S = 20.0


def _wait_back(data: Path, name: str, old_pid: int) -> None:
    started = time.monotonic()
    while time.monotonic() - started < BACK_WITHIN_S:
        pid = int(state(data)["pids"][name])
        if pid != old_pid and processes.alive(pid):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} (pid {old_pid}) not back within {BACK_WITHIN_S}s")


def _kill(data: Path, name: str) -> None:
    pid = int(state(data)["pids"][name])
    os.kill(pid, signal.SIGKILL)
    _wait_back(data, name, pid)


async def _leader(url: str) -> str:
    """The process name of the event stream's leader (``nats-server-<i>`` for server ``upm-<i>``)."""
    nc = await connect(url)
    try:
        info = await nc.jetstream().stream_info(STREAM)
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader
    return "nats-server-" + info.cluster.leader.rsplit("-", 1)[1]


def _busiest_node(data: Path, but: str) -> str:
    """The node (other than ``but``) with the most client connections: the one services connect through."""
    counts: dict[str, int] = {}
    for ports in (data / "cluster").glob("n*/ports/*.ports"):
        monitor = json.loads(ports.read_text())["monitoring"][0]
        with urllib.request.urlopen(f"{monitor}/connz", timeout=5) as reply:  # loopback only
            counts[f"nats-server-{ports.parent.parent.name[1:]}"] = int(json.load(reply)["num_connections"])
    counts.pop(but, None)
    return max(counts, key=lambda n: counts[n])


def _kills(data: Path, url: str, report: dict[str, Any]) -> None:
    """The stream leader's node, then the node most services are connected through, then one copy of
    each service process (alternating first and second copies), each after the last one is back."""
    time.sleep(4.0)
    leader = anyio.run(_leader, url)
    _kill(data, leader)
    report["killed"].append(leader)
    time.sleep(3.0)
    busiest = _busiest_node(data, leader)
    _kill(data, busiest)
    report["killed"].append(busiest)
    report["restarted"] = list(report["killed"])
    for k, (process, hosted) in enumerate(app.layout()):  # a service restarts with the process hosting it
        time.sleep(1.0)
        copy = "" if k % 2 else ".2"
        _kill(data, f"{hosted[0]}{copy}")
        report["killed"].append(f"{process}{copy}")
        report["restarted"] += [f"{name}{copy}" for name in hosted]


async def _replicas(url: str) -> dict[str, int]:
    """Every stream's replicas, every durable consumer's (inherited: 0 means the stream's)."""
    nc = await connect(url)
    try:
        js = nc.jetstream()
        await OutputStore(js, "UPM_OUTPUTS", 1024)._store()  # the executor makes it at its first long output
        found: dict[str, int] = {}
        for info in await js.streams_info():
            found[info.config.name] = info.config.num_replicas or 1
            assert info.cluster is not None and len(info.cluster.replicas or []) == found[info.config.name] - 1
        for consumer in await js.consumers_info(STREAM):
            if consumer.config.durable_name:
                found[f"consumer {consumer.name}"] = consumer.config.num_replicas or found[STREAM]
        return found
    finally:
        await nc.close()


def _assert_no_traceback(data: Path) -> None:
    for log in (data / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{log.name}:\n{text[-3000:]}"
        assert "duplicate message id is in process" not in text, log.name


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_three_node_cluster_with_two_copies_of_every_service_loses_nothing_when_nodes_and_copies_die(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPM_REPLICAS", "3")  # as the executor has it (upm up --cluster 3), for its output store
    data, target = tmp_path / "upm", tmp_path / "made"
    target.mkdir()
    env = clean_env(UPM_STALL_AFTER_S="30", UPM_STALL_CHECK_S="2")
    up = upm("up", "--data", str(data), "--cluster", "3", "--replicas", "2", "--json", env=env, timeout=180)
    assert up.returncode == 0, up.stderr
    url = json.loads(up.stdout)["url"]
    assert len(url.split(",")) == 3
    report: dict[str, Any] = {"killed": []}
    try:
        async def load() -> dict[int, str]:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, _kills, data, url, report)
                return await submit_all(url, target, CLUSTER_CHANGES, every_s=0.2)

        acknowledged = anyio.run(load)
        events = anyio.run(outcomes, url, acknowledged, 120.0)
        replicas = anyio.run(_replicas, url)
        restarts = state(data)["restarts"]
    finally:
        down = upm("down", "--data", str(data), "--json", env=env)
    assert down.returncode == 0, down.stderr

    assert_each_closed_once_and_ran_once(CLUSTER_CHANGES, acknowledged, events, target)
    assert {"UPM_EVENTS", "KV_UPM_RATES", "OBJ_UPM_EVIDENCE", "OBJ_UPM_OUTPUTS"} <= set(replicas)
    assert set(replicas.values()) == {3}, replicas
    assert len(report["killed"]) == 2 + len(app.layout()) and len(set(report["killed"][:2])) == 2, report
    assert {n: r["count"] for n, r in restarts.items()} == dict.fromkeys(report["restarted"], 1)
    _assert_no_traceback(data)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("servers", [1, 3], ids=["one-server", "three-node-cluster"])
def test_two_copies_of_every_service_close_every_change_without_the_watchdog_and_never_die(
    tmp_path: Path, servers: int
) -> None:
    data, target = tmp_path / "upm", tmp_path / "made"
    target.mkdir()
    env = clean_env(UPM_STALL_AFTER_S="3600", UPM_STALL_CHECK_S="5")
    cluster = ("--cluster", str(servers)) if servers > 1 else ()
    up = upm("up", "--data", str(data), *cluster, "--replicas", "2", "--json", env=env, timeout=180)
    assert up.returncode == 0, up.stderr
    url = json.loads(up.stdout)["url"]
    try:
        acknowledged = anyio.run(lambda: submit_all(url, target, REPLICA_CHANGES[servers], every_s=0.02, parallel=32))
        events = anyio.run(outcomes, url, acknowledged, 90.0)
        restarts = state(data)["restarts"]
    finally:
        down = upm("down", "--data", str(data), "--json", env=env)
    assert down.returncode == 0, down.stderr

    stalled = [i for i, ev in events.items() if any(isinstance(p, ChangeStalled) for p in ev)]
    assert not stalled, f"{len(stalled)} change(s) needed the watchdog"
    assert_each_closed_once_and_ran_once(REPLICA_CHANGES[servers], acknowledged, events, target)
    assert restarts == {}, restarts  # no copy died (on the log heads or anything else)
    _assert_no_traceback(data)
