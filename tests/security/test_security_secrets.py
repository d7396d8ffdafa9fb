"""Secrets never stored (issue 18, items 1 and 2). Each test names the threat it covers.

Every secret is generated fresh per test, so "no byte of it anywhere" is checked on the raw
files of the NATS store (events, object stores), the data folder (DuckDB, keys, logs), the
evidence pack and the log records, after the pipeline handled what it was given.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import os
import random
import secrets
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events.commands import parse_intent
from events.model import EvidencePublished
from events.plan import Command
from events.store import EventStore
from services.auditor.evidence import EVIDENCE_BUCKET, read_pack
from services.common import client
from services.executor.config import ENV_VAR as EXECUTOR_CONFIG_ENV
from services.guard.steps import execute
from services.security.secrets import SecretsConfig
from upm.natsserver import EmbeddedNats

UPM = str(Path(sys.executable).parent / "upm")
TENANT = "acme"


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _aws_secret() -> str:
    """40 characters of the AWS secret access key alphabet, with an upper, a lower and a digit."""
    body = [secrets.choice(string.ascii_uppercase), secrets.choice(string.ascii_lowercase), secrets.choice(string.digits)]
    body += [secrets.choice(string.ascii_letters + string.digits + "/+") for _ in range(37)]
    random.SystemRandom().shuffle(body)
    return "".join(body)


def _jwt() -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': _random(string.digits, 10)})}." + _random(
        string.ascii_letters + string.digits + "-_", 43)


@dataclass(frozen=True)
class Case:
    """One secret kind as a person might send it: the intent fields, the secret, and what the
    refusal must name (the field path and the kind)."""

    name: str
    secret: str
    field: str
    kind: str
    intent: dict[str, Any] = field(default_factory=dict)
    content: str | None = None  # local_file content: sent as a spec (bus) or a spec file (CLI)


def cases(folder: Path) -> list[Case]:
    """The nine kinds measured in issue 18 (each stored verbatim before this fix)."""
    token = _random(string.ascii_letters + string.digits, 30) + "9"
    password = "Pw-" + _random(string.ascii_letters + string.digits, 16)
    api_key = _random("0123456789abcdef", 32)
    pem_body = base64.b64encode(secrets.token_bytes(48)).decode()
    pg_password = "S3" + _random(string.ascii_letters + string.digits, 14)
    aws_id = "AKIA" + _random(string.ascii_uppercase + "234567", 16)
    ghp = "ghp_" + _random(string.ascii_letters + string.digits, 36)
    jwt = _jwt()
    ok = "Create directory /tmp/upm-secrets-test with mode 0750"
    return [
        Case("bearer header", token, "request", "Authorization header",
             {"request": f"Call the API with -H 'Authorization: Bearer {token}' and create bucket logs-prod"}),
        Case("password pair", password, "reason", "password/secret/token/api-key pair",
             {"request": ok, "reason": f"the old one leaked, password={password}"}),
        Case("api key pair", api_key, "spec.resources[0].content", "password/secret/token/api-key pair",
             content=f"service=orders\napi_key={api_key}\n"),
        Case("pem private key", pem_body, "spec.resources[0].content", "private key",
             content=f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----\n"),
        Case("postgres url", pg_password, "spec.resources[0].content", "URL with a password",
             content=f"DATABASE_URL=postgresql://app:{pg_password}@db.internal:5432/orders\n"),
        Case("aws access key id", aws_id, "spec.resources[0].content", "AWS access key",
             content=f"[default]\naws_access_key_id = {aws_id}\n"),
        Case("aws secret key", (aws_secret := _aws_secret()), "spec.resources[0].content", "AWS secret access key",
             content=f"[default]\naws_secret_access_key = {aws_secret}\n"),
        Case("github token", ghp, "idempotency_key", "GitHub", {"request": ok, "idempotency_key": f"k-{ghp}"}),
        Case("jwt", jwt, "window", "JSON web token", {"request": ok, "window": f"after {jwt}"}),
    ]


def _intent(case: Case, folder: Path) -> dict[str, Any]:
    if case.content is None:
        return case.intent
    return {"spec": {"resources": [{"type": "local_file", "path": str(folder / "f.conf"), "content": case.content}]}}


def _files_holding(needle: bytes, *folders: Path) -> list[str]:
    return sorted(str(p) for f in folders for p in f.rglob("*") if p.is_file() and needle in p.read_bytes())


def _assert_refused(error: dict[str, str] | str, case: Case, field_name: str | None = None) -> None:
    text = json.dumps(error)
    assert case.secret not in text, f"{case.name}: the refusal echoes the secret"
    assert case.kind in text, f"{case.name}: the refusal should name the kind {case.kind!r}: {text}"
    assert (field_name or case.field) in text, f"{case.name}: the refusal should name the field: {text}"
    assert "secret:NAME" in text, f"{case.name}: the refusal should say how to reference a secret: {text}"


# -- the detector's false positives ------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"request": "create bucket logs-prod"},
    {"request": "Change mode of directory /tmp/x to 0700"},
    {"request": "Create S3 bucket logs-acme in us-east-1 with versioning and encryption, tagged team=alpha"},
    {"request": "Grant role analyst read access to database orders", "reason": "the token: see ticket 4711"},
    {"spec": {"resources": [{"type": "local_file", "path": "/tmp/x", "password_secret": "secret:DB_PASS",
                             "content": "password=${secret:DB_PASS}\nurl=postgresql://app:${secret:PG}@db/x\n"}]}},
    {"request": "Create file /tmp/sum", "reason": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b4b0b822cd15d6c15b0f00a08"},
    {"request": "Create directory /srv/app", "idempotency_key": "0192a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b"},
])
def test_ordinary_intents_and_secret_references_are_not_taken_for_secrets(body: dict[str, Any]) -> None:
    """Threat: a detector so eager that ordinary requests, references and digests are refused."""
    assert parse_intent(TENANT, "alice", json.dumps(body).encode())


# -- through the bus --------------------------------------------------------------------------------


async def test_every_secret_kind_is_refused_at_the_bus_and_no_byte_of_it_is_stored(
    nats_server: EmbeddedNats, pipeline: EventStore, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Threat: a secret typed into a request, a reason, a spec value, an idempotency key or a
    window, or into the reason of approve/deny/resume/rollback/cancel, stored forever in a
    stream that denies delete and purge. Each is refused with the field and the kind, the value
    is not echoed, and after a real change ran through the whole pipeline no byte of any of them
    is in the NATS store, the data folder (DuckDB) or the logs."""
    caplog.set_level(logging.DEBUG)
    nc = pipeline.nc
    all_cases = cases(tmp_path)
    for case in all_cases:
        reply = json.loads((await nc.request(f"upm.cmd.{TENANT}.intent.alice",
                                             json.dumps(_intent(case, tmp_path)).encode(), timeout=10)).data)
        assert reply["ok"] is False, f"{case.name}: the intent holding a secret was accepted"
        assert reply["error"]["field"] == case.field and reply["error"]["rule"] == "secret"
        _assert_refused(reply["error"], case)

    marker = f"control-{secrets.token_hex(8)}"
    change_id = await client.submit(nc, TENANT, {"request": f"Create directory {tmp_path / 'ok'} with mode 0750",
                                                 "reason": marker}, principal="alice")
    status = await client.wait_closed(pipeline, TENANT, change_id, within=30)
    assert status.outcome == "succeeded"
    command_secrets = []
    for verb, who in (("approve", "bob"), ("deny", "bob"), ("resume", "olga"), ("rollback", "olga"), ("cancel", "alice")):
        secret = _random(string.ascii_letters, 12) + _random(string.digits, 6)
        command_secrets.append(secret)
        body = {"change_id": change_id, "reason": f"ok, token={secret}"}
        reply = json.loads((await nc.request(f"upm.cmd.{TENANT}.{verb}.{who}", json.dumps(body).encode(),
                                             timeout=10)).data)
        assert reply["ok"] is False and reply["error"]["rule"] == "secret", f"{verb}: {reply}"
        assert reply["error"]["field"] == "reason" and secret not in json.dumps(reply)

    data = tmp_path / "upm-data"
    assert _files_holding(marker.encode(), nats_server.data_dir), "the accepted change should be on disk (control)"
    for secret in [c.secret for c in all_cases] + command_secrets:
        assert _files_holding(secret.encode(), nats_server.data_dir, data) == []
        assert secret not in caplog.text


# -- through the CLI --------------------------------------------------------------------------------


def _upm_sync(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI as alice (``--nats url`` when given)."""
    env = {**os.environ, "UPM_IDENTITY": "alice"}
    env.pop("NATS_URL", None)
    return subprocess.run([UPM, *args, *(["--nats", url] if url else [])], capture_output=True, text=True,
                          env=env, timeout=60)


async def _upm(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(functools.partial(_upm_sync, *args, url=url))


async def test_the_cli_refuses_every_secret_kind_before_sending(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    """Threat: the CLI as the way in (words, --reason, --window, --idempotency-key, a spec file,
    approve/deny reasons). Each is refused locally with exit 2, naming where and what, never the
    value; not one command reaches NATS, and no byte of a secret is in the NATS store."""
    seen: list[str] = []

    async def record(msg: Msg) -> None:
        seen.append(msg.subject)

    sub = await nc.subscribe("upm.cmd.>", cb=record)
    url = nats_server.url
    all_cases = cases(tmp_path)
    for i, case in enumerate(all_cases):
        if case.content is not None:
            spec = tmp_path / f"spec{i}.yaml"
            spec.write_text(msgspec.yaml.encode(_intent(case, tmp_path)["spec"]).decode())
            done = await _upm("submit", "--file", str(spec), "--tenant", TENANT, url=url)
            field_name = f"spec file {spec} line"
            planned = await _upm("plan", "--file", str(spec))
            assert planned.returncode == 2 and case.secret not in planned.stderr + planned.stdout
            _assert_refused(planned.stderr, case, field_name)
        else:
            flags = [case.intent["request"]]
            for key in ("reason", "window", "idempotency_key"):
                if key in case.intent:
                    flags += [f"--{key.replace('_', '-')}", case.intent[key]]
            done = await _upm("submit", *flags, "--tenant", TENANT, url=url)
            field_name = case.field
        assert done.returncode == 2, f"{case.name}: exit {done.returncode}, stderr {done.stderr!r}"
        assert case.secret not in done.stdout + done.stderr
        _assert_refused(done.stderr, case, field_name)
    approval_secret = _random(string.ascii_letters, 10) + _random(string.digits, 8)
    for verb in ("approve", "deny", "rollback"):
        done = await _upm(verb, "0190a0a0-0000-7000-8000-000000000000", "--reason", f"password={approval_secret}",
                          "--tenant", TENANT, url=url)
        assert done.returncode == 2 and approval_secret not in done.stderr, f"{verb}: {done.stderr}"
        assert "'reason'" in done.stderr and "password/secret/token/api-key pair" in done.stderr
    await nc.flush()
    await sub.unsubscribe()
    assert seen == [], f"commands reached NATS: {seen}"
    for secret in [c.secret for c in all_cases] + [approval_secret]:
        assert _files_holding(secret.encode(), nats_server.data_dir) == []


def test_submit_file_refuses_what_is_not_a_small_regular_text_file(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    """Threat: `upm submit --file /etc/shadow` (run as root) storing the file, or a device, a FIFO
    or a huge file read into an intent. Each is refused with exit 2 and a clear reason; a
    shadow-style file is refused as a password hash without echoing it."""
    salt, digest = _random(string.ascii_letters + string.digits, 16), _random(string.ascii_letters + string.digits, 86)
    shadow = tmp_path / "shadow"
    shadow.write_text(f"root:$6${salt}${digest}:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("resources: []\n" + "#" * (1024 * 1024))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"resources:\x00\xff\xfe")
    expected = {shadow: "password hash", tmp_path: "not a regular file", fifo: "not a regular file",
                Path("/dev/zero"): "not a regular file", big: "the limit is 1048576", binary: "not UTF-8 text"}
    for path, why in expected.items():
        done = _upm_sync("submit", "--file", str(path), url=nats_server.url)
        assert done.returncode == 2, f"{path}: exit {done.returncode} {done.stderr}"
        assert why in done.stderr, f"{path}: {done.stderr}"
        assert digest not in done.stderr
    if Path("/etc/shadow").is_file() and os.access("/etc/shadow", os.R_OK):
        done = _upm_sync("submit", "--file", "/etc/shadow", url=nats_server.url)
        assert done.returncode == 2
        hashes = [line.split(":")[1] for line in Path("/etc/shadow").read_text().splitlines() if line.count(":") > 1]
        assert not any(h in done.stderr for h in hashes if len(h) > 3)


# -- secret references --------------------------------------------------------------------------------


@pytest.fixture
def secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """DB_PASS in the environment (UPM_SECRET_DB_PASS), API_TOKEN in a 0600 file of a secrets
    directory that the executor and verifier configurations name. Set before the pipeline starts."""
    values = {"DB_PASS": "db-" + secrets.token_urlsafe(18), "API_TOKEN": "tok-" + secrets.token_urlsafe(24)}
    store = tmp_path / "secret-store"
    store.mkdir(mode=0o700)
    (store / "API_TOKEN").write_text(values["API_TOKEN"] + "\n")
    (store / "API_TOKEN").chmod(0o600)
    monkeypatch.setenv("UPM_SECRET_DB_PASS", values["DB_PASS"])
    for env, name in ((EXECUTOR_CONFIG_ENV, "executor.json"), ("UPM_VERIFIER_CONFIG", "verifier.json")):
        config = tmp_path / name
        config.write_text(json.dumps({"secrets": {"dir": str(store)}}))
        monkeypatch.setenv(env, str(config))
    return values


async def test_a_secret_reference_writes_the_value_on_the_target_and_stores_only_the_reference(
    secret_sources: dict[str, str], nats_server: EmbeddedNats, pipeline: EventStore, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Threat: a file that must hold a secret, and the secret then kept by UPM. The spec says
    ${secret:DB_PASS} and ${secret:API_TOKEN}; the executor resolves them from the environment and
    the secrets directory, the file on the target holds the real values, verification passes
    (comparing digests), and no byte of either value is in the stream, the object stores, the
    data folder (DuckDB), the evidence pack or the logs; the neutral event lists the references."""
    caplog.set_level(logging.DEBUG)
    target = tmp_path / "app.conf"
    content = "user=app\npassword=${secret:DB_PASS}\napi_token=${secret:API_TOKEN}\n"
    spec = {"resources": [{"type": "local_file", "path": str(target), "mode": "0600", "content": content}]}
    change_id = await client.submit(pipeline.nc, TENANT, {"spec": spec}, principal="alice")
    status = await client.wait_closed(pipeline, TENANT, change_id, within=30)
    assert (status.outcome, status.reason) == ("succeeded", ""), status
    assert "verification.passed" in [e.type for e in status.events]
    expected = f"user=app\npassword={secret_sources['DB_PASS']}\napi_token={secret_sources['API_TOKEN']}\n"
    assert target.read_text() == expected

    deadline = asyncio.get_running_loop().time() + 20
    while not any(s.event.type == "evidence.published" for s in (await pipeline.read(TENANT, change_id)).events):
        assert asyncio.get_running_loop().time() < deadline, "no evidence pack was published"
        await asyncio.sleep(0.1)
    stored = await pipeline.read(TENANT, change_id)
    published = next(s.event.payload for s in stored.events if isinstance(s.event.payload, EvidencePublished))
    bucket = await pipeline.js.object_store(EVIDENCE_BUCKET)
    pack = read_pack((await bucket.get(published.object_name)).data or b"")
    neutral = json.loads(pack["neutral_event.json"])
    assert neutral["provisioning_event"]["governance"]["redactions"] == ["secret:API_TOKEN", "secret:DB_PASS"]
    assert any(b"${secret:DB_PASS}" in body for body in pack.values()), "the pack should hold the reference"

    on_disk = (nats_server.data_dir, tmp_path / "upm-data")
    assert _files_holding(b"${secret:DB_PASS}", nats_server.data_dir), "the plan (reference) is on disk (control)"
    for value in secret_sources.values():
        assert _files_holding(value.encode(), *on_disk) == []
        assert [name for name, body in pack.items() if value.encode() in body] == []
        assert value not in caplog.text


async def test_an_unresolvable_reference_fails_the_step_naming_it_and_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat: a missing secret written as an empty or literal value, or a failure that leaks
    what it found. The step does not run (rc 127); the message names the reference and each
    place looked in; a secret file others may read is refused."""
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.delenv("UPM_SECRET_NOPE", raising=False)
    resolver = SecretsConfig(dir=str(store)).resolver()
    path = tmp_path / "out"
    install = Command(argv=("install", "-m", "0600", "/dev/stdin", str(path)), display=f"install … {path}")
    done = await execute(install, stdin="x=${secret:NOPE}\n", resolver=resolver)
    assert done.output.rc == 127 and not path.exists()
    assert "secret:NOPE" in done.output.stderr and "UPM_SECRET_NOPE" in done.output.stderr
    assert str(store / "NOPE") in done.output.stderr

    leaked = "open-" + secrets.token_hex(8)
    (store / "OPEN").write_text(leaked)
    (store / "OPEN").chmod(0o644)
    done = await execute(install, stdin="secret:OPEN", resolver=resolver)
    assert done.output.rc == 127 and "chmod 600" in done.output.stderr and leaked not in done.output.stderr

    (store / "OPEN").chmod(0o600)
    done = await execute(install, stdin="secret:OPEN", resolver=resolver)
    assert done.output.rc == 0 and path.read_text() == leaked



def test_the_plan_holds_no_digest_of_a_secret_and_verification_compares_the_resolved_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threat: the plan pinning the digest of the reference text (so verification could never
    pass), or verification silently skipping the content. The plan leaves size and sha256 to
    run time; the verifier's (and drift's) desired state is the digest of the resolved content,
    and an unresolvable reference makes it say so instead of matching anything."""
    from events.secrets import RESOLVED_AT_RUN_TIME
    from services.planner import CompileInput, compile_intent
    from services.security.secrets import resolved_desired

    content = "password=${secret:DB_PASS}\n"
    plan = compile_intent(CompileInput(spec={"resources": [{"type": "local_file", "path": "/tmp/upm-ref", "content": content}]}))
    step = plan.steps[0]
    assert step.stdin == content
    assert (step.desired["size"], step.desired["sha256"]) == (RESOLVED_AT_RUN_TIME, RESOLVED_AT_RUN_TIME)
    value = "v-" + secrets.token_hex(12)
    monkeypatch.setenv("UPM_SECRET_DB_PASS", value)
    resolved = resolved_desired(step, SecretsConfig().resolver())
    data = f"password={value}\n".encode()
    assert resolved["sha256"] == hashlib.sha256(data).hexdigest() and resolved["size"] == len(data)
    monkeypatch.delenv("UPM_SECRET_DB_PASS")
    unresolved = resolved_desired(step, SecretsConfig().resolver())
    assert "secret:DB_PASS" in unresolved["sha256"] and "UPM_SECRET_DB_PASS" in unresolved["sha256"]
