"""Reachability: each remote target a plan acts on answers a cheap read-only call with the
credentials UPM would use, before anything is mutated.

Without it, an S3 bucket planned with no AWS target configured passes pre-flight and fails at
execution on awscli's "run aws configure". One probe per (provider, target): AWS
``sts get-caller-identity`` (against the configured endpoint), PostgreSQL ``select 1``; a failure
names what to run (``upm up --with aws``, ``--aws-endpoint URL``, ...). A success is cached for
``CACHE_SECONDS`` per target, endpoint and credentials, so a busy tenant does not pay a process per change.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from events.model import Check, StepOutput
from events.plan import Command, Plan
from providers.base import display
from services.guard.steps import step_env

CACHE_SECONDS = 60.0
PROBE_TIMEOUT_S = 20.0
Runner = Callable[[Command, str, float], Awaitable[StepOutput]]


@dataclass(frozen=True)
class Probe:
    """The read-only call that shows a provider's target answers, and what to do when it does not."""

    argv: Callable[[str], tuple[str, ...]]
    endpoint_vars: tuple[str, ...]  # the step environment naming the target and its credentials (the cache key)
    fix: str


def _aws(target: str) -> tuple[str, ...]:
    region = target if target and target != "global" else "us-east-1"
    return ("aws", "sts", "get-caller-identity", "--region", region, "--output", "json")


PROBES: Mapping[str, Probe] = {
    "aws": Probe(argv=_aws, endpoint_vars=("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_SHARED_CREDENTIALS_FILE"),
                 fix="start UPM with a target: `upm up --with aws` (a local moto server), or `upm up --aws-endpoint "
                     "URL` with your AWS_* credentials set"),
    "postgres": Probe(argv=lambda _target: ("psql", "-X", "-A", "-t", "-d", "postgres", "-c", "select 1"),
                      endpoint_vars=("PGHOST", "PGPORT", "PGUSER", "PGPASSFILE"),
                      fix="start UPM with a target: `upm up --with postgres` (an embedded PostgreSQL), or "
                          "`upm up --postgres-dsn postgresql://USER@HOST/DB`"),
}

_passed: dict[tuple[str, str, tuple[str, ...]], float] = {}  # probe key → when its success expires


def targets(plan: Plan) -> list[tuple[str, str]]:
    """The (provider, target) pairs of ``plan`` that have a probe, in plan order (pure)."""
    return list(dict.fromkeys((s.resource.provider, s.target) for s in plan.steps if s.resource.provider in PROBES))


def _key(provider: str, target: str, env: Mapping[str, str]) -> tuple[str, str, tuple[str, ...]]:
    return provider, target, tuple(env.get(v, "") for v in PROBES[provider].endpoint_vars)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")[:300]


async def reach(provider: str, target: str, run: Runner, *, cache: bool, now: Callable[[], float] = time.monotonic
                ) -> Check:
    """Whether ``target`` of ``provider`` answers its probe (a cached success when ``cache``)."""
    key = _key(provider, target, step_env())
    if cache and _passed.get(key, 0.0) > now():
        return Check(name="reachable", target=f"{provider}:{target}", ok=True, detail="answered (cached)")
    probe = PROBES[provider]
    argv = probe.argv(target)
    out = await run(Command(argv=argv, display=display(argv)), target, PROBE_TIMEOUT_S)
    if out.rc == 0:
        if cache:
            _passed[key] = now() + CACHE_SECONDS
        return Check(name="reachable", target=f"{provider}:{target}", ok=True, detail="answered")
    return Check(name="reachable", target=f"{provider}:{target}", ok=False,
                 detail=f"{provider} target {target} cannot be reached with UPM's credentials (`{display(argv)}` "
                        f"exited {out.rc}: {_first_line(out.stderr or out.stdout)}); nothing was changed: {probe.fix}")
