"""`upm up --with aws,postgres` starts the targets beside the services, and `upm down` stops them
(the CLI, in its own process, as a person runs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from targets_helpers import sql

from events.store import EventStore
from services.common import client, connection, statefile
from upm.emulators import PgTarget
from upm.processes import alive


def upm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="upm-up-"))
    yield path
    upm("down", "--data", str(path))
    shutil.rmtree(path, ignore_errors=True)


def _environ(pid: int) -> dict[str, str]:
    """The environment a running process was started with (Linux ``/proc``)."""
    text = Path(f"/proc/{pid}/environ").read_text()
    return dict(entry.split("=", 1) for entry in text.split("\0") if "=" in entry)


async def test_up_with_aws_and_postgres_runs_a_change_on_each_and_down_stops_everything(folder: Path) -> None:
    started = upm("up", "--with", "aws,postgres", "--data", str(folder), "--json")
    assert started.returncode == 0, started.stderr
    state = json.loads(started.stdout)
    targets = state["targets"]
    assert targets["aws"]["endpoint"].startswith("http://127.0.0.1:") and alive(targets["aws"]["pid"])
    assert targets["postgres"]["host"] == "127.0.0.1" and alive(targets["postgres"]["pid"])
    recorded = (folder / statefile.STATE_FILE).read_text()
    given = _environ(int(state["pids"]["executor"]))  # what the executor got to reach the targets
    secrets = [given["AWS_SECRET_ACCESS_KEY"], given["UPM_POSTGRES_DSN"].split("@")[0].rsplit(":", 1)[1]]
    assert all(len(v) >= 8 and v not in recorded for v in secrets)  # pids, endpoints and names only
    assert "secret_access_key" not in recorded.lower() and "postgresql://" not in recorded
    brokers = json.loads((folder / "executor.json").read_text())["credentials"]["brokers"]
    assert brokers == {"local": "none", "aws": "sts", "postgres": "postgres"}

    nc = await connection.connect(state["url"])
    try:
        store = EventStore(nc)
        for request in ("Create S3 bucket up-bucket with encryption", "Create postgres database up_db"):
            change_id = await client.submit(nc, "acme", {"request": request}, principal="alice")
            status = await client.wait_closed(store, "acme", change_id, within=90)
            assert status.outcome == "succeeded", (request, status.reason)
    finally:
        await nc.close()
    password = (folder / "postgres" / "superuser.password").read_text().strip()
    target = PgTarget(host="127.0.0.1", port=targets["postgres"]["port"], observer_passfile=Path(os.devnull),
                      dsn=f"postgresql://postgres:{password}@127.0.0.1:{targets['postgres']['port']}/postgres")
    assert sql(target, "SELECT datname FROM pg_database WHERE datname = 'up_db'") == "up_db"

    down = upm("down", "--data", str(folder), "--json")
    assert down.returncode == 0, down.stderr
    stopped = json.loads(down.stdout)["stopped"]
    assert {"executor", "nats-server", "moto", "postgres"} <= set(stopped)
    assert not alive(targets["aws"]["pid"]) and not alive(targets["postgres"]["pid"])
