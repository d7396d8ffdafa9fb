"""The pinned ``aws`` served by long-lived ``upm-aws-serve`` workers (:mod:`services.guard.worker`,
:mod:`upm_aws_serve`), against the moto server: byte for byte what the ``aws`` process gives, no
state carried from one call to the next, hung workers replaced, no worker for a binary it does not
stand for, one worker per environment."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import anyio
import pytest
from targets_helpers import UntrustedTls, boto

import upm_aws_serve
from services.guard import Pin, PinMismatch, RunSpec, run, worker
from services.guard.parse import check
from services.guard.proc import Outcome, run_pipeline
from services.guard.steps import pin_table, step_path
from upm.emulators import AwsTarget

KEEP_BYTES = 1 << 20


@pytest.fixture
def env(aws_target: AwsTarget) -> dict[str, str]:
    """What a read-back step's ``aws`` gets: the moto endpoint, its root user, no config files."""
    return {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "AWS_ENDPOINT_URL": aws_target.endpoint or "", "AWS_DEFAULT_REGION": aws_target.region,
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "1",
            "AWS_ACCESS_KEY_ID": aws_target.root_key_id, "AWS_SECRET_ACCESS_KEY": aws_target.root_secret}


async def served(command: str) -> tuple[worker.Served, list[str]]:
    pins = pin_table()
    pipeline = check(command, pins=pins)
    binary, identity = await pins.verified("aws", path=step_path())
    how = worker.serving(pipeline, pins, binary, identity, None)
    assert how is not None, "the project's own aws must be served"
    return how, [binary, *pipeline.stages[0][1:]]


async def ask(pool: worker.Pool, command: str, env: dict[str, str], timeout_s: float = 60) -> Outcome:
    how, argv = await served(command)
    outcome = await pool.run(how, argv, env=env | {"PATH": step_path()}, cwd="/", stdin=None, timeout_s=timeout_s, grace_s=0.2,
                             keep_bytes=KEEP_BYTES)
    assert outcome is not None
    return outcome


async def as_process(command: str, env: dict[str, str]) -> Outcome:
    _, argv = await served(command)
    return await run_pipeline([argv], envs=[env | {"PATH": step_path()}], cwd="/", timeout_s=60, grace_s=0.2, keep_bytes=KEEP_BYTES)


def said(outcome: Outcome) -> tuple[int, bytes, bytes, bool]:
    return outcome.rc, bytes(outcome.stdout.data), bytes(outcome.stderr.data), outcome.timed_out


async def same(pool: worker.Pool, command: str, env: dict[str, str]) -> tuple[int, bytes, bytes, bool]:
    """What the worker answers, asserted byte for byte equal to the ``aws`` process's."""
    answer, process = said(await ask(pool, command, env)), said(await as_process(command, env))
    assert answer == process
    return answer


async def test_replies_are_the_aws_process_byte_for_byte(
    pool: worker.Pool, env: dict[str, str], aws_target: AwsTarget, tmp_path: Path
) -> None:
    boto(aws_target, "s3").create_bucket(Bucket="upm-worker-same")
    rc, out, _, _ = await same(pool, "aws s3api list-buckets", env)
    assert rc == 0 and b'"Name": "upm-worker-same"' in out
    rc, out, _, _ = await same(pool, "aws s3api list-buckets --output text --query Buckets[].Name", env)
    assert rc == 0 and b"upm-worker-same" in out and b"{" not in out
    rc, _, err, _ = await same(pool, "aws s3api head-bucket --bucket upm-worker-none", env)
    assert rc == 255 and b"(404)" in err
    rc, _, err, _ = await same(pool, "aws dynamodb describe-table --table-name upm-worker-none", env)
    assert rc == 255 and b"ResourceNotFoundException" in err  # awscli v1: 255 for a service error
    rc, _, err, _ = await same(pool, "aws s3api frobnicate", env)
    assert rc == 2 and b"Invalid choice" in err
    rc, _, err, _ = await same(pool, "aws s3api list-buckets --no-such-option", env)
    assert rc == 255 and b"Unknown options" in err  # awscli v1 (v2 says 252)
    rc, _, err, _ = await same(pool, "aws s3api head-bucket", env)  # a required argument missing
    assert rc == 2 and b"--bucket" in err
    rc, out, _, _ = await same(pool, "aws --version", env)
    assert rc == 0 and out.startswith(b"aws-cli/1.46.3 ")
    rc, _, err, _ = await same(pool, "aws --endpoint-url http://127.0.0.1:9 s3api list-buckets", env)
    assert rc == 255 and b"Could not connect to the endpoint URL" in err
    assert len(pool.pids()) == 1  # all of it on one worker


async def test_tls_replies_and_the_warning_every_time(
    pool: worker.Pool, env: dict[str, str], aws_target: AwsTarget, tmp_path: Path
) -> None:
    port = int((aws_target.endpoint or "").rpartition(":")[2])
    with UntrustedTls(port, tmp_path) as front:
        rc, _, err, _ = await same(pool, f"aws --endpoint-url {front.url} s3api list-buckets", env)
        assert rc == 255 and b"CERTIFICATE_VERIFY_FAILED" in err
        for _ in range(2):  # the warning is shown on every call, as each process shows it
            rc, _, err, _ = await same(pool, f"aws --no-verify-ssl --endpoint-url {front.url} s3api list-buckets", env)
            assert rc == 0 and b"InsecureRequestWarning" in err


async def test_no_state_carries_from_one_request_to_the_next(
    pool: worker.Pool, env: dict[str, str], aws_target: AwsTarget, tmp_path: Path
) -> None:
    s3 = boto(aws_target, "s3")
    s3.create_bucket(Bucket="upm-worker-a")
    first = await ask(pool, "aws s3api get-bucket-tagging --bucket upm-worker-a", env)
    s3.put_bucket_tagging(Bucket="upm-worker-a", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    s3.create_bucket(Bucket="upm-worker-b")
    assert first.rc == 255 and b"NoSuchTagSet" in first.stderr.data
    await same(pool, "aws s3api get-bucket-tagging --bucket upm-worker-a", env)  # the tag now shows
    await same(pool, "aws s3api get-bucket-tagging --bucket upm-worker-b", env)
    # arguments of one call are not the next call's defaults
    await same(pool, "aws --region eu-west-1 --output text s3api list-buckets --query Buckets[].Name", env)
    rc, out, _, _ = await same(pool, "aws s3api list-buckets", env)
    assert out.startswith(b"{")
    # the config file is read at each call, as each process reads it
    config = tmp_path / "config"
    mine = env | {"AWS_CONFIG_FILE": os.fspath(config)}
    config.write_text("[default]\noutput = text\n")
    rc, out, _, _ = await same(pool, "aws s3api list-buckets --query Buckets[].Name", mine)
    assert rc == 0 and not out.startswith(b"[")
    config.write_text("[default]\noutput = json\n")
    rc, out, _, _ = await same(pool, "aws s3api list-buckets --query Buckets[].Name", mine)
    assert rc == 0 and out.startswith(b"[")
    # --debug (never sent by the guard: timestamped) leaves no logging behind on the worker
    workers = pool.pids()
    how, argv = await served("aws s3api list-buckets")  # the guard would not send --debug: sent here directly
    debug = await pool.run(how, [argv[0], "--debug", *argv[1:]], env=mine | {"PATH": step_path()}, cwd="/", stdin=None,
                           timeout_s=60, grace_s=0.2, keep_bytes=KEEP_BYTES)
    assert debug is not None and b"DEBUG" in debug.stderr.data
    rc, out, err, _ = await same(pool, "aws s3api list-buckets --query Buckets[].Name", mine)
    assert err == b"" and pool.pids() == workers  # on the same worker


async def test_a_hung_request_times_out_and_the_worker_is_replaced(pool: worker.Pool, env: dict[str, str]) -> None:
    assert (await ask(pool, "aws --version", env)).rc == 0
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)
    hung = await ask(pool, "aws s3api list-buckets", env, timeout_s=1.0)
    assert hung.timed_out and hung.rc == -signal.SIGKILL and b"no answer within 1 s" in hung.stderr.data
    assert pid not in pool.pids()
    assert (await ask(pool, "aws s3api list-buckets", env)).rc == 0
    [fresh] = pool.pids()
    assert fresh != pid


async def test_a_worker_that_dies_mid_request_is_a_failure(pool: worker.Pool, env: dict[str, str]) -> None:
    assert (await ask(pool, "aws --version", env)).rc == 0
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)  # it reads the request once continued, then is killed mid-request
    how, argv = await served("aws s3api list-buckets")
    async with anyio.create_task_group() as tg:
        results: list[Outcome | None] = []

        async def go() -> None:
            results.append(await pool.run(how, argv, env=env | {"PATH": step_path()}, cwd="/", stdin=None, timeout_s=30, grace_s=0.2,
                                          keep_bytes=KEEP_BYTES))

        tg.start_soon(go)
        await anyio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
    [outcome] = results
    assert outcome is not None and outcome.rc == -signal.SIGKILL and not outcome.timed_out
    assert b"ended before it answered" in outcome.stderr.data


async def test_one_worker_per_environment(pool: worker.Pool, env: dict[str, str], aws_target: AwsTarget) -> None:
    other = env | {"AWS_ACCESS_KEY_ID": "AKIAOTHER", "AWS_SECRET_ACCESS_KEY": "other-secret"}
    await ask(pool, "aws --version", env)
    await ask(pool, "aws --version", env)
    [mine] = pool.pids()
    await ask(pool, "aws --version", other)
    [theirs] = set(pool.pids()) - {mine}
    assert pool.idle == 2
    await ask(pool, "aws --version", other)
    assert set(pool.pids()) == {mine, theirs}


async def test_a_worker_that_does_not_stand_for_the_pinned_aws_refuses_and_is_not_kept(
    pool: worker.Pool, env: dict[str, str]
) -> None:
    how, argv = await served("aws --version")
    for command in (
        (*how.command[:3], "1.45", *how.command[4:]),  # another version pinned
        (*how.command[:4], how.command[4], how.command[5], "1"),  # the aws file changed since it was verified
    ):
        wrong = worker.Served(command, (*how.identity, 9), hello=True)
        assert await pool.run(wrong, argv, env=env | {"PATH": step_path()}, cwd="/", stdin=None, timeout_s=30, grace_s=0.2,
                              keep_bytes=KEEP_BYTES) is None
        assert not pool.pids()
    reasons = " | ".join(pool.refused().values())
    assert "awscli here is 1.46.3, the pin is 1.45" in reasons and "was replaced" in reasons


def test_the_worker_checks_what_it_stands_for(tmp_path: Path) -> None:
    aws = shutil.which("aws", path=step_path())
    assert aws is not None
    found = os.stat(aws)
    identity = (found.st_dev, found.st_ino, found.st_mtime_ns)
    assert upm_aws_serve.refusal(aws, "1.46.3", identity)[0] is None
    assert upm_aws_serve.refusal(aws, "1.46", identity)[0] is None  # a pin accepts what extends it
    assert "1.46.30" in str(upm_aws_serve.refusal(aws, "1.46.30", identity)[0])
    assert "replaced" in str(upm_aws_serve.refusal(aws, "1.46.3", (*identity[:2], 1))[0])
    other = tmp_path / "aws"
    other.write_text("#!/usr/bin/python3\nimport awscli.clidriver\n")
    assert "does not run on this interpreter" in str(upm_aws_serve.refusal(os.fspath(other), "1.46.3",
                                                                           _identity_of(os.fspath(other)))[0])
    beside = tmp_path / "bin" / "aws"
    beside.parent.mkdir()
    shutil.copy2(aws, beside)  # this interpreter, but not this environment's console script
    assert "scripts directory" in str(upm_aws_serve.refusal(os.fspath(beside), "1.46.3",
                                                            _identity_of(os.fspath(beside)))[0])


def worker_script(pid: int) -> bytes:
    """The script a worker process runs (its interpreter's first argument)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1]


def _identity_of(path: str) -> tuple[int, int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino, found.st_mtime_ns


async def test_through_the_guard_served_and_otherwise_a_process(
    env: dict[str, str], aws_target: AwsTarget, tmp_path: Path
) -> None:
    spec = RunSpec(pins=pin_table(), path=step_path(), env=env)
    before = set(worker.POOL.pids())
    result = await run("aws s3api list-buckets", spec)
    assert result.ok and '"Buckets"' in result.stdout
    [new] = set(worker.POOL.pids()) - before
    assert worker_script(new).endswith(b"upm-aws-serve")
    # a request with stdin, help, a copy of aws elsewhere, a pipeline: processes, no new worker
    busy = set(worker.POOL.pids())
    for command, stdin in (("aws s3api list-buckets", b"x"), ("aws s3api help", None),
                           ("aws s3api list-buckets | wc -l", None)):
        await run(command, RunSpec(pins=pin_table(), path=step_path(), env=env, stdin=stdin))
    copy_dir = tmp_path / "bin"
    copy_dir.mkdir()
    shutil.copy2(shutil.which("aws", path=step_path()) or "", copy_dir / "aws")
    elsewhere = await run("aws s3api list-buckets", RunSpec(pins=pin_table(), path=f"{copy_dir}:{step_path()}", env=env))
    assert elsewhere.ok and elsewhere.stdout == result.stdout
    assert set(worker.POOL.pids()) <= busy


async def test_a_pin_mismatch_never_starts_a_worker(env: dict[str, str]) -> None:
    before = worker.POOL.pids()
    pins = pin_table().with_pins(Pin(binary="aws", version="1.45.0", version_args=("--version",),
                                     pattern=r"aws-cli/(\S+)"))
    with pytest.raises(PinMismatch, match=r"reports 1\.46\.3"):
        await run("aws s3api list-buckets", RunSpec(pins=pins, path=step_path(), env=env))
    assert worker.POOL.pids() == before


def test_a_call_leaves_logging_as_it_was(monkeypatch: pytest.MonkeyPatch, aws_target: AwsTarget) -> None:
    """In this process (the worker's own code, no pipe): the handlers and levels ``--debug`` sets are
    put back after the call, so a later call neither logs nor keeps writing to the earlier call's
    stderr. (The warnings part is the TLS test's above: pytest records warnings in-process.)"""
    aws = shutil.which("aws", path=step_path()) or ""
    _, driver = upm_aws_serve.refusal(aws, "1.46.3", _identity_of(aws))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    for name, value in {"AWS_ACCESS_KEY_ID": aws_target.root_key_id, "AWS_SECRET_ACCESS_KEY": aws_target.root_secret,
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(name, value)
    loggers = [logging.getLogger(name) for name in ("", "botocore", "awscli", "urllib3")]
    before = [(lg.level, list(lg.handlers)) for lg in loggers]
    url = aws_target.endpoint or ""
    rc, _, err = upm_aws_serve.respond(driver, aws, ["--debug", "--endpoint-url", url, "s3api", "list-buckets"], b"")
    assert rc == 0 and b"DEBUG" in err
    assert [(lg.level, list(lg.handlers)) for lg in loggers] == before


def test_which_aws_requests_and_binaries_are_served(tmp_path: Path) -> None:
    pins = pin_table()
    pin = pins.require("aws")

    def serves(command: str, stdin: bytes | None = None, binary: str = "/env/bin/aws") -> bool:
        pipeline = check(command, pins=pins)
        return worker.serving(pipeline, pins, binary, (1, 2, 3), stdin) is not None

    real = shutil.which("aws", path=step_path()) or ""
    assert serves("aws s3api list-buckets", binary=real)
    assert serves("aws --no-verify-ssl s3api list-buckets", binary=real)
    assert not serves("aws ssm put-parameter --name p --value file:///dev/stdin", b"secret", binary=real)
    assert not serves("aws s3api help", binary=real)
    assert not serves("aws --debug s3api list-buckets", binary=real)
    assert not serves("aws --deb s3api list-buckets", binary=real)  # argparse takes an abbreviation
    assert not serves("aws s3api list-buckets | wc -l", binary=real)
    folder = tmp_path / "env" / "bin"
    folder.mkdir(parents=True)
    for name, interpreter in (("aws", folder / "python"), (worker.AWS_SERVER, folder / "python")):
        (folder / name).write_text(f"#!{interpreter}\n")
        (folder / name).chmod(0o755)
    aws = os.fspath(folder / "aws")
    assert worker._aws_command(aws, (1, 2, 3), pin) == (os.fspath(folder / worker.AWS_SERVER), "serve", aws,
                                                         pin.version, "1", "2", "3")
    (folder / worker.AWS_SERVER).write_text("#!/usr/bin/python3\n")  # another interpreter
    assert worker._aws_command(aws, (1, 2, 3), pin) is None
    (folder / "aws").write_text("#!/usr/bin/python3\n")  # both on an interpreter not of this folder's environment
    assert worker._aws_command(aws, (1, 2, 3), pin) is None
    (folder / worker.AWS_SERVER).write_text(f"#!{folder / 'python'}\n")
    assert worker._aws_command(aws, (1, 2, 3), pin) is None
    (folder / worker.AWS_SERVER).unlink()
    assert worker._aws_command(aws, (1, 2, 3), pin) is None
