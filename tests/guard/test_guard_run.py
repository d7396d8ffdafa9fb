"""The runner against real processes: pipes, retries, timeouts, environment, output bounds."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import anyio
import msgspec
import pytest
from guard_helpers import MakeScript, pinned, running

from services.guard import (
    DEFAULT_PATH,
    DEFAULT_PINS,
    FilterSpec,
    ForbiddenBinary,
    GuardPolicy,
    Pin,
    Pipeline,
    PolicyInvalid,
    RateLimiter,
    RunResult,
    RunSpec,
    SpawnFailed,
    check,
    run,
)

FLAKY = """
counter = {counter!r}
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, 'w').write(str(n + 1))
if n < {failures}:
    sys.stderr.write({message!r} + '\\n')
    sys.exit({rc})
print('ok after', n + 1)
"""


async def test_pipeline_runs_through_os_pipes(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("b\na\nb\nc\nb\n")
    result = await run(
        f"cat {data} | sort | uniq -c | sort -rn | head -n 1", RunSpec(cwd=os.fspath(tmp_path))
    )
    assert result.ok and result.rc == 0
    assert result.stdout.split() == ["3", "b"]
    assert [a.verdict for a in result.attempts] == ["ok"]


async def test_stdin_is_fed_to_the_first_stage_without_a_shell(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    content = "port=8080\n" * 20_000  # larger than a pipe buffer
    result = await run(f"install -m 0640 /dev/stdin {target}", RunSpec(stdin=content.encode()))
    assert result.ok, result.stderr
    assert target.read_text() == content
    counted = await run("cat | wc -l", RunSpec(stdin=content.encode()))
    assert counted.stdout.strip() == "20000"


async def test_a_stage_that_ignores_its_stdin_does_not_hang_the_feed() -> None:
    result = await run("true", RunSpec(stdin=b"x" * 1_000_000, timeout_s=10))
    assert result.ok and not result.timed_out


async def test_status_is_that_of_the_first_failing_stage(tmp_path: Path) -> None:
    pins = DEFAULT_PINS.with_pins(Pin(binary="false", version="9.1"), Pin(binary="yes", version="9.1"))
    failed = await run("false | wc -l", RunSpec(pins=pins))
    assert (failed.ok, failed.rc, failed.attempts[0].failed_stage, failed.stdout.strip()) == (
        False,
        1,
        0,
        "0",
    )
    no_match = await run("true | grep x", RunSpec(pins=pins))
    assert (no_match.rc, no_match.attempts[0].failed_stage) == (1, 1)
    # `yes` dies of SIGPIPE when head stops reading: that is not a failure
    stopped = await run("yes | head -n 2", RunSpec(pins=pins))
    assert stopped.ok and stopped.stdout == "y\ny\n"


async def test_a_retried_command_succeeds_on_a_later_attempt(make_script: MakeScript, tmp_path: Path) -> None:
    flaky = make_script(
        "flaky",
        FLAKY.format(
            counter=os.fspath(tmp_path / "n"), failures=2, message="dial tcp: connection refused", rc=1
        ),
    )
    spec = RunSpec(
        pins=pinned(flaky),
        max_attempts=4,
        backoff_base_s=0.05,
        backoff_cap_s=1.0,
        jitter=0.5,
        rng=random.Random(7),
    )
    result = await run(os.fspath(flaky), spec)
    assert result.ok and result.stdout == "ok after 3\n"
    assert [a.n for a in result.attempts] == [1, 2, 3]
    assert [a.retryable for a in result.attempts] == [True, True, False]
    assert result.attempts[0].reason == "connection refused"
    assert "connection refused" in result.attempts[0].stderr_tail
    backoffs = [a.backoff_s for a in result.attempts]
    assert backoffs[0] == 0
    assert 0.025 <= backoffs[1] <= 0.05 and 0.05 <= backoffs[2] <= 0.1  # base*2^(k-1), minus up to 50 %
    for before, after in zip(result.attempts, result.attempts[1:], strict=False):
        assert after.started - before.ended >= after.backoff_s * 0.9
        assert after.started >= before.ended


async def test_a_non_retryable_failure_is_not_retried(make_script: MakeScript, tmp_path: Path) -> None:
    broken = make_script(
        "broken",
        FLAKY.format(counter=os.fspath(tmp_path / "n"), failures=5, message="error: permission denied", rc=3),
    )
    result = await run(os.fspath(broken), RunSpec(pins=pinned(broken), max_attempts=5, backoff_base_s=0.01))
    assert not result.ok and result.rc == 3
    assert len(result.attempts) == 1
    assert (result.attempts[0].verdict, result.reason) == ("fatal", "exit status 3")
    assert (tmp_path / "n").read_text() == "1"


@pytest.mark.parametrize(
    "message",
    [
        "HTTP/1.1 503 Service Unavailable",
        "An error occurred (ThrottlingException): Rate exceeded",
        "read: connection reset by peer",
    ],
)
async def test_attempts_are_bounded(make_script: MakeScript, tmp_path: Path, message: str) -> None:
    down = make_script(
        "down", FLAKY.format(counter=os.fspath(tmp_path / "n"), failures=99, message=message, rc=1)
    )
    spec = RunSpec(pins=pinned(down), max_attempts=3, backoff_base_s=0.001, backoff_cap_s=0.002)
    result = await run(os.fspath(down), spec)
    assert not result.ok and len(result.attempts) == 3
    assert all(a.retryable for a in result.attempts)


async def test_a_process_ignoring_sigterm_and_its_children_are_gone_after_the_timeout(
    make_script: MakeScript, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    stubborn = make_script(
        "stubborn",
        f"""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            children.append(pid)
        with open({os.fspath(pids)!r} + '.tmp', 'w') as f:
            f.write(' '.join(map(str, [os.getpid(), *children])))
        os.rename({os.fspath(pids)!r} + '.tmp', {os.fspath(pids)!r})
        time.sleep(60)
        """,
    )
    spec = RunSpec(pins=pinned(stubborn), timeout_s=1.5, kill_grace_s=0.3, max_attempts=3)
    clock = time.monotonic()
    result = await run(os.fspath(stubborn), spec)
    elapsed = time.monotonic() - clock
    assert result.timed_out and not result.ok
    assert len(result.attempts) == 1 and result.attempts[0].verdict == "timeout"
    assert result.rc == -9  # SIGTERM was ignored; SIGKILL ended it
    assert elapsed < 1.5 + 0.3 + 2.0
    found = [int(pid) for pid in pids.read_text().split()]
    assert len(found) == 3
    for pid in found:
        assert not running(pid), f"process {pid} survived the timeout"


async def test_cancelling_a_step_stops_its_processes(make_script: MakeScript, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    sleeper = make_script(
        "sleeper",
        f"""
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        open({os.fspath(pids)!r} + '.tmp', 'w').write(f'{{os.getpid()}} {{pid}}')
        os.rename({os.fspath(pids)!r} + '.tmp', {os.fspath(pids)!r})
        time.sleep(60)
        """,
    )
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, os.fspath(sleeper), RunSpec(pins=pinned(sleeper), kill_grace_s=0.2))
            while not pids.exists():  # noqa: ASYNC110
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    found = [int(pid) for pid in pids.read_text().split()]
    assert len(found) == 2 and not any(running(pid) for pid in found)


async def test_children_left_behind_by_a_finished_step_are_reaped(
    make_script: MakeScript, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    leaver = make_script(
        "leaver",
        f"""
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        open({os.fspath(pids)!r}, 'w').write(str(pid))
        """,
    )
    result = await run(os.fspath(leaver), RunSpec(pins=pinned(leaver), timeout_s=10, kill_grace_s=0.5))
    assert result.ok
    assert not running(int(pids.read_text()))


async def test_environment_is_explicit_and_minimal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UPM_GUARD_LEAK", "from-the-service")
    pins = DEFAULT_PINS.with_pins(Pin(binary="printenv", version="9.1"), Pin(binary="pwd", version="9.1"))
    spec = RunSpec(
        pins=pins, env={"FOO": "bar", "LANG": "C.UTF-8"}, path="/usr/bin:/bin", cwd=os.fspath(tmp_path)
    )
    result = await run("printenv", spec)
    assert sorted(result.stdout.splitlines()) == ["FOO=bar", "LANG=C.UTF-8", "PATH=/usr/bin:/bin"]
    where = await run("pwd", spec)
    assert where.stdout.strip() == os.fspath(tmp_path)
    # filters get only PATH and the locale: a tenant filter that prints its environment shows it
    policy = GuardPolicy(pipe_allow_list=("printenv",), filters=(FilterSpec(name="printenv"),))
    filtered = await run(
        "true | printenv", RunSpec(pins=pins, env={"FOO": "bar", "LANG": "C.UTF-8"}, policy=policy)
    )
    assert sorted(filtered.stdout.splitlines()) == ["LANG=C.UTF-8", f"PATH={DEFAULT_PATH}"]


async def test_output_is_bounded_and_marked_truncated(make_script: MakeScript) -> None:
    chatty = make_script("chatty", "sys.stdout.write('x' * 200_000)\nsys.stderr.write('e' * 5000)\n")
    policy = GuardPolicy(max_output_bytes=1000, stderr_tail_bytes=100)
    result = await run(os.fspath(chatty), RunSpec(pins=pinned(chatty), policy=policy))
    assert result.ok
    assert len(result.stdout.encode()) == 1000 and result.stdout_truncated
    assert result.stdout_bytes == 200_000
    assert len(result.stderr) == 1000 and result.stderr_truncated
    assert len(result.attempts[0].stderr_tail) == 100
    small = await run("echo hi", RunSpec())
    assert (small.stdout, small.stdout_truncated, small.stderr_truncated) == ("hi\n", False, False)


async def test_the_record_is_json_serialisable() -> None:
    result = await run("echo hi | wc -c", RunSpec())
    decoded = msgspec.json.decode(msgspec.json.encode(result), type=RunResult)
    assert decoded == result


async def test_a_pipeline_is_checked_again_before_it_runs() -> None:
    assert (await run(check("echo checked"), RunSpec())).stdout == "checked\n"
    forged = Pipeline((("sh", "-c", "echo forged"),))
    with pytest.raises(ForbiddenBinary):
        await run(forged, RunSpec())


async def test_without_pidfds_exits_are_awaited_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    result = await run("echo hi | wc -c", RunSpec())
    assert result.ok and result.stdout.strip() == "3"


async def test_a_missing_working_directory_fails_to_spawn() -> None:
    with pytest.raises(SpawnFailed, match="could not start"):
        await run("true", RunSpec(cwd="/nonexistent/dir"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"env": {"PATH": "/tmp"}}, "RunSpec.path"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"jitter": 2.0}, "jitter"),
        ({"backoff_base_s": 2.0, "backoff_cap_s": 1.0}, "backoff_cap_s"),
        ({"provider": "nope"}, "unknown CLI profile"),
    ],
)
def test_run_spec_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyInvalid, match=message):
        RunSpec(**fields)  # type: ignore[arg-type]


def test_run_spec_repr_hides_environment_and_secrets() -> None:
    spec = RunSpec(env={"AWS_SECRET_ACCESS_KEY": "abcd1234"}, secrets=("abcd1234",), stdin=b"abcd1234")
    assert "abcd1234" not in repr(spec)


async def test_rate_limit_per_target() -> None:
    limiter = RateLimiter(20.0, rates={"slow": 5.0})
    clock = time.monotonic()
    for _ in range(3):
        await limiter.acquire("fast")
    fast = time.monotonic() - clock
    waited = [await limiter.acquire("slow") for _ in range(3)]
    assert 0.09 <= fast < 0.5
    assert waited[0] == 0 and 0.15 <= waited[1] <= 0.2


async def test_runs_against_one_target_are_spaced() -> None:
    limiter = RateLimiter(10.0)
    clock = time.monotonic()
    for _ in range(3):
        await run("true", RunSpec(target="db"), rate_limiter=limiter)
    assert time.monotonic() - clock >= 0.19
    with pytest.raises(PolicyInvalid):
        RateLimiter(0)
