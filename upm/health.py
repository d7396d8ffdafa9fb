"""Health at a glance: is every service up, is anything behind, stalled or failing.

Three parts:

* :class:`Beacon`, hosted next to every service (:func:`upm.app.serve`): it answers the
  core-NATS ping ``upm.health.ping`` with a :class:`Heartbeat` (service, pid, host, version, when
  it started, its process's last error). Nothing is stored and nothing runs on a timer: a service
  is up when it answers *now*, so a stopped (SIGSTOP) or wedged process shows as down at once,
  and a restarted responder knows everything on its first ping (a heartbeat kept in a key-value
  bucket would need a TTL to tell the dead, a timer per process and, on an fsynced server, a disk
  write per beat).
* :class:`Responder`, hosted with the auditor (it holds the watchdog's open changes and the newest
  signed head): it answers ``upm.qry._system.health.<principal>`` with a :class:`BusHealth` — the
  pings' answers, the lag of every durable consumer on ``UPM_EVENTS`` (pending, ack-pending), the
  stream's state (messages, bytes, first/last sequence, replicas and cluster), the newest signed
  head and the stalled changes. Under an access file only operators, auditors and admins (of any
  tenant), ``upm-serve`` and ``upm-admin`` may ask.
* :func:`assess` (pure): the bus's answer and what the state file of ``upm up`` says about the
  local processes (pids, restarts, the supervisor) become one :class:`Health` with the list of
  problems that make ``upm health`` exit 1: a service or the supervisor not running, a service not
  answering, nats-server unreachable, the responder silent, a missing durable consumer, or a
  backlog beyond ``UPM_HEALTH_MAX_BACKLOG`` (default 1000) that did not shrink since the
  responder's previous look. Stalled changes are listed, not counted as down (the watchdog
  already nudges or closes them).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events.lifecycle import ChangeState
from events.subjects import HEALTH_PING, STREAM, SYSTEM_TENANT, query_subject
from services.common import logs
from services.common.client import ask, raise_for_reply
from services.common.responder import reply_to
from services.security.access import Access, Forbidden, refusal
from upm import processes

if TYPE_CHECKING:  # the auditor hosts the responder; every other service hosts only a beacon (no auditor modules)
    from services.auditor.service import Witnessed
    from services.auditor.watchdog import Deadlines

log = logging.getLogger("upm.health")

VERB = "health"
QUEUE = "upm-health"
PING_S = 1.5  # how long the responder waits for every service to answer the ping
BACKLOG_ENV = "UPM_HEALTH_MAX_BACKLOG"
DEFAULT_MAX_BACKLOG = 1000
SERVER = "nats-server"
RESPONDER_HOST = "auditor"  # the service hosting the health responder (upm/app.py)


def version() -> str:
    try:
        return importlib.metadata.version("upm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    pid: int
    host: str
    version: str
    started_at: str
    last_error: dict[str, str] | None = None


class ConsumerLag(msgspec.Struct, frozen=True, kw_only=True):
    """A service's durable consumer on ``UPM_EVENTS`` (``error`` when it could not be read)."""

    service: str
    pending: int = 0  # stored but not yet delivered
    ack_pending: int = 0  # delivered, not yet acknowledged
    redelivered: int = 0
    delivered_seq: int = 0
    error: str = ""

    @property
    def backlog(self) -> int:
        return self.pending + self.ack_pending


class StreamState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int
    replicas: int
    cluster: dict[str, Any] | None = None  # name, leader, replicas (name, current, offline, active_s, lag)


class Head(msgspec.Struct, frozen=True, kw_only=True):
    """The newest signed log head: where it is stored, how many events it covers, when and by whom signed."""

    seq: int
    size: int
    root: str
    signed_at: str
    key_id: str


class StalledChange(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    change_id: str
    status: str
    since: str  # the change's last event
    nudges: int  # change.stalled events so far


class BusHealth(msgspec.Struct, frozen=True, kw_only=True):
    """The responder's answer."""

    heartbeats: list[Heartbeat]
    consumers: list[ConsumerLag]
    stream: StreamState | None
    head: Head | None
    stalled: list[StalledChange]
    problems: list[str]  # a growing backlog, a missing consumer, the stream unreadable
    ping_s: float
    max_backlog: int
    answered_by: str
    ok: bool = True


# -- the pure parts --------------------------------------------------------------------------


def growing_backlogs(previous: Mapping[str, int], consumers: Sequence[ConsumerLag], limit: int) -> list[str]:
    """The consumers whose backlog is beyond ``limit`` and did not shrink since ``previous`` (the
    backlog per service at the last look; a first look counts the threshold alone)."""
    out = []
    for c in consumers:
        before = previous.get(c.service)
        if not c.error and c.backlog > limit and (before is None or c.backlog >= before):
            out.append(f"{c.service}: {c.backlog} events behind (pending {c.pending}, unacknowledged "
                       f"{c.ack_pending}; limit {limit}) and not catching up; see its log")
    return out


def stalled_changes(states: Sequence[ChangeState], now: datetime, deadlines: Deadlines) -> list[StalledChange]:
    """Open changes that are past their status's deadline (:func:`services.auditor.watchdog.due`) or whose
    last event is the watchdog's nudge (no progress since)."""
    from services.auditor.watchdog import due

    out = []
    for state in states:
        if due(state, now, deadlines) is None and state.last_type != "change.stalled":
            continue
        out.append(StalledChange(tenant=state.tenant, change_id=state.change_id, status=state.status,
                                 since=state.last_ts, nudges=len(state.stalls)))
    return sorted(out, key=lambda s: s.since)


class Process(msgspec.Struct, frozen=True, kw_only=True):
    """One process of ``upm up`` as its state file records it."""

    name: str
    pid: int | None
    running: bool
    restarts: int = 0
    last_exit: int | None = None


class Local(msgspec.Struct, frozen=True, kw_only=True):
    """What the state file of ``upm up`` says, checked against the running processes."""

    processes: dict[str, Process]
    supervisor: Process | None
    metrics: str | None = None


def local_facts(state: Mapping[str, Any], alive: Callable[[int], bool] = processes.alive) -> Local:
    restarts = state.get("restarts") or {}
    procs = {}
    for name, pid in (state.get("pids") or {}).items():
        done = restarts.get(name) or {}
        procs[name] = Process(name=name, pid=int(pid), running=alive(int(pid)), restarts=int(done.get("count", 0)),
                              last_exit=done.get("last_exit"))
    boss = state.get("supervisor")
    supervisor = Process(name="supervisor", pid=int(boss), running=alive(int(boss))) if boss else None
    return Local(processes=procs, supervisor=supervisor, metrics=state.get("metrics"))


class ServiceHealth(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    up: bool
    pid: int | None = None
    restarts: int = 0
    pending: int | None = None
    ack_pending: int | None = None
    version: str | None = None
    last_error: dict[str, str] | None = None
    instances: int = 0  # how many answered the ping
    why: str = ""


class Health(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    problems: list[str]
    services: list[ServiceHealth]
    nats: dict[str, Any]
    supervisor: Process | None
    stream: StreamState | None
    head: Head | None
    stalled: list[StalledChange]
    metrics: str | None = None


def assess(
    expected: Sequence[str], *, url: str, local: Local | None, bus: BusHealth | None, unreachable: str = "",
    silent: str = "",
) -> Health:
    """One view of a deployment, and its problems (see the module docstring). ``unreachable``: why
    NATS could not be reached; ``silent``: why the responder did not answer."""
    problems: list[str] = []
    procs = local.processes if local is not None else {}
    if local is not None and local.supervisor is not None and not local.supervisor.running:
        problems.append(f"supervisor (pid {local.supervisor.pid}) is not running: nothing restarts a process that "
                        "dies; run `upm down`, then `upm up`")
    server = procs.get(SERVER)
    if unreachable:
        problems.append(f"{SERVER} unreachable at {url}: {unreachable}")
    elif server is not None and not server.running:
        problems.append(f"{SERVER} (pid {server.pid}) is not running")
    if bus is None and not unreachable:
        problems.append(f"the health responder (hosted by the {RESPONDER_HOST}) did not answer: {silent}")
    beats: dict[str, list[Heartbeat]] = {}
    for beat in bus.heartbeats if bus is not None else ():
        beats.setdefault(beat.service, []).append(beat)
    lags = {c.service: c for c in bus.consumers} if bus is not None else {}
    responder = procs.get(RESPONDER_HOST) if bus is None and not unreachable else None  # silent: so is its process
    services = []
    for name in expected:
        proc, answered, lag = procs.get(name), beats.get(name, []), lags.get(name)
        why = ""
        if proc is not None and not proc.running:
            why = f"not running (pid {proc.pid} is gone)"
        elif responder is not None and proc is not None and proc.pid == responder.pid:
            why = (f"its process (pid {proc.pid}) hosts the health responder, which did not answer (stopped, hung "
                   "or disconnected)")
        elif bus is not None and not answered:
            why = f"did not answer the health ping within {bus.ping_s}s (stopped, hung or disconnected)"
        if why:
            problems.append(f"{name}: {why}")
        newest = max(answered, key=lambda b: b.started_at) if answered else None
        errors = [b.last_error for b in answered if b.last_error]
        services.append(ServiceHealth(
            name=name, up=not why and (proc is not None or bool(answered)),
            pid=proc.pid if proc is not None else newest.pid if newest is not None else None,
            restarts=proc.restarts if proc is not None else 0,
            pending=lag.pending if lag is not None and not lag.error else None,
            ack_pending=lag.ack_pending if lag is not None and not lag.error else None,
            version=newest.version if newest is not None else None,
            last_error=max(errors, key=lambda e: e.get("time", "")) if errors else None,
            instances=len(answered), why=why))
    if bus is not None:
        problems += bus.problems
    return Health(
        ok=not problems, problems=problems, services=services,
        nats={"url": url, "reachable": not unreachable, "pid": server.pid if server else None,
              "restarts": server.restarts if server else 0},
        supervisor=local.supervisor if local is not None else None,
        stream=bus.stream if bus is not None else None, head=bus.head if bus is not None else None,
        stalled=bus.stalled if bus is not None else [], metrics=local.metrics if local is not None else None)


def render(health: Health) -> str:
    """``upm health`` as text."""
    lines = [f"UPM is {'healthy' if health.ok else 'NOT healthy'} (NATS {health.nats['url']})"]
    for s in health.services:
        lag = f"lag {s.pending}/{s.ack_pending}" if s.pending is not None else ""
        down = "" if s.up else f"  DOWN: {s.why or 'not running'}"
        err = f"  last error {s.last_error['time']}: {s.last_error['message'][:120]}" if s.last_error else ""
        lines.append(f"  {s.name:<10} {'up' if s.up else 'DOWN':<4} pid {s.pid or '-':<8} restarts {s.restarts}  "
                     f"{lag}{down}{err}".rstrip())
    if health.stream is not None:
        st = health.stream
        lines.append(f"stream {st.name}: {st.messages} events, {st.bytes} bytes, seq {st.first_seq}..{st.last_seq}, "
                     f"replicas {st.replicas}" + (f", cluster {st.cluster['name']} leader "
                                                  f"{st.cluster.get('leader')}" if st.cluster and st.cluster.get("name")
                                                  else ""))
    if health.head is not None:
        h = health.head
        lines.append(f"newest signed head: {h.size} events, root {h.root[:16]}…, signed {h.signed_at} by {h.key_id}")
    lines += [f"stalled: {s.tenant}/{s.change_id} {s.status} since {s.since} ({s.nudges} nudges)"
              for s in health.stalled]
    if health.metrics:
        lines.append(f"metrics: {health.metrics}")
    lines += [f"PROBLEM: {p}" for p in health.problems]
    return "\n".join(lines)


# -- the shells -------------------------------------------------------------------------------


class Beacon:
    """Answers the health ping for one hosted service (see the module docstring)."""

    def __init__(self, nc: NATS, service: str) -> None:
        self.nc = nc
        self.beat = Heartbeat(service=service, pid=os.getpid(), host=socket.gethostname(), version=version(),
                              started_at=_now())
        logs.track_errors()

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        sub = await self.nc.subscribe(HEALTH_PING)
        if ready is not None:
            ready.set()
        try:
            async for msg in sub.messages:
                await reply_to(msg, self.answer, what="a health ping")
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def answer(self, msg: Msg) -> bytes:
        return msgspec.json.encode(msgspec.structs.replace(self.beat, last_error=logs.LAST_ERROR.of(self.beat.service)))




class Responder:
    """Answers ``upm.qry._system.health.<principal>`` (see the module docstring)."""

    def __init__(self, nc: NATS, witnessed: Witnessed, *, services: Sequence[str], durables: Sequence[str],
                 access: Access) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=5.0)
        self.witnessed = witnessed
        self.services = tuple(services)
        self.durables = tuple(durables)
        self.access = access
        self.max_backlog = int(os.environ.get(BACKLOG_ENV, DEFAULT_MAX_BACKLOG))
        self.previous: dict[str, int] = {}

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        sub = await self.nc.subscribe(query_subject(SYSTEM_TENANT, VERB, "*"), queue=QUEUE)
        if ready is not None:
            ready.set()
        try:
            async for msg in sub.messages:
                await reply_to(msg, self.answer, what="a health query")
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def answer(self, msg: Msg) -> bytes | None:
        principal = self.access.caller(msg.subject, msg.reply)
        if principal is None:
            return None
        try:
            self.access.require_anywhere(principal, VERB)
        except Forbidden as err:
            return refusal(err)
        return msgspec.json.encode(await self.report())

    async def report(self) -> BusHealth:
        """Ping the services, read the consumers and the stream, in parallel."""
        heartbeats: list[Heartbeat] = []
        consumers: dict[str, ConsumerLag] = {}
        stream: list[StreamState] = []
        problems: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._ping, heartbeats)
            for name in self.durables:
                tg.start_soon(self._lag, name, consumers)
            tg.start_soon(self._stream, stream, problems)
        lags = [consumers[n] for n in self.durables]
        problems += [f"{c.service}: {c.error}" for c in lags if c.error]
        problems += growing_backlogs(self.previous, lags, self.max_backlog)
        self.previous = {c.service: c.backlog for c in lags if not c.error}
        w = self.witnessed
        head = w.head()
        if head is None:  # before the witness caught up: the heads file the auditor keeps
            from services.auditor import heads

            known = heads.read(w.data_dir)
            newest = known[-1] if known else None
            found = (Head(seq=newest.seq, size=newest.size, root=newest.root, signed_at=newest.signed_at,
                          key_id=newest.key_id) if newest is not None else None)
        else:
            found = Head(seq=head.seq, size=head.size, root=head.root, signed_at=head.signed_at, key_id=head.key_id)
        return BusHealth(heartbeats=heartbeats, consumers=lags, stream=stream[0] if stream else None, head=found,
                         stalled=stalled_changes(w.states(), datetime.now(UTC), w.deadlines),
                         problems=problems, ping_s=PING_S, max_backlog=self.max_backlog,
                         answered_by=f"auditor pid {os.getpid()} on {socket.gethostname()}")

    async def _ping(self, out: list[Heartbeat]) -> None:
        """Every answer to one ping, until every expected service answered or ``PING_S`` passed."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        missing = set(self.services)
        try:
            await self.nc.publish(HEALTH_PING, b"", reply=inbox)
            with anyio.move_on_after(PING_S):
                while missing:
                    msg = await sub.next_msg(timeout=PING_S)
                    try:
                        beat = msgspec.json.decode(msg.data, type=Heartbeat)
                    except (msgspec.ValidationError, msgspec.DecodeError):
                        continue
                    out.append(beat)
                    missing.discard(beat.service)
        except nats.errors.TimeoutError:
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _lag(self, name: str, out: dict[str, ConsumerLag]) -> None:
        try:
            info = await self.js.consumer_info(STREAM, name)
        except nats.js.errors.NotFoundError:
            out[name] = ConsumerLag(service=name, error=f"no durable consumer {name!r} on {STREAM}: the service "
                                                         "never bound it; see its log")
            return
        except (nats.errors.Error, TimeoutError) as exc:
            out[name] = ConsumerLag(service=name, error=f"its consumer could not be read: {exc or type(exc).__name__}")
            return
        out[name] = ConsumerLag(service=name, pending=info.num_pending or 0, ack_pending=info.num_ack_pending or 0,
                                redelivered=info.num_redelivered or 0,
                                delivered_seq=(info.delivered.stream_seq or 0) if info.delivered else 0)

    async def _stream(self, out: list[StreamState], problems: list[str]) -> None:
        try:
            info = await self.js.stream_info(STREAM)
        except (nats.errors.Error, TimeoutError) as exc:
            problems.append(f"stream {STREAM} could not be read: {exc or type(exc).__name__}")
            return
        cluster = None
        if info.cluster is not None:
            cluster = {"name": info.cluster.name, "leader": info.cluster.leader, "replicas": [
                {"name": p.name, "current": p.current, "offline": p.offline, "active_s": p.active, "lag": p.lag}
                for p in info.cluster.replicas or ()]}
        state = info.state
        out.append(StreamState(name=STREAM, messages=state.messages, bytes=state.bytes, first_seq=state.first_seq,
                               last_seq=state.last_seq, consumers=state.consumer_count,
                               replicas=info.config.num_replicas or 1, cluster=cluster))


async def ask_health(nc: NATS, *, principal: str, within: float = PING_S + 8.0) -> BusHealth:
    """The responder's answer, as ``principal`` (who must be allowed to ask)."""
    data = await ask(nc, query_subject(SYSTEM_TENANT, VERB, principal), b"{}", within=within, what="health queries")
    try:
        return msgspec.json.decode(data, type=BusHealth)
    except msgspec.ValidationError:
        raise_for_reply(data)
        raise
