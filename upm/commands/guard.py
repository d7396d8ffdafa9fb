"""``upm guard "COMMAND"``: would the guard allow this command, and why (exit 0 yes, 2 no).

It only checks (parse, metacharacters, pipe allow-list, filter options, programs present in the
pin table); it never runs anything. There is no user-facing exec.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from typing import Any

import click

from services.guard.errors import CommandRefused, PolicyInvalid
from services.guard.parse import check
from services.guard.pins import PinTable
from services.guard.policy import DEFAULT_POLICY, GuardPolicy
from services.guard.redact import Redactor
from upm import cliargs
from upm.cliargs import output_options
from upm.output import emit

ALLOWED = 0
REFUSED = 2


NOT_CHECKED = (
    "what the command does. The guard rails are the spec's syntax rules; they do not judge intent or effect "
    "(`rm -rf /` passes them). What a change may touch is decided by its plan, the tenant's scope roots and "
    "pre-flight's policies, before any step runs"
)


def guard_command(args: argparse.Namespace) -> int:
    """Run ``upm guard``: print the verdict, return 0 when allowed and 2 when refused."""
    redact = Redactor()
    shown = redact(args.command)
    try:
        policy = GuardPolicy(pipe_allow_list=tuple(args.allow)) if args.allow else DEFAULT_POLICY
        pipeline = check(args.command, policy, args.pins)
    except CommandRefused as exc:
        refused = exc.redacted(redact)
        verdict = _verdict(
            False, shown, refused.rule, str(refused), token=refused.token, position=refused.position
        )
        emit(verdict, args, text=f"refused [{refused.rule}]: {refused}")
        return REFUSED
    except PolicyInvalid as exc:
        emit(_verdict(False, shown, "policy", str(exc)), args, text=f"refused [policy]: {exc}")
        return REFUSED
    if args.tenant:
        refused_scope = scope_refusal(pipeline.stages[0], args.tenant)
        if refused_scope is not None:
            emit(_verdict(False, shown, "path-scope", refused_scope), args, text=f"refused [path-scope]: {refused_scope}")
            return REFUSED
    checked = [
        "no live shell metacharacters (; && || \\ $( ` < > >> newline)",
        *([f"pipes only into the allow-list with safe options: {', '.join(pipeline.programs[1:])}"]
          if len(pipeline.stages) > 1 else []),
        f"every program is pinned: {', '.join(dict.fromkeys(pipeline.programs))} (each version is checked "
        "against the binary's own report when the step runs)",
        *([f"tenant {args.tenant}'s scope: {scope_summary(pipeline.stages[0])}"] if args.tenant else []),
    ]
    reason = "; ".join(checked)
    stages = [[redact(word) for word in argv] for argv in pipeline.stages]
    shown = redact(" | ".join(shlex.join(argv) for argv in stages))
    verdict = _verdict(True, shown, None, reason, stages=stages) | {"checked": checked, "not_checked": NOT_CHECKED}
    lines = "\n".join(f"  ✓ {c}" for c in checked)
    emit(verdict, args, text=f"passes the guard rails: {verdict['command']}\n{lines}\n  not checked: {NOT_CHECKED}")
    return ALLOWED


LOCAL_WRITERS = frozenset({"rm", "rmdir", "mkdir", "chmod", "chown", "ln", "dd", "install", "mv", "cp", "touch",
                           "truncate", "tee"})
"""Programs that write local files: the executor never runs them for a tenant (its writes go
through upm-localfs, held to the tenant's roots)."""


def scope_refusal(argv: Sequence[str], tenant: str) -> str | None:
    """Why the executor would not run ``argv`` for ``tenant`` (its scope rules), or ``None``."""
    from services.security.scope import load_scope

    program = argv[0].rsplit("/", 1)[-1] if argv else ""
    if program in LOCAL_WRITERS:
        return (f"`{program}` writes local files without the scope rules; the executor writes local paths only "
                f"through upm-localfs, below tenant {tenant}'s roots (plan the change instead: `upm plan`)")
    if program == "upm-localfs" and len(argv) > 1:
        return load_scope().refusal(tenant, argv[-1])
    return None


def scope_summary(argv: Sequence[str]) -> str:
    program = argv[0].rsplit("/", 1)[-1] if argv else ""
    return f"{argv[-1]} is below its roots" if program == "upm-localfs" and len(argv) > 1 else "no local write"


def _verdict(
    allowed: bool,
    command: str,
    rule: str | None,
    reason: str,
    *,
    token: str | None = None,
    position: int | None = None,
    stages: list[list[str]] | None = None,
) -> dict[str, Any]:
    return {
        "allowed": allowed,
        "command": command,
        "rule": rule,
        "token": token,
        "position": position,
        "reason": reason,
        "stages": stages or [],
    }


# -- the click command (registered in upm/cli.py's COMMANDS) ---------------------------------------


def command(pins: PinTable | None = None) -> click.Command:
    """``upm guard``, checking programs against ``pins`` (default: the providers' pin table, read when it runs)."""

    @click.command("guard", help=(
        "Check COMMAND against the guard rails (no shell metacharacters, pipes only into the allow-list with "
        "safe options, pinned programs) without running it. Exit status 0: allowed; 2: refused, with the rule "
        "that refused it."))
    @click.argument("command", metavar="COMMAND")
    @click.option("--allow", metavar="PROG", multiple=True,
                  help="replace the pipe allow-list with these programs (repeat the option)")
    @click.option("--tenant", metavar="TENANT",
                  help="also apply the executor's scope rules for this tenant: a local write must run through "
                       "upm-localfs, on a path below the tenant's roots (UPM_SCOPE_CONFIG)")
    @output_options
    def guard(**params: Any) -> int:
        from services.guard.steps import pin_table

        return cliargs.run(guard_command, {**params, "pins": pin_table() if pins is None else pins})

    return guard


guard = command()
