"""Must-show: a credential handed to a step appears in no event, log line, stored output or
evidence file; its expiry is in the log; it is revoked when the change stops running."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from executor_helpers import config, events, make_tool, pins, running, submit, tool_plan, wait_for
from nats.aio.client import Client as NATS

from events.model import CredentialsIssued, CredentialsRevoked, StepCompleted
from events.store import EventStore
from services.auditor.evidence import sections
from services.security.credentials import (
    CredentialsUnavailable,
    LocalTokenBroker,
    NoCredentials,
    broker_for,
    check_local_token,
)


async def test_a_step_gets_a_short_lived_token_that_is_never_recorded(
    nc: NATS, store: EventStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A real pinned CLI that authenticates with the token it finds in its environment, and
    # then misbehaves: it echoes the token on stdout and in an Authorization header on stderr.
    tool = make_tool(tmp_path / "bin", "tokcheck", """
        from pathlib import Path
        from services.security.credentials import check_local_token
        token = os.environ.get('UPM_LOCAL_TOKEN', '')
        ref = check_local_token(Path(os.environ.get('UPM_LOCAL_TOKEN_STORE', '/nonexistent')), token)
        if ref is None:
            print('no valid token', file=sys.stderr)
            sys.exit(77)
        Path(sys.argv[2]).write_text(token)
        print('token=' + token + ' ' + 'y' * 3000)
        print('Authorization: Bearer ' + token, file=sys.stderr)
        Path(sys.argv[1]).write_text('authorized by ' + ref + '\\n')
    """)
    evidence, spy, tokens = tmp_path / "authorized", tmp_path / "spy", tmp_path / "tokens"
    plan = tool_plan(tool, [(str(evidence), str(spy))], [evidence])
    cfg = config(pins=pins(tool), credentials={"brokers": {"local": "token"}, "token_store": str(tokens)},
                 output={"event_bytes": 1000})
    async with running(nc, cfg):
        change = await submit(store, plan)
        await wait_for(store, change, "execution.completed")
        found = await wait_for(store, change, "credentials.revoked")
    token = spy.read_text()
    assert token.startswith("upmtok_") and evidence.read_text().startswith("authorized by token:")
    issued = [e.payload for e in found if isinstance(e.payload, CredentialsIssued)]
    revoked = [e.payload for e in found if isinstance(e.payload, CredentialsRevoked)]
    assert [(c.kind, c.target) for c in issued] == [("token", "local")]
    assert [r.ref for r in revoked] == [issued[0].ref]
    # revoked before the run's last event: the verifier, acting on execution.completed, finds the change
    # as the run left it (a revocation after it conflicted with every verification, which then ran twice)
    order = [e.type for e in found]
    assert order.index("credentials.revoked") < order.index("execution.completed"), order
    expiry = datetime.fromisoformat(issued[0].expires_at.replace("Z", "+00:00"))
    assert 800 < (expiry - datetime.now(UTC)).total_seconds() <= 900
    assert check_local_token(tokens, token) is None and not list(tokens.iterdir())  # revoked
    done = next(e.payload for e in found if isinstance(e.payload, StepCompleted))
    assert done.output.stdout.startswith("token=*** ") and "Bearer ***" in done.output.stderr
    # nowhere: every stored event, every stored output, every log line, every evidence file
    raw = b"".join(data for _, data in await store.read_raw("upm.evt.>"))
    assert token.encode() not in raw and b"upmtok_" not in raw
    objects = await store.js.object_store("UPM_OUTPUTS")
    names = [info.name for info in await objects.list()]
    assert names
    for name in names:
        body = (await objects.get(name)).data or b""
        assert token.encode() not in body and b"***" in body
    assert not [r for r in caplog.records if token in r.getMessage()]
    assert all(token.encode() not in body for body in sections(await events(store, change)).values())


async def test_without_a_token_the_same_cli_is_refused_and_the_step_fails(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    tool = make_tool(tmp_path / "bin", "tokcheck", """
        sys.exit(0 if os.environ.get('UPM_LOCAL_TOKEN') else 77)
    """)
    marker = tmp_path / "never"
    async with running(nc, config(pins=pins(tool))):  # default policy: local targets get none
        change = await submit(store, tool_plan(tool, [()], [marker]))
        found = await wait_for(store, change, "execution.failed")
    assert "credentials.issued" not in [e.type for e in found]
    assert "exited 77" in next(e.payload.reason for e in found if e.type == "execution.failed")  # type: ignore[union-attr]


async def test_brokers_by_kind(tmp_path: Path) -> None:
    assert await NoCredentials().issue(tenant="t", change_id="c", target="local", ttl_s=60) is None
    broker = broker_for("token", token_store=str(tmp_path))
    assert isinstance(broker, LocalTokenBroker)
    issued = await broker.issue(tenant="t", change_id="c", target="local", ttl_s=60)
    assert issued is not None and issued.secrets[0] not in repr(issued)
    token = issued.secrets[0]
    assert check_local_token(tmp_path, token) == issued.ref
    assert check_local_token(tmp_path, token, now=datetime.now(UTC).timestamp() + 61) is None  # expired
    assert check_local_token(tmp_path, token + "x") is None
    await broker.revoke(issued.ref)
    await broker.revoke(issued.ref)
    assert check_local_token(tmp_path, token) is None
    with pytest.raises(CredentialsUnavailable, match="token_store"):
        broker_for("token", token_store=None)
    with pytest.raises(CredentialsUnavailable, match="unknown credentials broker 'vault'"):
        broker_for("vault", token_store=None)


async def test_a_revocation_that_fails_does_not_hold_the_run_s_end_back(
    nc: NATS, store: EventStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The step swaps its token's record for a directory, so the broker cannot revoke it: the run still
    ends (execution.completed, as before revocations moved ahead of it), saying why; revoking is tried
    again after it."""
    tool = make_tool(tmp_path / "bin", "tokbreak", """
        from pathlib import Path
        store = Path(os.environ['UPM_LOCAL_TOKEN_STORE'])
        [record] = list(store.iterdir())
        record.unlink()
        record.mkdir()
        Path(sys.argv[1]).write_text('done')
    """)
    marker, tokens = tmp_path / "done", tmp_path / "tokens"
    cfg = config(pins=pins(tool), credentials={"brokers": {"local": "token"}, "token_store": str(tokens)})
    with caplog.at_level(logging.WARNING, logger="upm.executor"):
        async with running(nc, cfg):
            change = await submit(store, tool_plan(tool, [(str(marker),)], [marker]))
            found = await wait_for(store, change, "execution.completed")
    assert marker.read_text() == "done"
    assert "credentials.revoked" not in [e.type for e in found]
    assert any("before its run's last event failed" in r.getMessage() for r in caplog.records)
