"""The local writer's workers (``upm-localfs serve``, :mod:`services.guard.worker`), with real processes:
their replies are the writer's as a process, dead and hung workers are replaced, nothing is left running."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from guard_helpers import running

import upm_localfs as localfs
from services.guard import DEFAULT_PINS, Pin, PinMismatch, RunSpec, check, run, worker
from services.guard.pins import Identity, PinTable
from services.guard.proc import Outcome, run_pipeline
from services.guard.steps import pin_table, step_env, step_path

T = TypeVar("T")
ENV = {"PATH": step_path(), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
KEEP_BYTES = 1 << 20


async def writer() -> tuple[str, Identity]:
    """The real local writer on the steps' PATH, verified against its pin."""
    return await pin_table().verified(localfs.NAME, path=step_path())


async def ask(pool: worker.Pool, *argv: str, stdin: bytes | None = None, timeout_s: float = 30) -> Outcome:
    binary, identity = await writer()
    return await pool.run(worker.Served((binary, "serve"), identity), [binary, *argv], env=ENV, cwd="/", stdin=stdin, timeout_s=timeout_s,
                          grace_s=0.2, keep_bytes=KEEP_BYTES)


async def as_process(*argv: str, stdin: bytes | None = None) -> Outcome:
    binary, _ = await writer()
    return await run_pipeline([[binary, *argv]], envs=[ENV], cwd="/", timeout_s=30, grace_s=0.2,
                              keep_bytes=KEEP_BYTES, stdin=stdin)


def _dir(base: Path, name: str) -> Path:
    (base / name).mkdir()
    return base / name


def _file(base: Path, name: str, text: str = "old\n", mode: int = 0o600) -> Path:
    (base / name).write_text(text)
    (base / name).chmod(mode)
    return base / name


def _link(base: Path, name: str, to: Path) -> Path:
    (base / name).symlink_to(to)
    return base / name


def _hard(base: Path) -> Path:
    os.link(_file(base, "victim"), base / "hard")
    return base / "hard"


ME = pwd.getpwuid(os.getuid()).pw_name
Case = Callable[[Path], tuple[list[str], bytes | None]]
CASES: dict[str, tuple[Case, int, str]] = {  # name: (set up, then the request), rc, in its stderr
    "mkdir": (lambda b: (["mkdir", "-m", "0750", f"{b}/d"], None), 0, ""),
    "mkdir over a directory": (lambda b: (["mkdir", "-m", "0750", str(_dir(b, "d"))], None), 1, "File exists"),
    "mkdir through a link": (lambda b: (["mkdir", "-m", "0700", f"{_link(b, 'l', _dir(b, 'real'))}/d"], None), 1,
                             "is a symbolic link"),
    "mkdir without a mode": (lambda b: (["mkdir", f"{b}/d"], None), 2, "required: -m"),
    "mkdir of a relative path": (lambda b: (["mkdir", "-m", "0700", "rel/d"], None), 1, "absolute path"),
    "mkdir through ..": (lambda b: (["mkdir", "-m", "0700", f"{b}/../d"], None), 1, "'..' component"),
    "rmdir": (lambda b: (["rmdir", str(_dir(b, "d"))], None), 0, ""),
    "rmdir of a full directory": (lambda b: (["rmdir", str(_file(_dir(b, "d"), "f").parent)], None), 1,
                                  "not empty"),
    "rmdir of nothing": (lambda b: (["rmdir", f"{b}/none"], None), 1, "No such file"),
    "write a new file": (lambda b: (["write", "-m", "0640", f"{b}/f"], b"\x00\xff\nbinary\r\n" * 3000), 0, ""),
    "write with the umask": (lambda b: (["write", f"{b}/f"], b"new\n"), 0, ""),
    "write keeps the mode": (lambda b: (["write", str(_file(b, "f"))], b"new\n"), 0, ""),
    "write through the last link": (lambda b: (["write", str(_link(b, "l", _file(b, "v")))], b"x"), 1,
                                    "is a symbolic link"),
    "write through a middle link": (lambda b: (["write", f"{_link(b, 'm', _dir(b, 'out'))}/f"], b"x"), 1,
                                    "is a symbolic link"),
    "write a hard-linked file": (lambda b: (["write", str(_hard(b))], b"x"), 1, "hard link"),
    "write a directory": (lambda b: (["write", str(_dir(b, "d"))], b"x"), 1, "Is a directory"),
    "chmod": (lambda b: (["chmod", "0700", str(_dir(b, "d"))], None), 0, ""),
    "chmod a hard-linked file": (lambda b: (["chmod", "0644", str(_hard(b))], None), 1, "hard link"),
    "chmod with a bad mode": (lambda b: (["chmod", "999", str(_dir(b, "d"))], None), 2, "not an octal mode"),
    "chown": (lambda b: (["chown", ME, str(_file(b, "f"))], None), 0, ""),
    "chown to nobody known": (lambda b: (["chown", "no-such-user-upm", str(_file(b, "f"))], None), 1, "no user"),
    "ln -s": (lambda b: (["ln", "-s", "/target", f"{b}/l"], None), 0, ""),
    "ln -sfn": (lambda b: (["ln", "-sfn", "/new", str(_link(b, "l", Path("/old")))], None), 0, ""),
    "ln -sfn over a directory": (lambda b: (["ln", "-sfn", "/new", str(_dir(b, "d"))], None), 1, "is a directory"),
    "ln without -s": (lambda b: (["ln", "/target", f"{b}/l"], None), 2, "required: -s"),
    "rm -f": (lambda b: (["rm", "-f", str(_link(b, "l", _file(b, "v")))], None), 0, ""),
    "rm -f of nothing": (lambda b: (["rm", "-f", f"{b}/none"], None), 0, ""),
    "rm without -f": (lambda b: (["rm", f"{b}/f"], None), 2, "required: -f"),
    "--version": (lambda b: (["--version"], None), 0, ""),
    "--help": (lambda b: (["--help"], None), 0, ""),
    "no verb": (lambda b: ([], None), 2, "required: verb"),
    "an unknown verb": (lambda b: (["frobnicate", str(b)], None), 2, "invalid choice"),
}


def snapshot(base: Path) -> list[tuple[str, str, int, bytes]]:
    """Every path below ``base``: its type, mode and content (a link: its target)."""
    found = []
    for path in sorted(base.rglob("*")):
        info = path.lstat()
        body = os.readlink(path).encode() if path.is_symlink() else path.read_bytes() if path.is_file() else b""
        found.append((str(path.relative_to(base)), oct(info.st_mode), info.st_nlink, body))
    return found


@pytest.mark.parametrize("name", sorted(CASES))
async def test_a_reply_is_what_the_writer_run_as_a_process_gives(
    name: str, tmp_path: Path, pool: worker.Pool
) -> None:
    setup, rc, said = CASES[name]
    base = tmp_path / "case"  # the same path both ways: messages name it
    results = []
    for runner in (as_process, lambda *argv, stdin: ask(pool, *argv, stdin=stdin)):
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        argv, stdin = setup(base)
        done = await runner(*argv, stdin=stdin)
        results.append((done.returncodes, bytes(done.stdout.data), bytes(done.stderr.data), snapshot(base)))
    by_process, by_worker = results
    assert by_worker == by_process
    assert by_worker[0] == [rc] and said in by_worker[2].decode(), by_worker[2]
    assert len(pool.pids()) == 1  # one worker answered; bad usage did not end it


async def test_serve_is_bad_usage_on_a_worker_and_the_worker_goes_on(pool: worker.Pool) -> None:
    served = await ask(pool, "serve")
    assert served.rc == 2 and b"already serving" in served.stderr.data
    [pid] = pool.pids()
    assert (await ask(pool, "--version")).stdout.data == f"{localfs.NAME} {localfs.VERSION}\n".encode()
    assert pool.pids() == [pid]


async def test_a_worker_killed_between_requests_is_replaced_and_the_request_is_answered(
    pool: worker.Pool, tmp_path: Path
) -> None:
    assert (await ask(pool, "--version")).rc == 0
    [pid] = pool.pids()
    os.kill(pid, signal.SIGKILL)
    await _gone(pid)
    done = await ask(pool, "mkdir", "-m", "0750", str(tmp_path / "d"))
    assert (done.rc, bytes(done.stderr.data)) == (0, b"")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    [new] = pool.pids()
    assert new != pid and running(new)


async def test_a_request_to_a_worker_that_is_gone_is_not_delivered(tmp_path: Path) -> None:
    binary, _ = await writer()
    gone = worker._Worker.start((binary, "serve"), ENV, "/")
    gone.process.kill()
    gone.process.wait()
    assert not gone.fit()
    assert await gone.send(localfs.encode_request(["mkdir", "-m", "0750", str(tmp_path / "d")], b"")) is False
    await gone.stop(0.2)
    assert not (tmp_path / "d").exists()


async def test_a_worker_that_dies_during_a_request_fails_the_attempt_and_it_is_not_retried(
    tmp_path: Path,
) -> None:
    spec = RunSpec(pins=pin_table(), path=step_path(), env=step_env(), cwd=os.fspath(tmp_path), max_attempts=3,
                   backoff_base_s=0, backoff_cap_s=0)
    before = set(worker.POOL.pids())
    assert (await run(f"upm-localfs mkdir -m 0750 {tmp_path / 'warm'}", spec)).ok
    [pid] = set(worker.POOL.pids()) - before  # this test's own worker (its working directory is the test's)
    os.kill(pid, signal.SIGSTOP)
    results = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _keep(results, run(f"upm-localfs mkdir -m 0750 {tmp_path / 'd'}", spec)))
        await anyio.sleep(0.3)  # the request is in its pipe
        os.kill(pid, signal.SIGKILL)
    [result] = results
    assert not result.ok and result.rc == -signal.SIGKILL and not result.timed_out
    assert "ended before it answered" in result.stderr
    assert [a.verdict for a in result.attempts] == ["fatal"]  # it may have been carried out: no retry
    assert pid not in worker.POOL.pids()


async def test_a_request_that_hangs_times_out_its_worker_is_stopped_and_the_next_gets_a_fresh_one(
    pool: worker.Pool, tmp_path: Path
) -> None:
    assert (await ask(pool, "--version")).rc == 0
    [pid] = pool.pids()
    os.kill(pid, signal.SIGSTOP)  # a real hang: the request sits in its pipe, unread
    clock = time.monotonic()
    hung = await ask(pool, "mkdir", "-m", "0750", str(tmp_path / "d"), timeout_s=0.5)
    assert time.monotonic() - clock < 0.5 + 0.2 + 2.0
    assert hung.timed_out and hung.rc in (-signal.SIGTERM, -signal.SIGKILL)
    assert b"no answer within 0.5 s" in hung.stderr.data
    assert not running(pid) and pool.pids() == []  # its group is gone, nothing left running
    assert not (tmp_path / "d").exists()
    done = await ask(pool, "mkdir", "-m", "0750", str(tmp_path / "d"))
    assert done.rc == 0 and (tmp_path / "d").is_dir()
    [new] = pool.pids()
    assert new != pid


async def test_a_timed_out_step_is_recorded_as_a_process_timeout_would_be(tmp_path: Path) -> None:
    spec = RunSpec(pins=pin_table(), path=step_path(), env=step_env(), cwd=os.fspath(tmp_path), timeout_s=0.5,
                   kill_grace_s=0.2)
    before = set(worker.POOL.pids())
    warm = dataclasses.replace(spec, timeout_s=30)  # the same key; a worker's start may be slow under load
    assert (await run("upm-localfs --version", warm)).ok
    [pid] = set(worker.POOL.pids()) - before
    os.kill(pid, signal.SIGSTOP)
    result = await run(f"upm-localfs mkdir -m 0750 {tmp_path / 'd'}", spec)
    assert result.timed_out and not result.ok and [a.verdict for a in result.attempts] == ["timeout"]
    assert not running(pid)


async def test_a_hung_request_holds_up_no_other(pool: worker.Pool, tmp_path: Path) -> None:
    assert (await ask(pool, "--version")).rc == 0
    [stuck] = pool.pids()
    os.kill(stuck, signal.SIGSTOP)
    results: list[Outcome] = []
    clock = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _keep(results, ask(pool, "mkdir", "-m", "0750", str(tmp_path / "stuck"))))
        await anyio.sleep(0.1)  # it took the stopped worker
        for i in range(24):
            path = str(tmp_path / f"d{i % 20}")
            tg.start_soon(lambda path=path: _keep(results, ask(pool, "mkdir", "-m", "0750", path)))
        while len(results) < 24:  # noqa: ASYNC110 - the others finish while one worker is stopped
            await anyio.sleep(0.02)
        others = time.monotonic() - clock
        os.kill(stuck, signal.SIGKILL)
    assert others < 20
    made = sorted(os.listdir(tmp_path))
    assert made == sorted(f"d{i}" for i in range(20))
    codes = sorted(r.rc for r in results[:24])
    assert codes == [0] * 20 + [1] * 4  # four asked for a directory another had just made
    assert all(b"File exists" in r.stderr.data for r in results[:24] if r.rc)
    assert results[24].rc == -signal.SIGKILL
    assert len(pool.pids()) == pool.idle <= worker.KEEP  # none busy; the bound holds


async def test_a_replaced_binary_gets_a_new_worker(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    copy = bin_dir / localfs.NAME
    shutil.copy2((await writer())[0], copy)
    spec = RunSpec(pins=pin_table(), path=f"{bin_dir}:{step_path()}", env=step_env())
    before = set(worker.POOL.pids())
    for name in ("a", "b"):
        assert (await run(f"upm-localfs mkdir -m 0750 {tmp_path / name}", spec)).ok
    [first] = set(worker.POOL.pids()) - before
    assert _script(first) == os.fsencode(copy)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the same path, another file
    assert (await run(f"upm-localfs mkdir -m 0750 {tmp_path / 'c'}", spec)).ok
    [second] = set(worker.POOL.pids()) - before - {first}
    assert _script(second) == os.fsencode(copy)


def test_the_key_is_the_command_its_files_the_environment_and_the_directory() -> None:
    key = worker.key_of(("/bin/w", "serve"), (1, 2, 3), {"A": "s3cr3t"}, "/")
    assert key == worker.key_of(("/bin/w", "serve"), (1, 2, 3), {"A": "s3cr3t"}, "/")
    others = [
        worker.key_of(("/bin/v", "serve"), (1, 2, 3), {"A": "s3cr3t"}, "/"),
        worker.key_of(("/bin/w", "serve", "x"), (1, 2, 3), {"A": "s3cr3t"}, "/"),
        worker.key_of(("/bin/w", "serve"), (1, 2, 4), {"A": "s3cr3t"}, "/"),
        worker.key_of(("/bin/w", "serve"), (1, 2, 3, 4, 5, 6), {"A": "s3cr3t"}, "/"),
        worker.key_of(("/bin/w", "serve"), (1, 2, 3), {"A": "other"}, "/"),
        worker.key_of(("/bin/w", "serve"), (1, 2, 3), {"A": "s3cr3t", "B": ""}, "/"),
        worker.key_of(("/bin/w", "serve"), (1, 2, 3), {"A": "s3cr3t"}, "/srv"),
    ]
    assert len({key, *others}) == 8
    assert "s3cr3t" not in key  # a digest: the pool keeps no credential


def serves(command: str, pins: PinTable, stdin: bytes | None = None) -> bool:
    pipeline = check(command, pins=pins)
    return worker.serving(pipeline, pins, f"/bin/{pipeline.programs[0]}", (1, 2, 3), stdin) is not None


def test_only_the_writer_alone_at_its_own_version_is_served() -> None:
    pins = pin_table()
    assert serves("upm-localfs mkdir -m 0750 /srv/a", pins)
    assert serves("upm-localfs write /srv/a", pins, b"content")  # its stdin goes in the request
    assert not serves("upm-localfs --version | wc -l", pins)
    assert not serves("mkdir -m 0750 /srv/a", pins)
    older = pins.with_pins(Pin(binary=localfs.NAME, version="1.0"))
    assert not serves("upm-localfs mkdir -m 0750 /srv/a", older)
    assert not serves("true", DEFAULT_PINS)


def _fake_writer(tmp_path: Path, version: str, body: str = "") -> tuple[Path, Path]:
    """A writer on its own PATH entry that reports ``version``; otherwise it notes its pid and arguments
    in the file returned, then runs ``body``."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "ran"
    bin_dir.mkdir()
    fake = bin_dir / localfs.NAME
    fake.write_text(f"#!{sys.executable}\nimport os, sys, time\n"
                    f"if sys.argv[1:] == ['--version']:\n    print('{localfs.NAME} {version}')\n    sys.exit(0)\n"
                    f"open({os.fspath(marker)!r}, 'w').write(' '.join([str(os.getpid()), *sys.argv[1:]]))\n"
                    + textwrap.dedent(body))
    fake.chmod(0o755)
    return bin_dir, marker


@pytest.mark.parametrize(("body", "rc", "said"), [
    ("sys.stdin.readline()\nsys.exit(0)\n", 1, "ended before it answered"),  # never a silent success
    ("sys.stdin.readline()\nprint('hello', flush=True)\ntime.sleep(60)\n", 1, "not a reply"),
    ("sys.stdin.readline()\nsys.stderr.write('Traceback: boom\\n')\nsys.exit(3)\n", 3, "boom"),
])
async def test_a_worker_that_does_not_answer_fails_the_attempt(
    tmp_path: Path, body: str, rc: int, said: str
) -> None:
    bin_dir, marker = _fake_writer(tmp_path, localfs.VERSION, body)  # it passes the pin
    spec = RunSpec(pins=pin_table(), path=f"{bin_dir}:{step_path()}", max_attempts=3, backoff_base_s=0,
                   backoff_cap_s=0)
    result = await run(f"upm-localfs mkdir -m 0750 {tmp_path / 'd'}", spec)
    assert (result.ok, result.rc, result.timed_out) == (False, rc, False)
    assert said in result.stderr and [a.verdict for a in result.attempts] == ["fatal"]
    pid, *argv = marker.read_text().split()
    assert argv == ["serve"] and not running(int(pid))


async def test_no_worker_starts_for_a_writer_whose_version_report_does_not_match(tmp_path: Path) -> None:
    bin_dir, marker = _fake_writer(tmp_path, "0.9")
    before = worker.POOL.pids()
    with pytest.raises(PinMismatch, match=r"reports 0\.9"):
        await run(f"upm-localfs mkdir -m 0750 {tmp_path / 'd'}",
                  RunSpec(pins=pin_table(), path=f"{bin_dir}:{step_path()}"))
    assert worker.POOL.pids() == before and not marker.exists()


async def test_a_writer_pinned_at_another_version_runs_as_a_process(tmp_path: Path) -> None:
    bin_dir, marker = _fake_writer(tmp_path, "0.9")
    pins = pin_table().with_pins(Pin(binary=localfs.NAME, version="0.9"))
    before = worker.POOL.pids()
    spec = RunSpec(pins=pins, path=f"{bin_dir}:{step_path()}")
    result = await run(f"upm-localfs mkdir -m 0750 {tmp_path / 'd'}", spec)
    assert result.ok and marker.read_text().split()[1:] == ["mkdir", "-m", "0750", str(tmp_path / "d")]
    assert worker.POOL.pids() == before


STANDALONE = """
import sys, time
import anyio
from services.guard import RunSpec, run, worker
from services.guard.steps import pin_table, step_env, step_path

async def main() -> None:
    result = await run(f"upm-localfs mkdir -m 0750 {sys.argv[2]}", RunSpec(pins=pin_table(), path=step_path(),
                                                                           env=step_env()))
    print(result.rc, *worker.POOL.pids(), flush=True)
    if sys.argv[1] == "stay":
        time.sleep(60)

anyio.run(main)
"""


@pytest.mark.parametrize("end", ["exit", "kill -9"])
def test_no_worker_outlives_the_process_that_started_it(tmp_path: Path, end: str) -> None:
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen([sys.executable, "-c", STANDALONE, "exit" if end == "exit" else "stay",
                           str(tmp_path / "d")], cwd=root, stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            rc, *pids = map(int, parent.stdout.readline().split())
            assert rc == 0 and len(pids) == 1 and (tmp_path / "d").is_dir()
            if end == "kill -9":
                parent.kill()  # no atexit: the worker sees the end of its stdin
            parent.wait(30)
        finally:
            parent.kill()
    deadline = time.monotonic() + 5
    while running(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(pids[0])


def _script(pid: int) -> bytes:
    """The script a worker runs (its interpreter's first argument)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1]


async def _gone(pid: int) -> None:
    with anyio.fail_after(5):
        while running(pid):  # noqa: ASYNC110 - a process we did not start (or must not reap) ending
            await anyio.sleep(0.01)


async def _keep(results: list[T], pending: Awaitable[T]) -> None:
    results.append(await pending)


def test_every_service_that_runs_guarded_commands_ends_its_workers_when_it_stops() -> None:
    from services import executor, preflight, verifier

    assert [s.on_stop for s in (executor.spec(), verifier.spec(), preflight.spec())] == [worker.close] * 3


async def test_a_burst_shares_the_warm_workers_instead_of_starting_one_per_request(tmp_path: Path) -> None:
    """Thirty requests of one key at once start at most ``keep`` workers, each answering several in turn
    (an aws worker takes ~0.5 s of CPU to start, a call ~0.15 s: one per request was a start storm)."""
    small = worker.Pool(keep=2, keep_all=2)
    started: list[int] = []
    start = small._start

    async def counted(*args: Any, **kwargs: Any) -> worker._Worker | None:
        got = await start(*args, **kwargs)
        started.append(0 if got is None else got.process.pid)
        return got

    small._start = counted  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(ask, small, "mkdir", "-m", "0750", str(tmp_path / f"d{i}"))
        assert sorted(os.listdir(tmp_path)) == sorted(f"d{i}" for i in range(30))
        assert len(started) <= 2, f"{len(started)} workers started for 30 requests"
    finally:
        small.close_now()


async def test_when_every_worker_of_a_key_hangs_a_request_starts_another_after_the_wait(tmp_path: Path) -> None:
    """With its one worker stopped mid-request (``keep`` 1), a request waits while that worker shows no
    activity for ``WAIT_S``, then starts another and is answered: a hung worker holds it up no longer."""
    small = worker.Pool(keep=1, keep_all=1)
    try:
        assert (await ask(small, "--version")).rc == 0
        [stuck] = small.pids()
        os.kill(stuck, signal.SIGSTOP)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: ask(small, "mkdir", "-m", "0750", str(tmp_path / "stuck")))
            await anyio.sleep(0.1)  # it took the stopped worker
            clock = time.monotonic()
            other = await ask(small, "mkdir", "-m", "0750", str(tmp_path / "other"))
            waited = time.monotonic() - clock
            os.kill(stuck, signal.SIGKILL)
        assert other.rc == 0 and (tmp_path / "other").is_dir()
        assert worker.WAIT_S * 0.8 <= waited < 20, waited
    finally:
        small.close_now()
