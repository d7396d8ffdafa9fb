"""Safe defaults (issue 11, item 5): no insecure TLS retry unless the policy allows it, private
files under the data folder, credentials in nothing UPM stores. Each test names the threat it covers.

The HTTPS server with an untrusted certificate and curl's pin come from the guard tests, the
pinned helper CLI and the plan shortcuts from the executor tests (imported, not copied).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS

from events.model import EvidencePublished
from events.plan import Command
from events.store import EventStore
from services.auditor.evidence import EVIDENCE_BUCKET, read_pack
from services.common import client
from services.common.settings import Settings
from services.executor.config import ENV_VAR as EXECUTOR_CONFIG_ENV
from services.executor.config import load_config, parse_config
from services.guard import DEFAULT_POLICY, GuardPolicy
from services.guard.steps import execute
from services.security.tls import Pki
from upm import app
from upm.natsserver import EmbeddedNats


def _test_module(folder: str, name: str) -> ModuleType:
    """A module of another test folder, imported under the name pytest gives it (folder on sys.path)."""
    path = str(Path(__file__).resolve().parents[1] / folder)
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(name)


guard_tls = _test_module("guard", "test_guard_tls")
helpers = _test_module("executor", "executor_helpers")
untrusted_https = guard_tls.untrusted_https  # fixture: HTTPS on 127.0.0.1 with a fresh self-signed certificate


# -- the TLS fallback ----------------------------------------------------------------------


async def _curl(url: str, policy: GuardPolicy) -> tuple[int, list[bool], list[str], str]:
    """curl ``url`` through the step runner: rc, each attempt's tls_fallback flag, warning kinds, stdout."""
    done = await execute(Command(argv=("curl", "-sS", url), display=f"curl -sS {url}"), timeout_s=20,
                         pins=guard_tls.curl_pins(), policy=policy)
    out = done.output
    return out.rc, [t.tls_fallback for t in out.tries], [w.kind for w in done.warnings], out.stdout


@pytest.mark.parametrize("source", ["executor defaults", "read-backs"])
async def test_a_certificate_error_is_not_retried_insecurely_by_default(
    untrusted_https: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat: a man in the middle presenting a certificate nobody trusts. With no policy saying
    otherwise, neither the executor (its default configuration) nor a read-back (the verifier's,
    pre-flight's) retries with verification off: the step fails on the certificate error."""
    monkeypatch.delenv(EXECUTOR_CONFIG_ENV, raising=False)
    policy = load_config().guard_policy() if source == "executor defaults" else DEFAULT_POLICY
    assert not policy.allow_tls_fallback
    rc, fallbacks, warnings, stdout = await _curl(untrusted_https, policy)
    assert rc == 60, f"curl should fail on the untrusted certificate (rc 60), got rc {rc}"
    assert fallbacks == [False], f"one verified attempt only, got tls_fallback flags {fallbacks}"
    assert warnings == [] and stdout == ""


async def test_only_a_policy_that_allows_it_retries_insecurely_and_says_so(untrusted_https: str) -> None:
    """Threat: a silent downgrade. When an operator's policy does allow the fallback, the insecure
    retry is marked on its attempt and raises a warning (and this shows the refusal above is the
    policy's doing: the same server answers once verification is off)."""
    policy = parse_config({"guard": {"allow_tls_fallback": True}}).guard_policy()
    rc, fallbacks, warnings, stdout = await _curl(untrusted_https, policy)
    assert (rc, stdout) == (0, "hello over tls\n")
    assert fallbacks == [False, True] and warnings == ["tls-fallback"]


# -- file modes under the data folder ------------------------------------------------------


def _public(relative: Path) -> bool:
    """Public by design: the TLS certificates (their keys are ``*.key``) and the signing public key."""
    return (relative.parent, relative.suffix) in ((Path("tls"), ".pem"), (Path("keys"), ".pub"))


def _too_open(folder: Path) -> list[str]:
    """Every file or directory under ``folder`` (itself included) that its group or others may use;
    public files may be read by anyone, but written by their owner only."""
    found = []
    for path in (folder, *folder.rglob("*")):
        relative = path.relative_to(folder)
        try:
            status = path.lstat()
        except FileNotFoundError:  # a running server's temporary file, gone since the listing
            continue
        mode = stat.S_IMODE(status.st_mode)
        if not stat.S_ISLNK(status.st_mode) and mode & (0o022 if _public(relative) else 0o077):
            found.append(f"{relative} {mode:04o}")
    return sorted(found)


async def _one_change(url: str, pki: Pki, target: Path, projections: Path) -> None:
    """A change through the running services, until the projector has written its tenant's file."""
    nc = await nats.connect(url, tls=pki.client_context("cli"), connect_timeout=5)
    try:
        request = {"request": f"Create directory {target} with mode 0750", "initiator": "alice"}
        change_id = await client.submit(nc, "acme", request, principal="alice")
        status = await client.wait_closed(EventStore(nc), "acme", change_id, within=30)
        assert status.outcome == "succeeded", status.reason
        with anyio.fail_after(10):
            while not (projections / "tenants" / "acme.duckdb").exists():  # noqa: ASYNC110 - another process's file
                await anyio.sleep(0.05)
    finally:
        await nc.close()


def _upm(*args: str) -> str:
    """Run the `upm` CLI (as an operator would, so that no service's process object lives here)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "UPM_TLS_DIR", "UPM_DATA", EXECUTOR_CONFIG_ENV)}
    done = subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 0, f"upm {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def test_files_under_the_data_folder_are_private_to_their_owner(tmp_path: Path) -> None:
    """Threat: another local user reading (or changing) what `upm up` keeps: its state, the TLS
    keys, the server configuration, the JetStream store, the logs (commands' output), the
    projections (the audit trail), run markers. Checked while running after one change, and after
    `upm down`; only certificates and the public signing key may be world-readable (never writable)."""
    folder = tmp_path / "upm"
    state = json.loads(_upm("up", "--tls", "--data", str(folder), "--json"))
    try:
        anyio.run(_one_change, state["url"], Pki(folder / "tls"), tmp_path / "made", folder / "projections")
        while_running = _too_open(folder)
    finally:
        _upm("down", "--data", str(folder))
    after_down = _too_open(folder)
    assert while_running == [], f"group/others may use these under the data folder (mode shown): {while_running}"
    assert after_down == [], f"group/others may use these after `upm down`: {after_down}"


# -- secrets -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _serving(nc: NATS, names: tuple[str, ...]) -> AsyncIterator[None]:
    """The named services as tasks of this process, until the block ends."""
    ready = anyio.Event()
    started: list[str] = []

    def mark(name: str) -> None:
        started.append(name)
        if len(started) == len(names):
            ready.set()

    task = asyncio.ensure_future(app.serve(nc, names, Settings.from_env(), ready=mark))
    try:
        with anyio.fail_after(15):
            await ready.wait()
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _files_holding(needle: bytes, *folders: Path) -> list[str]:
    return sorted(str(p) for f in folders for p in f.rglob("*") if p.is_file() and needle in p.read_bytes())


LEAKY_TOOL = """
    from pathlib import Path
    from services.security.credentials import check_local_token
    token = os.environ.get('UPM_LOCAL_TOKEN', '')
    if check_local_token(Path(os.environ.get('UPM_LOCAL_TOKEN_STORE', '/nonexistent')), token) is None:
        sys.exit(77)
    Path(sys.argv[2]).write_text(token)
    print('token=' + token + ' ' + 'y' * 3000)
    print('Authorization: Bearer ' + token, file=sys.stderr)
    Path(sys.argv[1]).write_text('done\\n')
"""


async def test_a_step_credential_reaches_no_stored_byte_pack_or_log(
    nats_server: EmbeddedNats, nc: NATS, store: EventStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Threat: a short-lived credential outliving its change in what UPM keeps. A step's CLI gets
    a token and prints it on stdout and stderr; after executor, verifier and auditor closed the
    change and published its evidence pack, the token is in no byte JetStream stored (events,
    stored outputs, the evidence object store), no file of the data folder or the token store,
    no file of the published pack, and no log record."""
    caplog.set_level(logging.DEBUG)
    tool = helpers.make_tool(tmp_path / "bin", "leaky", LEAKY_TOOL)
    tokens, data = tmp_path / "tokens", tmp_path / "upm-data"
    config = tmp_path / "executor.json"
    config.write_text(json.dumps({"pins": helpers.pins(tool), "output": {"event_bytes": 1000},
                                  "credentials": {"brokers": {"local": "token"}, "token_store": str(tokens)}}))
    monkeypatch.setenv(EXECUTOR_CONFIG_ENV, str(config))
    monkeypatch.setenv("UPM_DATA", str(data))
    marker, spy = tmp_path / "marker", tmp_path / "spy"
    async with _serving(nc, ("executor", "verifier", "auditor")):
        change = await helpers.submit(store, helpers.tool_plan(tool, [(str(marker), str(spy))], [marker]))
        found = await helpers.wait_for(store, change, "evidence.published")
    token = spy.read_text()
    assert token.startswith("upmtok_"), "the step should have run with a token"

    on_disk = (nats_server.data_dir, data, tokens)
    assert _files_holding(b"token=*** ", *on_disk), "the masked output should be on disk (the scan's control)"
    assert _files_holding(token.encode(), *on_disk) == []
    published = next(e.payload for e in found if isinstance(e.payload, EvidencePublished))
    pack = read_pack((await (await store.js.object_store(EVIDENCE_BUCKET)).get(published.object_name)).data or b"")
    assert any(b"token=***" in body for body in pack.values()), "the pack should hold the masked output"
    assert [name for name, body in pack.items() if token.encode() in body] == []
    assert token not in caplog.text
