"""Secrets never appear in any output, record or exception the runner produces."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from guard_helpers import MakeScript, pinned

from services.guard import (
    MASK,
    CommandRefused,
    FilterOperandRefused,
    GuardPolicy,
    Redactor,
    RunSpec,
    SpawnFailed,
    run,
)

REGISTERED = "reg1stered-Secret-Value"
PATTERN_SECRETS = {
    "token": "tok3nValueXYZ",
    "password": "passw0rdValue",
    "bearer": "bearerTokenABC123",
    "auth": "dXNlcjpwYXNzd29yZA==",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "pem": "MIIEowIBAAKCAQEAsecretpembody",
    "conn": "connPassw0rd",
}
ALL = [REGISTERED, *PATTERN_SECRETS.values()]

LEAKY = f"""
text = ' '.join(sys.argv[1:]) + '\\n' + '''
registered: {REGISTERED}
Authorization: Basic {PATTERN_SECRETS["auth"]}
aws_access_key_id = {PATTERN_SECRETS["aws_key"]}
aws_secret_access_key = {PATTERN_SECRETS["aws_secret"]}
-----BEGIN RSA PRIVATE KEY-----
{PATTERN_SECRETS["pem"]}
-----END RSA PRIVATE KEY-----
dsn postgresql://app:{PATTERN_SECRETS["conn"]}@db:5432/app
env {{env}}
'''.replace('{{env}}', os.environ.get('CRED', ''))
sys.stdout.write(text)
sys.stderr.write(text)
sys.exit(int(os.environ.get('RC', '0')))
"""


def _command(script: Path) -> str:
    return (
        f"{script} --token={PATTERN_SECRETS['token']} --password {PATTERN_SECRETS['password']} "
        f"'Authorization: Bearer {PATTERN_SECRETS['bearer']}' {REGISTERED}"
    )


def _assert_clean(text: str) -> None:
    for secret in ALL:
        assert secret not in text, f"{secret!r} leaked"


@pytest.mark.parametrize("rc", ["0", "1"])
async def test_no_secret_in_output_command_attempts_or_warnings(make_script: MakeScript, rc: str) -> None:
    leaky = make_script("leaky", LEAKY)
    spec = RunSpec(
        pins=pinned(leaky), env={"CRED": REGISTERED, "RC": rc}, secrets=(REGISTERED,), max_attempts=2
    )
    result = await run(_command(leaky), spec)
    record = msgspec.json.encode(result).decode()
    _assert_clean(record)
    assert result.ok is (rc == "0")
    assert MASK in result.stdout and MASK in result.stderr and MASK in result.command
    assert "Authorization: Bearer ***" in result.command and "--token=***" in result.command
    assert {"registered", "flag", "header", "keyvalue", "aws-key", "pem", "url"} <= set(result.redactions)


async def test_a_secret_across_the_truncation_bound_is_masked_whole(make_script: MakeScript) -> None:
    bound = 1000
    split = make_script("split", f"sys.stdout.write('x' * {bound - 6} + {REGISTERED!r} + 'y' * 5000)\n")
    spec = RunSpec(pins=pinned(split), secrets=(REGISTERED,), policy=GuardPolicy(max_output_bytes=bound))
    result = await run(os.fspath(split), spec)
    assert result.stdout_truncated and len(result.stdout.encode()) == bound
    assert REGISTERED[:6] not in result.stdout
    assert result.stdout.startswith("x" * (bound - 6) + MASK)


async def test_no_secret_in_a_refusal(make_script: MakeScript) -> None:
    redactor = Redactor([REGISTERED])
    with pytest.raises(FilterOperandRefused) as refused:
        await run(f"cat /etc/hosts | head /tmp/{REGISTERED}", RunSpec(), redactor=redactor)
    _assert_exception_clean(refused.value)
    with pytest.raises(CommandRefused) as unpinned:
        await run(f"{REGISTERED}-tool --token={PATTERN_SECRETS['token']}", RunSpec(secrets=(REGISTERED,)))
    _assert_exception_clean(unpinned.value)


async def test_no_secret_in_a_spawn_failure() -> None:
    with pytest.raises(SpawnFailed) as failed:
        await run("true", RunSpec(cwd=f"/nonexistent/{REGISTERED}", secrets=(REGISTERED,)))
    _assert_exception_clean(failed.value)


def _assert_exception_clean(error: BaseException) -> None:
    _assert_clean(str(error))
    _assert_clean(repr(error.args))
    _assert_clean(repr(vars(error)))
    assert error.__context__ is None and error.__cause__ is None


async def test_a_retried_attempt_records_why_in_the_event_with_the_secret_masked(
    make_script: MakeScript, tmp_path: Path
) -> None:
    """A target whose first answer quotes the secret it was fed: the step.retried event's attempt says why it
    failed in the target's words (its stderr tail), with the value masked."""
    from services.guard.steps import to_output

    counter = tmp_path / "n"
    quoting = make_script("quoting", f"""
value = sys.stdin.read()
n = int(open({os.fspath(counter)!r}).read()) if os.path.exists({os.fspath(counter)!r}) else 0
open({os.fspath(counter)!r}, 'w').write(str(n + 1))
if n == 0:
    sys.stderr.write("InternalServerError: could not store Value '" + value + "', try again\\n")
    sys.exit(255)
print('stored')
""")
    spec = RunSpec(pins=pinned(quoting), secrets=(REGISTERED,), stdin=REGISTERED.encode(), max_attempts=2,
                   backoff_base_s=0.01)
    tries = to_output(await run(os.fspath(quoting), spec)).tries
    assert [t.verdict for t in tries] == ["retryable", "ok"]
    assert tries[0].stderr_tail == f"InternalServerError: could not store Value '{MASK}', try again\n"
    _assert_clean(msgspec.json.encode(tries).decode())
