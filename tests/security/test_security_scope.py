"""Resource scope: the executor touches only what the plan names, below its tenant's roots, never
through a symbolic link, and never a resource another tenant owns (issue 18, "Resource scope").

The whole pipeline runs in-process on a real nats-server, open and secure (an access file: acme's
alice and bob, globex's gina), on real files. Tenants write below ``<tmp>/targets`` (the scope
file of this module); ``<tmp>/outside`` holds files that are in no plan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from events.model import ChangeClosed, EvidencePublished, PlanRejected, PreflightFailed, StepFailed
from events.store import EventStore
from events.subjects import inbox_prefix
from projections import client as packs
from services.auditor import evidence
from services.auditor.service import Witness
from services.common import client
from services.common.errors import ConfigError
from services.common.runtime import Runner
from services.executor import CommandService
from services.gateway.service import Gateway
from services.planner import CompileInput, compile_intent
from services.planner.errors import InvalidFieldValue
from services.preflight import Host
from services.security.access import parse
from services.security.scope import default_roots, parse_scope
from upm import app
from upm.natsserver import EmbeddedNats

ACCESS: dict[str, Any] = {
    "org": "example",
    "tenants": {"acme": {"alice": ["requester"], "bob": ["approver"]}, "globex": {"gina": ["requester"]}},
}
ORIGINAL = "the original content, in no plan\n"
Submit = Callable[[str, str, dict[str, Any]], Awaitable[str]]


@pytest.fixture(autouse=True)
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every tenant writes below ``<tmp>/targets`` only (set before the services start)."""
    targets = tmp_path / "targets"
    targets.mkdir()
    (tmp_path / "outside").mkdir()
    scope = tmp_path / "scope.yaml"
    scope.write_text(f"roots: [{targets}]\n")
    monkeypatch.setenv("UPM_SCOPE_CONFIG", str(scope))
    return targets


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.write_text(ORIGINAL)
    victim.chmod(0o640)
    return victim


@pytest.fixture(params=["open", "secure"])
async def submit(request: pytest.FixtureRequest, nc: NATS, store: EventStore, nats_server: EmbeddedNats,
                 host: Callable[..., Awaitable[None]], tmp_path: Path) -> AsyncIterator[Submit]:
    """The pipeline (open, or with the access file above) and ``submit(tenant, who, body)``, each
    person on a connection of their own (with an access file replies go only to their inbox)."""
    access = parse(ACCESS, "test-access") if request.param == "secure" else None
    await host(Gateway(nc, access), Host(nc, interval=0.05, access=access), CommandService(nc, access),
               *(Runner(nc, app.PIPELINE[name]()) for name in ("planner", "executor", "verifier", "auditor")),
               Witness(nc, tmp_path / "data"))
    opened: dict[str, NATS] = {}

    async def send(tenant: str, who: str, body: dict[str, Any]) -> str:
        if who not in opened:
            opened[who] = await nats.connect(nats_server.url, inbox_prefix=inbox_prefix(who))
        return await client.submit(opened[who], tenant, {"reason": "test", **body}, principal=who)

    yield send
    for conn in opened.values():
        await conn.close()


async def closed(store: EventStore, tenant: str, change_id: str) -> list[Any]:
    """The payloads of the change once it closed."""
    with anyio.fail_after(60):
        while True:
            payloads = [s.event.payload for s in (await store.read(tenant, change_id)).events]
            if any(isinstance(p, ChangeClosed) for p in payloads):
                return payloads
            await anyio.sleep(0.05)


def _refusal(payloads: list[Any]) -> str:
    """Why the change was refused before execution (plan rejected or pre-flight failed); asserts
    that no step started."""
    assert not [p for p in payloads if type(p).__name__.startswith("Step")], payloads
    reasons = [p.reason for p in payloads if isinstance(p, PlanRejected)]
    reasons += [r for p in payloads if isinstance(p, PreflightFailed) for r in p.reasons]
    assert reasons, payloads
    return " | ".join(reasons)


def untouched(path: Path) -> bool:
    """The file in no plan still holds what it held (and is still a regular file)."""
    return path.is_file() and not path.is_symlink() and path.read_text() == ORIGINAL


def mode_of(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def _update(path: Path, content: str) -> dict[str, Any]:
    return {"spec": {"resources": [{"type": "local_file", "path": str(path), "content": content,
                                    "action": "update"}]}}


async def test_an_update_of_a_file_that_is_a_symlink_is_refused_before_execution(
    submit: Submit, store: EventStore, roots: Path, outside: Path
) -> None:
    """Threat: an update of a managed-looking path that is a link to a file in no plan (dd followed
    it and overwrote the other file, and the change ended failed with nothing to undo)."""
    link = roots / "app.conf"
    link.symlink_to(outside)
    change = await submit("acme", "alice", _update(link, "overwritten\n"))
    reason = _refusal(await closed(store, "acme", change))
    assert "rule path-symlink" in reason and str(link) in reason
    assert untouched(outside)


async def test_an_update_through_a_symlinked_parent_is_refused_before_execution(
    submit: Submit, store: EventStore, roots: Path, outside: Path
) -> None:
    """Threat: the same through a parent component: ``targets/conf`` links to the outside folder."""
    (roots / "conf").symlink_to(outside.parent)
    change = await submit("acme", "alice", _update(roots / "conf" / outside.name, "overwritten\n"))
    reason = _refusal(await closed(store, "acme", change))
    assert f"rule path-symlink: {roots / 'conf'} " in reason
    assert untouched(outside)


async def test_a_write_outside_the_roots_is_refused_naming_the_rule_and_the_key(
    submit: Submit, store: EventStore, outside: Path
) -> None:
    """Threat: any existing file overwritten (the executor runs as whoever ran `upm up`, root)."""
    change = await submit("acme", "alice", _update(outside, "owned\n"))
    reason = _refusal(await closed(store, "acme", change))
    assert "rule path-scope" in reason and "outside tenant acme's roots" in reason
    assert "roots (or tenants.acme)" in reason and "UPM_SCOPE_CONFIG" in reason
    assert untouched(outside)


async def test_another_tenant_cannot_change_a_directory_a_private_change_created(
    submit: Submit, store: EventStore, roots: Path
) -> None:
    """Threat: globex's requester chmods the directory acme's private change created (0755 →
    0777, auto-approved as low risk). Refused by ownership, without saying who owns it."""
    shared = roots / "shared-data"
    mine = await submit("acme", "alice", {"request": f"Create directory {shared} with mode 0755",
                                          "visibility": "private"})
    made = await closed(store, "acme", mine)
    assert next(p for p in made if isinstance(p, ChangeClosed)).outcome == "succeeded"
    theirs = await submit("globex", "gina", {"request": f"Change mode of directory {shared} to 0777"})
    reason = _refusal(await closed(store, "globex", theirs))
    assert "policy tenant-ownership" in reason and f"local_directory:local:{shared}" in reason
    assert "acme" not in reason and mine not in reason  # the owner's private details stay private
    assert mode_of(shared) == "0o755"

    again = await submit("acme", "alice", {"request": f"Change mode of directory {shared} to 0700"})
    assert next(p for p in await closed(store, "acme", again) if isinstance(p, ChangeClosed)).outcome == "succeeded"
    assert mode_of(shared) == "0o700"  # the owner still may


async def test_the_evidence_pack_shows_the_desired_state_of_what_the_change_touched(
    submit: Submit, store: EventStore, roots: Path
) -> None:
    target = roots / "srv"
    change = await submit("acme", "alice", {"request": f"Create directory {target} with mode 0750"})
    await closed(store, "acme", change)
    with anyio.fail_after(30):
        while not any(isinstance(s.event.payload, EvidencePublished)  # noqa: ASYNC110 - state held by the server
                      for s in (await store.read("acme", change)).events):
            await anyio.sleep(0.05)
    _, pack = await packs.pack_of(store, await store.read("acme", change))
    drift = msgspec.json.decode(evidence.read_pack(pack)["drift.json"])
    assert drift["desired"] == {f"local_directory:local:{target}": {"exists": True, "kind": "directory",
                                                                     "mode": "0750"}}


@pytest.mark.parametrize("bad", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200b", "\u200d", "\ufeff", "\x7f",
                                 "\t", "\x1b"])
@pytest.mark.parametrize("field", ["path", "target"])
def test_invisible_characters_in_a_path_are_refused_naming_the_character_and_its_position(
    bad: str, field: str
) -> None:
    resource = {"type": "local_symlink", "path": "/srv/current", "target": "/srv/app", field: f"/srv/x{bad}y"}
    with pytest.raises(InvalidFieldValue) as refused:
        compile_intent(CompileInput(spec={"resources": [resource]}))
    assert f"local_symlink.{field}" in refused.value.message
    assert f"contains U+{ord(bad):04X} " in refused.value.message and "at position 7" in refused.value.message


async def test_a_right_to_left_override_in_a_path_is_refused_at_plan_time(
    submit: Submit, store: EventStore, roots: Path
) -> None:
    bad = "\u202e"
    path = f"{roots}/a{bad}b"
    change = await submit("acme", "alice", {"spec": {"resources": [{"type": "local_directory", "path": path}]}})
    payloads = await closed(store, "acme", change)
    (rejected,) = [p for p in payloads if isinstance(p, PlanRejected)]
    assert f"U+{ord(bad):04X}" in rejected.reason and f"at position {len(str(roots)) + 3}" in rejected.reason
    assert not [p for p in payloads if type(p).__name__.startswith("Step")]
    assert not [p for p in payloads if isinstance(p, StepFailed)]


def test_the_scope_file_names_the_key_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scope.yaml: tenants.acme holds '/srv/../etc'"):
        parse_scope({"tenants": {"acme": ["/srv/../etc"]}}, source="scope.yaml")
    with pytest.raises(ConfigError, match=r"scope.yaml: .*the keys are roots and tenants"):
        parse_scope({"root": ["/srv"]}, source="scope.yaml")
    scope = parse_scope({"tenants": {"acme": ["/srv/acme"]}}, source="scope.yaml")
    assert scope.roots == default_roots() and scope.roots_for("acme") == ("/srv/acme",)
    assert scope.refusal("acme", "/srv/acme/app") is None
    assert scope.refusal("acme", "/srv/acme") is not None  # never the root itself
    assert scope.refusal("globex", f"{tmp_path}/x") is None  # the system temp directory, by default
