"""The projections CLI end to end: a real nats-server, a projector process, real DuckDB files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats
import pytest
from upm_history import History, failed, happy, publish

from events.store import EventStore
from services.auditor import evidence
from services.auditor.service import Witness
from upm import cli
from upm.natsserver import EmbeddedNats

HERE = Path(__file__).parent


def upm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def world(nats_server: EmbeddedNats, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A log with closed, packed changes of two tenants, and a projector process following it."""
    h = History()
    ok = happy(h, "acme", published=False)
    happy(h, "acme", at=10, published=False)
    failed(h, "other", at=20, published=False)
    data = tmp_path / "data"

    async def setup() -> None:
        nc = await nats.connect(nats_server.url)
        store = EventStore(nc)
        await store.ensure_stream()
        witness = Witness(nc, data, interval=60)
        ready = anyio.Event()
        task = asyncio.ensure_future(witness.run(ready=ready))
        await ready.wait()
        await publish(store, h.records)
        with anyio.fail_after(20):
            while witness.published < 4:  # noqa: ASYNC110 - 3 closes + the rollback re-pack
                await anyio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logged.append(await store.position())
        await nc.close()

    logged: list[int] = []
    anyio.run(setup)
    proc = subprocess.Popen([sys.executable, str(HERE / "projector_process.py"), nats_server.url,
                             str(data / "projections"), "0", "500"])
    # 33 change events and 4 packs published, beside the signed heads: how many heads the witness signed
    # depends on its timing (two packs close together share one), so the count is read from the log
    yield {"url": nats_server.url, "data": str(data), "change": ok.change_id, "events": str(logged[0])}
    proc.terminate()
    proc.wait(10)


def wait_sql(capsys: pytest.CaptureFixture[str], world: dict[str, str], expected: int) -> None:
    """Until the projector holds ``expected`` events (a fresh projector process on a loaded CI box can take a
    while to start); a failure says what it saw last."""
    deadline = time.monotonic() + 60
    seen: tuple[int, str, str] = (0, "", "")
    while time.monotonic() < deadline:
        seen = upm(capsys, "sql", "SELECT count(*) AS n FROM events", "--all-tenants", "--nats", world["url"], "--json")
        if seen[0] == 0 and json.loads(seen[1]) == [{"n": expected}]:
            return
        time.sleep(0.1)
    raise AssertionError(f"the projector did not catch up to {expected} events; last answer: {seen}")


def test_sql_kpi_score_over_the_bus(capsys: pytest.CaptureFixture[str], world: dict[str, str]) -> None:
    wait_sql(capsys, world, int(world["events"]))
    nats_ = ("--nats", world["url"])
    code, out, _ = upm(capsys, "sql", "SELECT tenant, count(*) AS n FROM events GROUP BY ALL", "--tenant", "acme",
                       *nats_, "--json")
    assert (code, json.loads(out)) == (0, [{"tenant": "acme", "n": 22}])
    code, out, _ = upm(capsys, "sql", "SELECT type FROM events ORDER BY seq LIMIT 2", "--tenant", "acme", *nats_,
                       "--csv")
    assert out.splitlines() == ["type", "intent.submitted", "plan.compiled"]
    code, _, err = upm(capsys, "sql", "ATTACH 'x' AS y", "--tenant", "acme", *nats_)
    assert code == 2 and "select-only" in err

    code, out, _ = upm(capsys, "kpi", "--tenant", "acme", *nats_, "--json")
    rows = {r["kpi"]: r for r in json.loads(out)}
    assert rows["change_success_pct"]["value"] == 100.0 and rows["change_success_pct"]["meets_l4"] is True
    code, out, _ = upm(capsys, "kpi", "--all-tenants", *nats_)
    assert "ChangeSuccess_%" in out and "≥ 98" in out and "66.667" in out
    assert out.splitlines()[0].split() == ["KPI", "value", "unit", "L3", "L4", "meets"]

    code, out, _ = upm(capsys, "score", "--all-tenants", *nats_, "--json")
    score = json.loads(out)
    assert score["overall"] <= 3 and score["row"]["Evidence Links"]
    code, out, _ = upm(capsys, "score", "--all-tenants", *nats_)
    assert "| Platform |" in out and "to reach L" in out


def test_evidence_download_verify_and_tamper(capsys: pytest.CaptureFixture[str], world: dict[str, str],
                                            tmp_path: Path) -> None:
    wait_sql(capsys, world, int(world["events"]))  # the projector answers evidence queries too
    target = tmp_path / "pack.tar"
    code, out, err = upm(capsys, "evidence", world["change"], "-o", str(target), "--nats", world["url"],
                         "--data", world["data"])
    assert code == 0, err
    assert "verified" in out
    code, out, _ = upm(capsys, "evidence", "verify", str(target), "--data", world["data"], "--json")
    assert json.loads(out)["change_id"] == world["change"]
    files = evidence.read_pack(target.read_bytes())
    files["verify.json"] = files["verify.json"].replace(b"true", b"tru3", 1)
    target.write_bytes(evidence._tar(files))
    code, _, err = upm(capsys, "evidence", "verify", str(target), "--data", world["data"])
    assert code == 1 and "verify.json was changed" in err


def test_audit_verify_and_offline_sql(capsys: pytest.CaptureFixture[str], world: dict[str, str]) -> None:
    wait_sql(capsys, world, int(world["events"]))
    code, out, _ = upm(capsys, "audit", "verify", "--nats", world["url"], "--data", world["data"],
                       "--require-signatures", "--json")
    report = json.loads(out)
    assert code == 0 and report["events"] == int(world["events"]) and report["heads_signature_checked"] == report["heads"] > 0
    code, out, err = upm(capsys, "sql", "SELECT count(*) AS n FROM events", "--tenant", "other", "--offline",
                         "--data", world["data"], "--json")
    # the projector process owns the file; under --json the error is JSON on stdout (as `upm` prints it)
    assert code == 3 and "holds the file" in json.loads(out)["error"]["message"] and not err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    names = ("sql", "kpi", "score", "evidence", "audit", "serve")
    assert all(cli.COMMANDS[name][0].startswith("upm.commands.read:") and cli.COMMANDS[name][1] for name in names)
    for name in names:
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0 and len(capsys.readouterr().out) > 80, name
