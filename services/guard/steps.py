"""Running a plan's commands through the guarded runner, and reading resources back.

Shared by pre-flight (prerequisite checks), the executor (guards and mutations) and the
verifier (read-backs): all of them run only pinned CLIs, as argv, under the guard-rails.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import sysconfig
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio

from events.model import StepAttempt, StepOutput
from events.plan import Command, ResourceRef, Step
from providers import CATALOG, PINS, Absent, Known, Observed, Present, Unknown, compare, observe
from providers.base import Batch, ResourceType, batch_readbacks, grouped_readbacks
from providers.readback import unknown
from services.guard import (
    DEFAULT_PATH,
    DEFAULT_PINS,
    DEFAULT_POLICY,
    Attempt,
    CommandRefused,
    GuardError,
    GuardPolicy,
    GuardWarning,
    Pin,
    PinTable,
    Redactor,
    RunResult,
    RunSpec,
    run,
)
from services.security.secrets import SecretResolver, UnresolvedSecret, resolve_stdin


@functools.cache
def pin_table() -> PinTable:
    """The guard's default pins plus every provider's pinned CLI, binary by binary."""
    return DEFAULT_PINS.with_pins(
        *(
            Pin(binary=binary, version=cli.version, version_args=cli.version_argv[1:], pattern=cli.version_pattern)
            for cli in PINS.values()
            for binary in cli.binaries
        )
    )


def step_env() -> dict[str, str]:
    """The explicit, minimal environment every step gets (nothing inherited by accident), plus
    where the AWS and PostgreSQL targets are (``UPM_AWS_*``/``UPM_PG_*`` → ``AWS_*``/``PG*``)."""
    # Endpoints, regions and the read-only observer's credential *files*, never a secret value;
    # the executor adds each change's own credentials on top (they take precedence).
    targets = {
        "UPM_AWS_ENDPOINT": "AWS_ENDPOINT_URL",
        "UPM_AWS_REGION": "AWS_DEFAULT_REGION",
        "UPM_AWS_OBSERVER_FILE": "AWS_SHARED_CREDENTIALS_FILE",
        "UPM_PG_HOST": "PGHOST",
        "UPM_PG_PORT": "PGPORT",
        "UPM_PG_OBSERVER_USER": "PGUSER",
        "UPM_PG_OBSERVER_PASSFILE": "PGPASSFILE",
    }
    env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env |= {step: os.environ[mine] for mine, step in targets.items() if os.environ.get(mine)}
    if "AWS_DEFAULT_REGION" in env or "AWS_ENDPOINT_URL" in env:
        env |= {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull}
        # one retry policy, the guard's (logged, with its backoff): botocore's own (legacy mode, five
        # attempts) would hide a transient failure from the log and stretch the step by up to ~15 s
        env |= {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "1"}
    if "PGHOST" in env:
        env["PGCONNECT_TIMEOUT"] = "10"
    return env


def step_path() -> str:
    """Where steps find their pinned CLIs: ``UPM_STEP_PATH``, else this environment's scripts folder
    (the project's own ``aws``) before the system's."""
    return os.environ.get("UPM_STEP_PATH") or f"{sysconfig.get_path('scripts')}:{DEFAULT_PATH}"


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_attempt(attempt: Attempt) -> StepAttempt:
    """The event form of one guard attempt record."""
    return StepAttempt(
        n=attempt.n,
        rc=attempt.rc,
        verdict=attempt.verdict,
        reason=attempt.reason,
        started=_rfc3339(attempt.started),
        duration_ms=attempt.duration_ms,
        backoff_s=attempt.backoff_s,
        timed_out=attempt.timed_out,
        tls_fallback=attempt.tls_fallback,
        stderr_tail=attempt.stderr_tail,
    )


def to_output(result: RunResult) -> StepOutput:
    return StepOutput(
        rc=result.rc,
        stdout=result.stdout,
        stderr=result.stderr,
        stdout_trunc=result.stdout_truncated,
        stderr_trunc=result.stderr_truncated,
        attempts=len(result.attempts),
        duration_ms=round(sum(a.duration_ms for a in result.attempts), 3),
        tries=tuple(to_attempt(a) for a in result.attempts),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Executed:
    """What running one command gave: its output record and the guard's warnings (TLS fallback)."""

    output: StepOutput
    warnings: tuple[GuardWarning, ...] = ()


def with_endpoint(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """``aws`` pointed at the configured endpoint in its argv too: awscli v1 ignores
    ``AWS_ENDPOINT_URL`` for some services (SQS: aws/aws-cli#8737). Added at run time, never in
    a plan, so plans stay target-neutral."""
    endpoint = env.get("AWS_ENDPOINT_URL")
    if not argv or argv[0] != "aws" or not endpoint or "--endpoint-url" in argv:
        return tuple(argv)
    return ("aws", "--endpoint-url", endpoint, *argv[1:])


async def execute(
    command: Command,
    *,
    timeout_s: float = 60.0,
    stdin: str | None = None,
    target: str = "local",
    max_attempts: int = 3,
    redactor: Redactor | None = None,
    env: Mapping[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    pins: PinTable | None = None,
    policy: GuardPolicy = DEFAULT_POLICY,
    resolver: SecretResolver | None = None,
) -> Executed:
    """Run one command under the guard-rails; a refused command becomes rc 126 with the reason.

    ``env`` is added to the minimal step environment (credentials go there, never in argv) and
    ``secrets`` are masked everywhere in what is returned; ``pins`` extends :func:`pin_table`.
    Secret references in ``stdin`` are resolved with ``resolver`` right before it is fed, and
    their values masked like ``secrets``; one that cannot be resolved is rc 127, naming it.
    """
    try:
        stdin, resolved = resolve_stdin(stdin, resolver)
    except UnresolvedSecret as err:
        return Executed(StepOutput(rc=127, stderr=f"could not run: {err}"))
    secrets = (*secrets, *resolved)
    full_env = step_env() | dict(env or {})
    spec = RunSpec(
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        env=full_env,
        path=step_path(),
        target=target,
        secrets=secrets,
        pins=pins or pin_table(),
        policy=policy,
        stdin=None if stdin is None else stdin.encode(),
    )
    try:
        result = await run(shlex.join(with_endpoint(command.argv, full_env)), spec, redactor=redactor)
    except CommandRefused as refused:
        return Executed(StepOutput(rc=126, stderr=f"refused by the guard ({refused.rule}): {refused}"))
    except GuardError as err:
        return Executed(StepOutput(rc=127, stderr=f"could not run: {err}"))
    return Executed(to_output(result), result.warnings)


async def run_command(
    command: Command,
    *,
    timeout_s: float = 60.0,
    stdin: str | None = None,
    target: str = "local",
    max_attempts: int = 3,
    redactor: Redactor | None = None,
) -> StepOutput:
    """Run one command under the guard-rails (see :func:`execute`) and return its output record."""
    done = await execute(
        command, timeout_s=timeout_s, stdin=stdin, target=target, max_attempts=max_attempts, redactor=redactor
    )
    return done.output


Run = Callable[[Command], Awaitable[StepOutput]]
"""Runs one read-only command (how, with which time-out and retries, is the caller's choice)."""


def timed_out(out: StepOutput) -> bool:
    """Whether the command's last attempt was stopped by its time-out."""
    return bool(out.tries) and out.tries[-1].timed_out


def observed_by(ref: ResourceRef, out: StepOutput) -> Observed:
    """What ``ref``'s read-back output says: present, absent (proven) or unknown (why)."""
    return observe(ref, out.rc, out.stdout, out.stderr, timed_out=timed_out(out))


async def supplement(
    rtype: ResourceType, present: Sequence[tuple[str, str, Mapping[str, Any]]], run: Run
) -> tuple[dict[str, dict[str, Any] | Unknown], tuple[StepOutput, ...]]:
    """What ``rtype``'s supplement read-back (a file's digest) adds to resources its main read-back
    found (``(ident, target, observed)``), and the outputs of the commands that ran.

    ident → the fields it adds (``{}`` when the type has no supplement or it does not apply), or
    :class:`Unknown` when the supplement should have answered for it and did not (a file it may not
    read, or that changed while it was read): never a match, never drift.
    """
    spec = rtype.supplement
    if spec is None:
        return {ident: {} for ident, _, _ in present}, ()
    extra: dict[str, dict[str, Any] | Unknown] = {
        ident: {} for ident, _, seen in present if not spec.applies(seen)
    }
    outputs = []
    for command, idents in grouped_readbacks(spec.read, [(i, t) for i, t, seen in present if spec.applies(seen)]):
        out = await run(command)
        outputs.append(out)
        parsed = spec.read.parse(out.rc, out.stdout, idents)
        for ident in idents:
            fields = parsed.get(ident)
            extra[ident] = fields if fields is not None else _unanswered(ident, out)
    return extra, tuple(outputs)


def _unanswered(ident: str, out: StepOutput) -> Unknown:
    """Why a supplement did not answer for ``ident``: its stderr line naming it, else its stderr."""
    if out.rc == 0 and not timed_out(out):
        return Unknown(rc=0, kind="error", summary=f"the content read-back's answer did not name {ident}")
    named = [line for line in out.stderr.splitlines() if ident in line]
    return unknown(out.rc, "\n".join(named) or out.stderr, timed_out=timed_out(out))


def with_supplement(observed: Present, extra: dict[str, Any] | Unknown | None) -> Known | Unknown:
    """A present resource with its supplement's fields, or unknown when the supplement did not answer."""
    if isinstance(extra, Unknown):
        return extra
    return Present(observed.fields | (extra or {}))


async def observe_one(ref: ResourceRef, command: Command, run: Run) -> tuple[tuple[StepOutput, ...], Observed]:
    """``ref`` read back with ``run``: its read-back ``command``, then its type's supplement when
    the resource is there. Every output, and what they say (present / absent / unknown)."""
    out = await run(command)
    observed = observed_by(ref, out)
    if not isinstance(observed, Present):
        return (out,), observed
    extra, more = await supplement(CATALOG[ref.type], [(ref.name, ref.target, observed.fields)], run)
    return (out, *more), with_supplement(observed, extra.get(ref.name))


async def read_back(
    ref: ResourceRef,
    command: Command,
    *,
    timeout_s: float = 30.0,
    env: Mapping[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    pins: PinTable | None = None,
) -> Observed:
    """Observe a resource (:func:`observe_one`): present, absent, or unknown with the reason."""

    async def run(cmd: Command) -> StepOutput:
        return (await execute(cmd, timeout_s=timeout_s, env=env, secrets=secrets, pins=pins)).output

    _, observed = await observe_one(ref, command, run)
    return observed


async def batch_observe(
    steps: Sequence[Step],
    *,
    timeout_s: float = 60.0,
    env: Mapping[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    pins: PinTable | None = None,
) -> dict[int, Known]:
    """Read many resources back with one command per batchable group (one CLI start-up, one API
    call), where the provider can, plus one supplement command per group (a file's digest):
    ``{index in steps: present or absent}`` for what the batches answered. Types without a batch
    read-back, single resources and anything a batch left out (it failed, or could not tell) are
    not in the result: read those one by one, which says why they are unknown. ``env``, ``secrets``
    and ``pins``: as :func:`execute` (the executor's credentials; default: the service's own)."""

    async def run(cmd: Command) -> StepOutput:
        return (await execute(cmd, timeout_s=timeout_s, max_attempts=2, env=env, secrets=secrets, pins=pins)).output

    by_type: dict[str, list[int]] = {}
    for i, step in enumerate(steps):
        by_type.setdefault(step.resource.type, []).append(i)
    answered: dict[int, Known] = {}
    for type_name, indexes in sorted(by_type.items()):
        rtype = CATALOG.get(type_name)
        if rtype is None or rtype.batch is None or len(indexes) < 2:
            continue
        targets = {steps[i].resource.name: steps[i].target for i in indexes}
        for command, idents in batch_readbacks(rtype, list(targets.items())):
            seen = await _read_batch(rtype, rtype.batch, command, idents, targets, run)
            answered |= {i: seen[steps[i].resource.name] for i in indexes if steps[i].resource.name in seen}
    return answered


async def _read_batch(
    rtype: ResourceType, batch: Batch, command: Command, idents: Sequence[str], targets: Mapping[str, str], run: Run
) -> dict[str, Known]:
    """One batch read-back of ``idents`` and its supplement: ident → present or absent, for those
    both answered."""
    out = await run(command)
    parsed = batch.parse(out.rc, out.stdout, idents)
    found = {ident: Present({"exists": True, **fields}) for ident, fields in parsed.items() if fields is not None}
    extra, _ = await supplement(rtype, [(ident, targets[ident], seen.fields) for ident, seen in found.items()], run)
    answered: dict[str, Known] = {ident: Absent("not in the batch's answer") for ident, fields in parsed.items()
                                  if fields is None}
    if batch.absent is not None:
        answered |= {ident: Absent(proof) for ident, proof in batch.absent(out.stderr, idents).items()
                     if ident not in parsed}
    for ident, seen in found.items():
        full = with_supplement(seen, extra.get(ident))
        if not isinstance(full, Unknown):
            answered[ident] = full
    return answered


async def observe_many(steps: Sequence[Step], *, concurrency: int = 16) -> list[Observed]:
    """Every step's resource read back: batched where the provider allows, the rest in parallel."""
    answered = await batch_observe(steps)
    unread = Unknown(rc=0, kind="error", summary="not read back")
    results: list[Observed] = [answered.get(i, unread) for i in range(len(steps))]
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(i: int, step: Step) -> None:
        async with limiter:
            results[i] = await read_back(step.resource, step.readback, timeout_s=step.timeout_s)

    async with anyio.create_task_group() as tg:
        for i, step in enumerate(steps):
            if i not in answered:
                tg.start_soon(one, i, step)
    return results


async def already_done(
    step: Step,
    *,
    env: Mapping[str, str] | None = None,
    secrets: tuple[str, ...] = (),
    pins: PinTable | None = None,
) -> bool:
    """Whether the step's guard read-back shows its desired state; an unknown read-back never does
    (the step runs, and fails on its own if the target cannot be reached)."""
    if step.guard is None:
        return False
    observed = await read_back(
        step.resource, step.guard, timeout_s=step.timeout_s, env=env, secrets=secrets, pins=pins
    )
    return shows_done(step, observed)


def shows_done(step: Step, observed: Observed) -> bool:
    """Whether ``observed`` (the step's guard read back) shows the step's desired state (pure); an
    unknown read-back never does."""
    return not isinstance(observed, Unknown) and not compare(step.desired, observed.fields)
