"""The runner: check, verify pins, run with timeouts, retries and the TLS fallback, record.

:func:`run` is the only way the guard executes anything. It checks the command (raising a
redacted :class:`CommandRefused` before anything runs), verifies every program's pin, then
runs attempts until one succeeds, a failure is not worth retrying, or the attempts run out:

* a retryable failure (connection refused/reset, throttling, 5xx; see :mod:`.classify`) is
  retried after ``min(cap, base * 2**(k-1))`` seconds, shortened by up to ``jitter`` of itself
  at random, until ``max_attempts`` attempts have run;
* a certificate-verification failure, when the policy allows it and the CLI has a way, is
  retried once at once without verification; that attempt is marked ``tls_fallback`` and a
  warning-level record is added; it does not use up the retry budget;
* a timeout or any other failure ends the step.

Each attempt has its own timeout and runs in a minimal environment: the step's ``env`` plus
``PATH`` for the first stage, only ``PATH`` and the locale for filters. Everything recorded
(output, commands, stderr tails, warnings, error messages) is redacted before it is stored.
"""

from __future__ import annotations

import dataclasses
import random
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import anyio
import msgspec

from services.common import metrics
from services.common.retry import RetryPolicy
from services.guard import worker
from services.guard.classify import CliProfile, Verdict, profile_for
from services.guard.errors import CommandRefused, PolicyInvalid, SpawnFailed
from services.guard.parse import Pipeline, check
from services.guard.pins import DEFAULT_PINS, PinTable
from services.guard.policy import DEFAULT_POLICY, GuardPolicy
from services.guard.proc import Capture, Outcome, run_pipeline
from services.guard.ratelimit import RateLimiter
from services.guard.redact import Redactor

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_ATTEMPTS = 10
REDACTION_MARGIN = 16 * 1024
"""Bytes kept beyond the output bound so that a secret across the bound is redacted whole."""

_JITTER = random.SystemRandom()
_FILTER_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "LC_COLLATE", "LC_NUMERIC", "TZ")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RunSpec:
    """How to run one step. ``env`` is the whole environment of the first stage (plus ``PATH``
    from ``path``): nothing is inherited from the service. ``secrets`` are registered with the
    redactor; ``provider`` names the CLI profile for retries and TLS (default: by program).
    ``stdin`` is fed to the first stage (file content: there is no redirection)."""

    timeout_s: float = 60.0
    kill_grace_s: float = 2.0
    max_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    jitter: float = 0.5
    env: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    path: str = DEFAULT_PATH
    cwd: str = "/"
    target: str = "local"
    secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    provider: str | None = None
    policy: GuardPolicy = DEFAULT_POLICY
    pins: PinTable = DEFAULT_PINS
    rng: random.Random | None = dataclasses.field(default=None, repr=False, compare=False)
    stdin: bytes | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        problems = [
            why
            for bad, why in (
                (self.timeout_s <= 0, "timeout_s must be positive"),
                (self.kill_grace_s < 0, "kill_grace_s must not be negative"),
                (not 1 <= self.max_attempts <= MAX_ATTEMPTS, f"max_attempts must be 1..{MAX_ATTEMPTS}"),
                (self.backoff_base_s < 0, "backoff_base_s must not be negative"),
                (self.backoff_cap_s < self.backoff_base_s, "backoff_cap_s must be at least backoff_base_s"),
                (not 0 <= self.jitter <= 1, "jitter must be between 0 and 1"),
                ("PATH" in self.env, "give PATH as RunSpec.path, not in env"),
                (not self.path, "path must name at least one directory"),
            )
            if bad
        ]
        if problems:
            raise PolicyInvalid("invalid RunSpec: " + "; ".join(problems) + ".")
        if self.provider is not None:
            profile_for("", self.provider)


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try at the step. ``backoff_s`` is the wait before it; ``rc`` the pipeline status
    (a negative number is the signal that ended the failing stage)."""

    n: int
    command: str
    rc: int
    failed_stage: int | None
    started: float
    ended: float
    duration_ms: float
    backoff_s: float
    verdict: str
    reason: str
    retryable: bool
    tls_fallback: bool
    timed_out: bool
    stderr_tail: str


class GuardWarning(msgspec.Struct, frozen=True, kw_only=True):
    """A warning-level record (the TLS fallback is one), to be logged as an event of its own."""

    level: Literal["warning"] = "warning"
    kind: str
    message: str
    attempt: int
    command: str
    ts: float


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """The step's record: the last attempt's (redacted, bounded) output and every attempt."""

    ok: bool
    rc: int
    command: str
    target: str
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    timed_out: bool
    reason: str
    attempts: tuple[Attempt, ...]
    tls_fallback_used: bool
    warnings: tuple[GuardWarning, ...]
    redactions: tuple[str, ...]


async def run(
    command: str | Pipeline,
    spec: RunSpec,
    *,
    redactor: Redactor | None = None,
    rate_limiter: RateLimiter | None = None,
) -> RunResult:
    """Run ``command`` under every guard rail and return its record.

    A :class:`Pipeline` is checked again before anything runs. Raises :class:`CommandRefused`
    (nothing ran) or :class:`SpawnFailed`, both redacted. ``redactor`` (share one across the
    steps of a change) receives ``spec.secrets``.
    """
    redactor = redactor if redactor is not None else Redactor()
    for secret in spec.secrets:
        redactor.register(secret)
    seen: set[str] = set()

    def redact(text: str) -> str:
        return redactor.redact(text, seen)

    failure: CommandRefused | None = None
    try:
        pipeline = check(
            command.display if isinstance(command, Pipeline) else command, spec.policy, spec.pins
        )
        verified = {program: await spec.pins.verified(program, path=spec.path) for program in pipeline.programs}
    except CommandRefused as exc:
        metrics.GUARD_REFUSALS.labels(exc.rule).inc()
        failure = exc.redacted(redact)
    if failure is not None:
        raise failure
    stages = [(verified[argv[0]][0], *argv[1:]) for argv in pipeline.stages]
    served = worker.serving(pipeline, spec.pins, *verified[pipeline.programs[0]], spec.stdin)
    step = _Step(spec, pipeline, stages, profile_for(pipeline.programs[0], spec.provider), redact, served)
    return await step.attempts(rate_limiter, seen)


class _Step:
    """The attempt loop of one step."""

    def __init__(
        self,
        spec: RunSpec,
        pipeline: Pipeline,
        stages: list[tuple[str, ...]],
        profile: CliProfile,
        redact: Callable[[str], str],
        served: worker.Served | None = None,
    ) -> None:
        self.spec = spec
        self.served = served  # its attempts go to a worker (services.guard.worker), unless it refuses
        self.stages = stages
        self.display = list(pipeline.stages)
        self.profile = profile
        self.redact = redact
        first_env = dict(spec.env) | {"PATH": spec.path}
        filter_env = {key: spec.env[key] for key in _FILTER_ENV if key in spec.env} | {"PATH": spec.path}
        self.envs = [first_env, *([filter_env] * (len(stages) - 1))]
        self.rng = spec.rng or _JITTER

    async def attempts(self, rate_limiter: RateLimiter | None, seen: set[str]) -> RunResult:
        spec = self.spec
        records: list[Attempt] = []
        warnings: list[GuardWarning] = []
        fallback = False
        backoff = 0.0
        while True:
            if rate_limiter is not None:
                await rate_limiter.acquire(spec.target)
            started, clock = time.time(), time.monotonic()
            outcome = await self._once()
            duration_ms = (time.monotonic() - clock) * 1000
            stderr, stderr_cut = self._text(outcome.stderr)
            verdict = self.profile.classify(
                outcome.rc, outcome.stderr.data.decode("utf-8", "replace"), timed_out=outcome.timed_out
            )
            records.append(
                self._record(records, outcome, verdict, started, duration_ms, backoff, fallback, stderr)
            )
            budget = spec.max_attempts + int(fallback)
            if verdict.kind == "tls" and self._may_fall_back(fallback):
                fallback, backoff = True, 0.0
                warnings.append(self._fall_back(len(records) + 1))
            elif verdict.kind == "retryable" and len(records) < budget:
                retry = len(records) - int(fallback)
                backoff = self._backoff(retry)
                await anyio.sleep(backoff)
            else:
                break
        stdout, stdout_cut = self._text(outcome.stdout)
        return RunResult(
            ok=verdict.kind == "ok",
            rc=outcome.rc,
            command=self._display(),
            target=spec.target,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=stdout_cut,
            stderr_truncated=stderr_cut,
            stdout_bytes=outcome.stdout.total,
            stderr_bytes=outcome.stderr.total,
            timed_out=outcome.timed_out,
            reason=self._final_reason(verdict, fallback),
            attempts=tuple(records),
            tls_fallback_used=fallback,
            warnings=tuple(warnings),
            redactions=tuple(sorted(seen)),
        )

    async def _once(self) -> Outcome:
        spec = self.spec
        metrics.GUARD_RUNS.labels(self.display[0][0]).inc()
        failure: SpawnFailed | None = None
        keep_bytes = spec.policy.max_output_bytes + REDACTION_MARGIN
        try:
            if self.served is not None:
                answered = await worker.POOL.run(
                    self.served,
                    self.stages[0],
                    env=self.envs[0],
                    cwd=spec.cwd,
                    stdin=spec.stdin,
                    timeout_s=spec.timeout_s,
                    grace_s=spec.kill_grace_s,
                    keep_bytes=keep_bytes,
                )
                if answered is not None:
                    return answered
            return await run_pipeline(
                self.stages,
                envs=self.envs,
                cwd=spec.cwd,
                timeout_s=spec.timeout_s,
                grace_s=spec.kill_grace_s,
                keep_bytes=keep_bytes,
                stdin=spec.stdin,
            )
        except SpawnFailed as exc:
            failure = exc.redacted(self.redact)
        raise failure

    def _record(
        self,
        records: Sequence[Attempt],
        outcome: Outcome,
        verdict: Verdict,
        started: float,
        duration_ms: float,
        backoff: float,
        fallback: bool,
        stderr: str,
    ) -> Attempt:
        tail = stderr.encode()[-self.spec.policy.stderr_tail_bytes :].decode("utf-8", "ignore")
        return Attempt(
            n=len(records) + 1,
            command=self._display(),
            rc=outcome.rc,
            failed_stage=outcome.failed_stage,
            started=started,
            ended=started + duration_ms / 1000,
            duration_ms=round(duration_ms, 3),
            backoff_s=round(backoff, 6),
            verdict=verdict.kind,
            reason=verdict.reason,
            retryable=verdict.kind == "retryable",
            tls_fallback=fallback,
            timed_out=outcome.timed_out,
            stderr_tail=tail if self.spec.policy.stderr_tail_bytes else "",
        )

    def _may_fall_back(self, used: bool) -> bool:
        return not used and self.spec.policy.allow_tls_fallback and self.profile.has_tls_fallback

    def _fall_back(self, attempt: int) -> GuardWarning:
        """Switch the first stage to skip certificate verification; the warning that says so."""
        first, env = self.profile.with_tls_fallback(self.stages[0], self.envs[0])
        shown, _ = self.profile.with_tls_fallback(self.display[0], {})
        self.stages[0], self.envs[0], self.display[0] = first, env, shown
        how = " ".join(self.profile.tls_args) or " ".join(f"{k}={v}" for k, v in self.profile.tls_env.items())
        return GuardWarning(
            kind="tls-fallback",
            message=(
                f"TLS certificate verification failed; retrying once without verification ({how}) "
                "because the policy allows it. Fix the endpoint's certificate or the CA bundle, "
                "then turn allow_tls_fallback off."
            ),
            attempt=attempt,
            command=self._display(),
            ts=time.time(),
        )

    def _backoff(self, retry: int) -> float:
        spec = self.spec
        policy = RetryPolicy(initial_s=spec.backoff_base_s, backoff=2.0, maximum_s=spec.backoff_cap_s, jitter=spec.jitter)
        return policy.delay(retry, self.rng.random())

    def _final_reason(self, verdict: Verdict, fallback: bool) -> str:
        if verdict.kind != "tls":
            return verdict.reason
        if fallback:
            return f"{verdict.reason}, also without verification"
        if not self.spec.policy.allow_tls_fallback:
            return f"{verdict.reason}; the policy forbids the insecure retry"
        return f"{verdict.reason}; {self.profile.name} has no way to skip verification"

    def _display(self) -> str:
        """The command as run, redacted word by word and then as a whole."""
        return self.redact(
            " | ".join(shlex.join(self.redact(word) for word in argv) for argv in self.display)
        )

    def _text(self, capture: Capture) -> tuple[str, bool]:
        """Decode, redact, then cut at the bound; True when something was cut."""
        bound = self.spec.policy.max_output_bytes
        redacted = self.redact(capture.data.decode("utf-8", "replace")).encode()
        cut = not capture.complete or len(redacted) > bound
        return redacted[:bound].decode("utf-8", "ignore"), cut
