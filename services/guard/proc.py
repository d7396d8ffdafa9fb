"""Run one pipeline attempt: processes joined by OS pipes, each in its own process group.

Stage *i*'s stdout is an OS pipe that is stage *i+1*'s stdin; the first stage reads
``/dev/null``; the last stage's stdout and the stderr all stages share are captured, each up to
a byte bound (the rest is drained and counted, so a chatty process never blocks). Exits are
awaited on pidfds, so no watcher thread is started per process. Every stage starts
a new session, so the stage and all its children share a process group that can be signalled
as one. When a stage exits, whatever it left running in its group gets SIGTERM, then SIGKILL
after the grace period (it would otherwise hold the pipes open); when the attempt ends by
timeout or cancellation, every group gets the same. Nothing is left behind except processes
that made a session of their own (daemons).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import anyio
import anyio.to_thread

from services.guard.errors import SpawnFailed

_REAP_S = 5.0
"""How long to wait for killed processes to be gone before giving up on them."""


class Capture:
    """The first ``limit`` bytes of a stream, and how many bytes it carried in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.total += len(chunk)

    @property
    def complete(self) -> bool:
        """True when nothing was dropped."""
        return self.total == len(self.data)


class Outcome:
    """What one attempt produced: each stage's exit status, the captures, whether it timed out."""

    def __init__(self, returncodes: list[int], stdout: Capture, stderr: Capture, timed_out: bool) -> None:
        self.returncodes = returncodes
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out

    @property
    def failed_stage(self) -> int | None:
        """The first stage that failed (a stage killed by SIGPIPE because a later one stopped
        reading has not failed), or None when all succeeded."""
        last = len(self.returncodes) - 1
        for index, rc in enumerate(self.returncodes):
            if rc != 0 and not (index < last and rc == -signal.SIGPIPE):
                return index
        return None

    @property
    def rc(self) -> int:
        """The pipeline's status: that of the first failing stage, else 0."""
        failed = self.failed_stage
        return 0 if failed is None else self.returncodes[failed]


async def run_pipeline(
    stages: Sequence[Sequence[str]],
    *,
    envs: Sequence[Mapping[str, str]],
    cwd: str,
    timeout_s: float,
    grace_s: float,
    keep_bytes: int,
    stdin: bytes | None = None,
) -> Outcome:
    """Run ``stages`` once under ``timeout_s``; never leaves a process of its groups running.

    ``stdin`` (when given) is written to the first stage through a pipe, then closed.
    """
    stdout, stderr = Capture(keep_bytes), Capture(keep_bytes)
    procs: list[subprocess.Popen[bytes]] = []
    ends: list[int] = []
    try:
        with anyio.move_on_after(timeout_s) as scope:
            feed_read, feed_write = os.pipe() if stdin is not None else (subprocess.DEVNULL, -1)
            if feed_write >= 0:
                ends.append(feed_write)
            ends += spawn(stages, envs, cwd, procs, feed_read)
            async with anyio.create_task_group() as tg:
                if stdin is not None:
                    tg.start_soon(_feed, ends.pop(0), stdin)
                tg.start_soon(_drain, ends[0], stdout)
                tg.start_soon(_drain, ends[1], stderr)
                for proc in procs:
                    await exited(proc)
                    # What the stage left behind would hold the pipes open: stop it now.
                    await _stop([proc.pid], grace_s)
    finally:
        with anyio.CancelScope(shield=True):
            await reap(procs, grace_s)
        for end in ends:
            os.close(end)
    codes = [proc.returncode if proc.returncode is not None else -signal.SIGKILL for proc in procs]
    return Outcome(codes, stdout, stderr, timed_out=scope.cancelled_caught)


def spawn(
    stages: Sequence[Sequence[str]],
    envs: Sequence[Mapping[str, str]],
    cwd: str,
    procs: list[subprocess.Popen[bytes]],
    first_stdin: int = subprocess.DEVNULL,
) -> tuple[int, int]:
    """Start the stages, each in a new session; returns the read ends of the last stage's
    stdout and of the stderr all stages share. ``first_stdin`` is closed once handed over."""
    err_read, err_write = os.pipe()
    stdin = first_stdin
    try:
        for index, argv in enumerate(stages):
            read_end, write_end = os.pipe()
            try:
                procs.append(
                    subprocess.Popen(
                        list(argv),
                        stdin=stdin,
                        stdout=write_end,
                        stderr=err_write,
                        cwd=cwd,
                        env=envs[index],
                        start_new_session=True,
                    )
                )
            except OSError as exc:
                os.close(read_end)
                raise SpawnFailed(
                    f"could not start {argv[0]!r} (stage {index + 1}) in {cwd!r}: {exc.strerror}. "
                    "Check that the working directory exists and the program is executable."
                ) from None
            finally:
                os.close(write_end)
                if stdin >= 0:
                    os.close(stdin)
            stdin = read_end
    except BaseException:
        os.close(err_read)
        raise
    finally:
        os.close(err_write)
    return stdin, err_read


async def _feed(end: int, data: bytes) -> None:
    """Write ``data`` to the first stage's stdin, then close it (a stage may stop reading early)."""
    os.set_blocking(end, False)
    view = memoryview(data)
    try:
        while view:
            await anyio.wait_writable(end)
            try:
                view = view[os.write(end, view) :]
            except BlockingIOError:
                continue
    except BrokenPipeError:
        pass
    finally:
        os.close(end)


async def _drain(end: int, capture: Capture) -> None:
    os.set_blocking(end, False)
    while True:
        await anyio.wait_readable(end)
        try:
            chunk = os.read(end, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return
        capture.feed(chunk)


async def exited(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit (on a pidfd, without a watcher thread) and reap it."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfds here (Linux < 5.3, other systems)
        return await anyio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
    try:
        await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return proc.wait()


async def reap(procs: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """Stop every stage's group, then reap the stages themselves."""
    await _stop([proc.pid for proc in procs], grace_s)
    for proc in procs:
        with anyio.move_on_after(_REAP_S):
            await exited(proc)


async def _stop(groups: list[int], grace_s: float) -> None:
    """SIGTERM every group with running members, SIGKILL what is left after ``grace_s``."""
    running = [group for group in groups if _running(group)]
    for group in running:
        _signal(group, signal.SIGTERM)
    if running:
        await _gone(running, grace_s)
        for group in running:
            _signal(group, signal.SIGKILL)
        await _gone(running, _REAP_S)  # SIGKILL is delivered asynchronously: wait until it is done


async def _gone(groups: list[int], within_s: float) -> None:
    """Wait up to ``within_s`` for ``groups`` to have no running member."""
    with anyio.move_on_after(within_s):
        # Polled: nothing signals when a process group empties (its members are not our children).
        while any(_running(group) for group in groups):  # noqa: ASYNC110
            await anyio.sleep(0.01)


def _signal(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return  # the group is already gone


def _running(group: int) -> bool:
    """True when process group ``group`` has a member that is not a zombie."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc: assume running, the caller's SIGKILL settles it
    return any(entry.isdigit() and _member_running(entry, group) for entry in entries)


def _member_running(pid: str, group: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return False
    return int(fields[2]) == group and fields[0] not in (b"Z", b"X")
