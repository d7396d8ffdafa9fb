"""Real targets for the whole pipeline: a moto server (driven by the real ``aws`` CLI) and an
embedded PostgreSQL server (driven by the real ``psql``), each started once per module by the
launchers ``upm up --with aws,postgres`` uses (``upm/emulators.py``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from targets_helpers import DRIFT_INTERVAL

from events.store import EventStore
from upm import emulators
from upm.emulators import AwsTarget, PgTarget, Targets


@pytest.fixture(scope="module")
def own_dir() -> Iterator[Path]:
    """The module's folder for its servers, outside pytest's numbered temp folders (which a
    concurrent pytest run may prune while a server still writes there)."""
    folder = Path(tempfile.mkdtemp(prefix="upm-targets-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def aws_target(own_dir: Path) -> Iterator[AwsTarget]:
    target = emulators.start_moto(own_dir / "aws", log=own_dir / "moto.log")
    yield target
    emulators.stop(Targets(aws=target).state())
    if target.process is not None:
        target.process.wait()  # already reaped by stop(): this only tells the Popen object


@pytest.fixture(scope="module")
def pg_target(own_dir: Path) -> Iterator[PgTarget]:
    target = emulators.start_postgres(own_dir / "postgres")
    yield target
    emulators.stop(Targets(postgres=target).state())


@pytest.fixture
def targets_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Targets:
    """The environment ``upm up`` gives the executor (the pipeline runs in this process): the
    targets the test module started, their brokers, and a drift loop of one second."""
    aws = request.getfixturevalue("aws_target") if "aws_target" in request.fixturenames else None
    pg = request.getfixturevalue("pg_target") if "pg_target" in request.fixturenames else None
    targets = Targets(aws=aws, postgres=pg)
    for name, value in targets.service_env("executor").items():
        monkeypatch.setenv(name, value)
    brokers = {"local": "none"} | ({"aws": "sts"} if aws else {}) | ({"postgres": "postgres"} if pg else {})
    executor_config = tmp_path / "executor.json"
    executor_config.write_text(json.dumps({"credentials": {"brokers": brokers}}))
    monkeypatch.setenv("UPM_EXECUTOR_CONFIG", str(executor_config))
    verifier_config = tmp_path / "verifier.yaml"
    verifier_config.write_text(f"drift: {{interval_s: {DRIFT_INTERVAL}, jitter: 0.0, confirm_backoff_s: 0.01}}\n")
    monkeypatch.setenv("UPM_VERIFIER_CONFIG", str(verifier_config))
    preflight_config = tmp_path / "preflight.json"  # deletes need an approver: bob
    preflight_config.write_text(json.dumps({"groups": {"*": {"platform-owners": ["bob"]}}}))
    monkeypatch.setenv("UPM_PREFLIGHT_CONFIG", str(preflight_config))
    planner_config = tmp_path / "planner.yaml"  # SQS queue URLs name the emulator's account
    planner_config.write_text('aws_account_id: "123456789012"\n')
    monkeypatch.setenv("UPM_PLANNER_CONFIG", str(planner_config))
    return targets


@pytest.fixture
async def targets_pipeline(targets_env: Targets, pipeline: EventStore) -> AsyncIterator[EventStore]:
    """Every service in this process, with the targets' environment set before they start."""
    yield pipeline
