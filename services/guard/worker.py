"""Pinned programs served by long-lived workers: a request over a pipe, not a process start.

Two programs are served (:data:`SERVABLE`, one :class:`Servable` each: how to start a worker for
the binary its pin verified, which requests go to one):

* the local writer (:mod:`upm_localfs`): a step whose pipeline is that one program, pinned at the
  version whose ``serve`` this module speaks, goes to ``upm-localfs serve`` (~1 ms instead of
  ~40 ms of interpreter start);
* the pinned ``aws`` (awscli): a step or read-back that is ``aws`` alone goes to ``upm-aws-serve
  serve AWS VERSION DEV INO MTIME`` (:mod:`upm_aws_serve`), which runs awscli's own
  ``clidriver.main()`` per request (~0.1–0.2 s instead of ~0.5 s of interpreter and imports). Only
  when the ``aws`` the pin verified is a console script whose ``#!`` interpreter lives in the same
  folder, with ``upm-aws-serve`` beside it on that same interpreter (:func:`_aws_command`); the
  worker then checks, before it serves, that it stands for that file (identity), that awscli
  imports from that environment, and that ``awscli.__version__`` is the pin's, else it answers
  ``refused`` and the key's requests run as processes (:meth:`Pool.run` returns None). Requests
  with stdin (an SSM value, a secret), ``help`` (a pager) and ``--debug`` run as processes.

The reply becomes the very :class:`~services.guard.proc.Outcome` the process would have given:
exit status, stdout and stderr in the same bounded captures. Redaction, output bounds, retries and
attempt records (:mod:`services.guard.runner`) are the same for both.

* A worker is spawned like the process it stands for: by the runner (in the executor, verifier or
  pre-flight), from the binary its pin verified (for aws: the script beside it), with the step's
  environment and working directory, in a session of its own. So its umask and user are the
  executor's, as a per-step process's were; it keeps them.
* Workers are kept per key: the worker's command, the files it stands for (device, inode, mtime
  of the binary, see :func:`services.guard.pins.PinTable.verified`, and of ``upm-aws-serve``), the
  environment and the working directory. A replaced binary or another environment gets a worker
  of its own: the executor's per-change credentials a per-change worker, the verifier's observer
  environment a long-lived one. The key is a digest: an environment may carry a change's
  credentials, which the pool does not keep.
* One request at a time per worker: a request takes an idle worker of its key, else starts one
  (lazily, on the first request) while fewer than :data:`KEEP` of its key are busy; beyond that it
  waits for one of them to be free as long as they show activity (one started or freed within
  :data:`WAIT_S`), else starts one more. So a burst of read-backs shares warm workers instead of
  starting one each, and workers that all hang hold up others for :data:`WAIT_S` at most. Once answered, a worker is kept idle for the
  next request, at most :data:`KEEP` per key and :data:`KEEP_ALL` in all (beyond that the least
  recently used ends).
* A worker found dead before a request is sent (exited, or its stdout at end of file) is
  replaced, and the request goes to the new one: it never reached the old one. A worker that
  ends *during* a request, or answers something that is not a reply, gives the attempt a failure
  (its exit status, never 0; what it wrote on its stderr): the request may have been carried
  out, so it is never counted a success, and the runner classifies it as it would a process's.
* A request not answered within the step's timeout (or cancelled): the worker's process group
  gets SIGTERM, SIGKILL after the grace period, and is reaped, exactly as a timed-out process;
  its exit status is the attempt's. The next request starts a fresh worker.
* Nothing is left running: an idle worker ends at the end of its stdin, which only this process
  holds. :func:`close` ends them (the executor, verifier and pre-flight call it when they stop),
  so does interpreter exit, and a process that dies closes their stdin with it.

The pool is module state, like the pins' verdict cache, shared by the event loops of one thread.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import select
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio

import upm_localfs as localfs
import upm_serve
from services.guard import proc
from services.guard.parse import Pipeline
from services.guard.pins import Identity, Pin, PinTable
from services.guard.proc import Capture, Outcome

KEEP = 4
"""Idle workers kept per key: a 20-step change uses one; the executor runs up to 8 changes at once."""
WAIT_S = 3.0
"""How long the workers of a key may show no activity (none started, none freed) while ``KEEP`` of
them are busy before a waiting request starts one more. A burst of read-backs (a verifier with 25
at once) then shares the warm workers instead of starting 25 (an ``aws`` worker takes ~0.5 s of
CPU to start, its calls ~0.15 s), even while the first ones are still starting on a loaded box;
workers that all hang hold the others up for this long at most."""
KEEP_ALL = 8
"""Idle workers kept in all (about 13 MiB resident each for the writer, 60 MiB for awscli, most of
it shared)."""
MAX_REPLY_BYTES = 64 * 1024 * 1024
"""A longer reply is not one (the writer's replies are a few hundred bytes, a read-back's some KiB)."""
_EXIT_S = 1.0
"""How long an idle worker told to end (its stdin closed) may take before it is stopped."""
AWS_SERVER = "upm-aws-serve"
"""The awscli worker's console script (:mod:`upm_aws_serve`), next to the ``aws`` it stands for."""


@dataclass(frozen=True)
class Servable:
    """A program the pool can serve: how to start a worker for the binary its pin verified (None
    when that binary cannot be served) and which requests go to one (the others run as processes)."""

    program: str
    command: Callable[[str, Identity, Pin], tuple[str, ...] | None]
    takes: Callable[[Sequence[str], bytes | None], bool]
    hello: bool  # the worker checks what it stands for and says so in a first line (upm_serve.encode_hello)


@dataclass(frozen=True)
class Served:
    """A step's worker: its start ``command`` and ``identity`` (the files it stands for), and
    whether it says hello first."""

    command: tuple[str, ...]
    identity: tuple[int, ...]
    hello: bool = False


def _writer_command(binary: str, identity: Identity, pin: Pin) -> tuple[str, ...] | None:
    return (binary, "serve") if pin.version == localfs.VERSION else None


def _aws_command(binary: str, identity: Identity, pin: Pin) -> tuple[str, ...] | None:
    """``upm-aws-serve serve AWS VERSION DEV INO MTIME`` when ``aws`` is a console script of an
    environment whose interpreter lives beside it and which has ``upm-aws-serve`` on the same
    interpreter (the worker checks the rest: :mod:`upm_aws_serve`); else None."""
    folder = os.path.dirname(binary)
    server = os.path.join(folder, AWS_SERVER)
    interpreter = _shebang(binary)
    if (
        interpreter is None
        or os.path.dirname(interpreter) != folder
        or _shebang(server) != interpreter
        or not os.access(server, os.X_OK)
    ):
        return None
    return (server, "serve", binary, pin.version, *map(str, identity))


def _aws_takes(argv: Sequence[str], stdin: bytes | None) -> bool:
    """Not a request with stdin (a secret or a file's content), nor ``help`` (it runs a pager),
    nor ``--debug`` or an abbreviation of it (timestamped logs: never the same twice anyway)."""
    return stdin is None and not any(w == "help" or (len(w) > 2 and "--debug".startswith(w)) for w in argv)


def _shebang(path: str) -> str | None:
    """The interpreter on ``path``'s ``#!`` line, when it is an absolute path alone."""
    try:
        with open(path, "rb") as script:
            first = script.readline(4096)
    except OSError:
        return None
    words = first[2:].split() if first.startswith(b"#!") and first.endswith(b"\n") else []
    return os.fsdecode(words[0]) if len(words) == 1 and words[0].startswith(b"/") else None


SERVABLE = {
    localfs.NAME: Servable(localfs.NAME, _writer_command, lambda argv, stdin: True, hello=False),
    "aws": Servable("aws", _aws_command, _aws_takes, hello=True),
}
"""The programs served by workers, by the name commands give them."""


def serving(
    pipeline: Pipeline, pins: PinTable, binary: str, identity: Identity, stdin: bytes | None
) -> Served | None:
    """The worker a step goes to: when ``pipeline`` is one stage of a :data:`SERVABLE` program,
    pinned, verified as ``binary`` (file ``identity``), and the request is one its workers take;
    else None (it runs as a process)."""
    servable = SERVABLE.get(pipeline.programs[0]) if len(pipeline.stages) == 1 else None
    if servable is None or servable.program not in pins:
        return None
    if not servable.takes(pipeline.stages[0][1:], stdin):
        return None
    command = servable.command(binary, identity, pins.require(servable.program))
    if command is None:
        return None
    files = identity if command[0] == binary else (*identity, *_identity(command[0]))
    return Served(command, files, servable.hello)


def _identity(path: str) -> tuple[int, ...]:
    try:
        found = os.stat(path)
    except OSError:
        return ()
    return found.st_dev, found.st_ino, found.st_mtime_ns


def key_of(command: Sequence[str], identity: Sequence[int], env: Mapping[str, str], cwd: str) -> str:
    """The pool key of a worker started as ``command`` (standing for files ``identity``) in ``env``
    and ``cwd``."""
    digest = hashlib.sha256()
    for part in (*command, *map(str, identity), cwd, *(f"{k}={v}" for k, v in sorted(env.items()))):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")  # no part can hold a NUL
    return digest.hexdigest()


def answered(line: bytes, keep_bytes: int) -> Outcome:
    """The outcome a reply line gives, captured as a process's output is; :class:`ValueError`
    when the line is not a reply."""
    rc, stdout, stderr = upm_serve.decode_reply(line)
    return Outcome([rc], _captured(stdout, keep_bytes), _captured(stderr, keep_bytes), timed_out=False)


def unanswered(name: str, rc: int, why: str, left: bytes, keep_bytes: int, *, timed_out: bool) -> Outcome:
    """The outcome of a request its worker (of program ``name``) did not answer: exit status ``rc``
    (0 becomes 1: an unanswered request never succeeded), ``why`` and what the worker ``left`` on
    its stderr."""
    note = f"{name}: {why}\n".encode()
    return Outcome([rc or 1], Capture(keep_bytes), _captured(note + left, keep_bytes), timed_out=timed_out)


def _captured(data: bytes, keep_bytes: int) -> Capture:
    capture = Capture(keep_bytes)
    capture.feed(data)
    return capture


class _NoReply(Exception):
    """Why a worker did not answer the request it was sent; ``rc`` when the attempt's exit status is
    not the worker's (it answered nonsense and was stopped for it)."""

    def __init__(self, why: str, rc: int | None = None) -> None:
        super().__init__(why)
        self.rc = rc


async def _reply(worker: _Worker, keep_bytes: int) -> Outcome:
    """The outcome of the reply ``worker`` gives to the request it was sent (or :class:`_NoReply`)."""
    try:
        line = await worker.receive()
        if line is None:
            raise _NoReply("the worker ended before it answered; the request may have been carried out")
        return answered(line, keep_bytes)
    except ValueError as err:
        raise _NoReply(f"the worker answered something that is not a reply ({err}); it was stopped", 1) from None


class _Worker:
    """One worker process (``upm-localfs serve``, ``upm-aws-serve serve ...``) and this process's
    ends of its three pipes."""

    def __init__(self, process: subprocess.Popen[bytes], requests: int, replies: int, errors: int) -> None:
        self.process = process
        self.requests = requests  # its stdin
        self.replies = replies  # its stdout
        self.errors = errors  # its stderr: it writes there only when it crashes
        self.last_words = b""  # what was on its stderr when it was stopped
        self.ended = False
        for end in (requests, replies, errors):
            os.set_blocking(end, False)

    @classmethod
    def start(cls, command: Sequence[str], env: Mapping[str, str], cwd: str) -> _Worker:
        """Spawn ``command`` as the runner spawns a stage (raises :class:`SpawnFailed`)."""
        read_end, write_end = os.pipe()
        started: list[subprocess.Popen[bytes]] = []
        try:
            replies, errors = proc.spawn([tuple(command)], [env], cwd, started, read_end)
        except BaseException:
            os.close(write_end)
            raise
        return cls(started[0], write_end, replies, errors)

    def fit(self) -> bool:
        """Running, and nothing on its stdout: no end of file (it died), no stray bytes."""
        if self.process.poll() is not None:
            return False
        poller = select.poll()
        poller.register(self.replies, select.POLLIN)
        return not poller.poll(0)

    async def send(self, request: bytes) -> bool:
        """Write the whole request; False when the worker is gone (it read no complete request,
        so it acted on none)."""
        view = memoryview(request)
        while view:
            try:
                view = view[os.write(self.requests, view) :]
            except BlockingIOError:
                await anyio.wait_writable(self.requests)
            except BrokenPipeError:
                return False
        return True

    async def receive(self) -> bytes | None:
        """The reply line; None when its stdout ends first; :class:`ValueError` when it writes
        more than one line or more than :data:`MAX_REPLY_BYTES`."""
        line = bytearray()
        while not line.endswith(b"\n"):
            await anyio.wait_readable(self.replies)
            try:
                chunk = os.read(self.replies, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            line += chunk
            if len(line) > MAX_REPLY_BYTES or line.find(b"\n") not in (-1, len(line) - 1):
                raise ValueError("it wrote more than one reply line")
        return bytes(line)

    async def stop(self, grace_s: float) -> int:
        """End it now (its process group: SIGTERM, then SIGKILL after ``grace_s``), reap it, close
        the pipes; its exit status (a signal as a negative number, as a process's)."""
        if not self.ended:
            with anyio.CancelScope(shield=True):
                await proc.reap([self.process], grace_s)
            with contextlib.suppress(OSError):  # nothing there: BlockingIOError
                self.last_words = os.read(self.errors, 65536)
            self._close()
        return self.process.returncode if self.process.returncode is not None else -signal.SIGKILL

    async def close(self) -> None:
        """Let it end (the end of its stdin); stop it if it has not within :data:`_EXIT_S`."""
        if self.ended:
            return
        with anyio.CancelScope(shield=True):
            os.close(self.requests)
            self.requests = -1
            with anyio.move_on_after(_EXIT_S):
                await proc.exited(self.process)
            await self.stop(_EXIT_S)

    def close_now(self) -> None:
        """:meth:`close`, blocking (at interpreter exit, with no event loop)."""
        if self.ended:
            return
        with contextlib.suppress(OSError):
            os.close(self.requests)
        self.requests = -1
        try:
            self.process.wait(_EXIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._close()

    def _close(self) -> None:
        self.ended = True
        for end in (self.requests, self.replies, self.errors):
            if end >= 0:
                with contextlib.suppress(OSError):
                    os.close(end)


class Pool:
    """The workers of this process, by key (see the module docstring)."""

    def __init__(self, keep: int = KEEP, keep_all: int = KEEP_ALL) -> None:
        self.keep = keep
        self.keep_all = keep_all
        self._idle: list[tuple[str, _Worker]] = []  # least recently used first
        self._live: set[_Worker] = set()  # every worker started and not yet ended
        self._refused: dict[str, str] = {}  # keys whose worker said it does not serve them: why
        self._busy: dict[str, int] = {}  # workers answering a request, by key
        self._parked: dict[str, anyio.Event] = {}  # set when a worker of the key is parked (waiters take it)
        self._active: dict[str, float] = {}  # when a worker of the key was last started or parked

    @property
    def idle(self) -> int:
        """How many workers wait for a request."""
        return len(self._idle)

    def pids(self) -> list[int]:
        """The process ids of every worker running (idle or answering)."""
        return sorted(w.process.pid for w in self._live if not w.ended)

    async def run(
        self,
        served: Served,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        stdin: bytes | None,
        timeout_s: float,
        grace_s: float,
        keep_bytes: int,
    ) -> Outcome | None:
        """What ``argv`` (the verified binary, then its arguments) gives, run on a worker of
        ``served`` (of its key) under ``timeout_s``; None when its worker refuses to serve (it
        does not stand for that binary: run it as a process); raises :class:`SpawnFailed` when
        no worker can be started."""
        key, name = key_of(served.command, served.identity, env, cwd), os.path.basename(argv[0])
        if key in self._refused:
            return None
        request = upm_serve.encode_request(argv[1:], stdin or b"")
        worker: _Worker | None = None
        failure: _NoReply | None = None
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            with anyio.move_on_after(timeout_s):
                worker = await self._take(key, grace_s) or await self._wait_for(key, grace_s)
                worker = worker or await self._start(served, key, env, cwd, grace_s)
                if worker is None:
                    return None
                if not await worker.send(request):  # it ended since its last reply: the request never reached it
                    await self._end(worker, grace_s)
                    worker = await self._start(served, key, env, cwd, grace_s)
                    if worker is None:
                        return None
                    if not await worker.send(request):
                        raise _NoReply("the worker ended as it started, before it read the request")
                outcome = await _reply(worker, keep_bytes)
                await self._park(key, worker)
                return outcome
        except _NoReply as err:
            failure = err
        except BaseException:  # cancelled, or no worker could be started: stop the one it had
            if worker is not None:
                await self._end(worker, grace_s)
            raise
        finally:
            self._busy[key] -= 1
        if worker is None:  # the timeout came before a worker was there: nothing ran
            why = f"no worker within {timeout_s:g} s"
            return unanswered(name, -signal.SIGKILL, why, b"", keep_bytes, timed_out=True)
        rc = await self._end(worker, grace_s)
        if failure is None:
            why = f"no answer within {timeout_s:g} s: the worker (pid {worker.process.pid}) was stopped"
        else:
            why, rc = str(failure), rc if failure.rc is None else failure.rc
        return unanswered(name, rc, why, worker.last_words, keep_bytes, timed_out=failure is None)

    def refused(self) -> dict[str, str]:
        """Why workers refused to serve, by key (their requests run as processes)."""
        return dict(self._refused)

    async def close(self) -> None:
        """End every idle worker (the pool starts new ones when asked again)."""
        idle, self._idle = self._idle, []
        async with anyio.create_task_group() as tg:
            for _, worker in idle:
                tg.start_soon(self._close, worker)

    def close_now(self) -> None:
        """End every worker, blocking (at interpreter exit)."""
        self._idle = []
        for worker in list(self._live):
            worker.close_now()
        self._live.clear()

    async def _start(
        self, served: Served, key: str, env: Mapping[str, str], cwd: str, grace_s: float
    ) -> _Worker | None:
        """A new worker of ``served``; None when it says it does not serve (it then exits; the key
        is remembered, so none is started for it again). A worker that ends or says something else
        before its hello, or is cancelled waiting for it, is stopped: it ran no request."""
        worker = _Worker.start(served.command, env, cwd)
        self._live.add(worker)
        self._active[key] = anyio.current_time()
        if not served.hello:
            return worker
        why: str | None = None
        try:
            line = await worker.receive()
            why = upm_serve.decode_hello(line) if line is not None else "it ended before it said it serves"
            if line is not None and why is not None:
                self._refused[key] = why
        except ValueError as err:
            why = f"its first line is not a hello ({err})"
        except BaseException:
            await self._end(worker, grace_s)
            raise
        if why is None:
            return worker
        await self._end(worker, grace_s)
        return None

    async def _take(self, key: str, grace_s: float) -> _Worker | None:
        """The most recently used idle worker of ``key`` that is fit; the unfit are ended."""
        for index in range(len(self._idle) - 1, -1, -1):
            held, worker = self._idle[index]
            if held != key:
                continue
            del self._idle[index]
            if worker.fit():
                return worker
            await self._end(worker, grace_s)
        return None

    async def _wait_for(self, key: str, grace_s: float) -> _Worker | None:
        """When ``KEEP`` workers of ``key`` are busy, one of them as soon as it is parked, as long as
        they show activity (a start or a park within ``WAIT_S``); else None (start one)."""
        while self._busy.get(key, 0) > self.keep:  # this request counts itself
            quiet = anyio.current_time() - self._active.get(key, 0.0)
            if quiet >= WAIT_S:
                return None
            parked = self._parked.setdefault(key, anyio.Event())
            with anyio.move_on_after(WAIT_S - quiet):
                await parked.wait()
            worker = await self._take(key, grace_s)
            if worker is not None:
                return worker
        return None

    async def _park(self, key: str, worker: _Worker) -> None:
        """Keep ``worker`` for the next request; end the least recently used beyond the bounds."""
        self._idle.append((key, worker))
        self._active[key] = anyio.current_time()
        parked = self._parked.pop(key, None)
        if parked is not None:
            parked.set()
        while True:
            mine = [index for index, (held, _) in enumerate(self._idle) if held == key]
            if len(mine) > self.keep:
                _, oldest = self._idle.pop(mine[0])
            elif len(self._idle) > self.keep_all:
                _, oldest = self._idle.pop(0)
            else:
                return
            await self._close(oldest)

    async def _end(self, worker: _Worker, grace_s: float) -> int:
        rc = await worker.stop(grace_s)
        self._live.discard(worker)
        return rc

    async def _close(self, worker: _Worker) -> None:
        await worker.close()
        self._live.discard(worker)


POOL = Pool()
"""This process's workers."""
atexit.register(POOL.close_now)


async def close() -> None:
    """End this process's idle workers (:meth:`Pool.close`)."""
    await POOL.close()
