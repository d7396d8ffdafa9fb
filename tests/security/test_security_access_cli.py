"""``upm access check`` and ``upm access nats-config``: an access file is validated before anything
trusts it, and the permissions it stands for can be rendered for one's own NATS server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.security.tls import ensure_pki
from upm.natsserver import nats_server_binary

ACCESS = {"org": "example", "admins": ["root"],
          "tenants": {"acme": {"alice": ["requester"], "bob": ["approver", "operator"]}}}


def _upm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_check_lists_the_roles_of_a_valid_file(tmp_path: Path) -> None:
    """Threat: an access file that says something else than its author meant — `check` shows who
    holds which role before it is deployed."""
    acl = tmp_path / "access.json"
    acl.write_text(json.dumps(ACCESS))
    done = _upm("access", "check", str(acl), "--json")
    assert done.returncode == 0, done.stderr
    rows = {(r["tenant"], r["identity"]): r["roles"] for r in json.loads(done.stdout)}
    assert rows == {("acme", "alice"): "requester", ("acme", "bob"): "approver, operator",
                    ("(every tenant)", "root"): "admin"}


@pytest.mark.parametrize(("doc", "message"), [
    ("tenants: {acme: {alice: [superuser]}}", "is not a list of roles; use some of requester"),
    ("tenants: {acme: {alice: requester}}", "is not a list of roles"),
    ("tenants: [acme]", "tenants must map each tenant"),
    ("tenants: {acme: {alice: [requester]}\n", "is not valid YAML"),
])
def test_check_refuses_a_malformed_file_saying_what_is_wrong(tmp_path: Path, doc: str, message: str) -> None:
    """Threat: a typo silently granting or dropping rights — refused whole, with the key and the fix."""
    acl = tmp_path / "access.yaml"
    acl.write_text(doc)
    done = _upm("access", "check", str(acl))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_nats_config_renders_users_a_real_nats_server_accepts(tmp_path: Path) -> None:
    """Threat: running one's own NATS server without the per-identity permissions (or with a
    hand-written, wrong copy of them): the rendered block loads in nats-server as it is."""
    acl = tmp_path / "access.json"
    acl.write_text(json.dumps(ACCESS))
    block = tmp_path / "users.conf"
    done = _upm("access", "nats-config", str(acl), "-o", str(block))
    assert done.returncode == 0, done.stderr
    assert block.stat().st_mode & 0o077 == 0
    text = block.read_text()
    for user in ("CN=alice,O=UPM", "CN=bob,O=UPM", "CN=root,O=UPM", "CN=upm-auditor,O=UPM", "CN=upm-gateway,O=UPM"):
        assert f'"{user}"' in text
    assert '"upm.cmd.acme.approve.bob"' in text and '"upm.cmd.acme.approve.alice"' not in text
    pki = ensure_pki(tmp_path / "tls", ())
    conf = tmp_path / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:-1"\n{pki.server_block(map_identities=True)}include "users.conf"\n')
    checked = subprocess.run([nats_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True,
                             timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
