"""The ``upm`` command line (click): the registry of commands, the lazy group that loads them, and
the entry point.

:data:`COMMANDS` is THE registry: command name → (``"module:attribute"`` of its click command, the
one-line help ``upm --help`` shows). A command's module is imported only when that command is
resolved (run, ``upm NAME --help``, completed), so ``upm --help`` imports click and this module
only, and ``upm submit --help`` adds :mod:`upm.commands.core` (light: it imports the services in its
handlers). Groups with subcommands (``plan``, ``evidence``, ``audit``, ``access``, ``policy``) are
click groups in their modules.

Every row-printing command takes ``--json`` (see :mod:`upm.output`). Bad flags and files are
refused where they are parsed (:mod:`upm.cliargs`, :mod:`services.common.configfile`): click's usage
error, exit 2. Each command turns UPM's own errors into a message. As a last resort, :func:`main`
turns anything else into one line and exit 2 (``UPM_DEBUG=1`` shows the traceback): a command line
never ends in a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

DEBUG_ENV = "UPM_DEBUG"
COMPLETE_VAR = "_UPM_COMPLETE"
"""The environment variable click's completion scripts set when they ask ``upm`` for completions."""

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("upm.commands.core:demo", "run the whole pipeline on embedded defaults and show it"),
    "up": ("upm.commands.core:up", "start embedded NATS and every service (in the background)"),
    "completion": ("upm.commands.core:completion", "print a shell completion script (bash or zsh)"),
    "down": ("upm.commands.core:down", "stop what `upm up` started"),
    "service": ("upm.commands.core:service", "run one or more services in the foreground"),
    "health": ("upm.commands.core:health", "is every service up, behind or failing; the stream, the newest "
               "signed head, stalled changes (exit 1 naming what is down)"),
    "submit": ("upm.commands.core:submit", "submit an intent (natural language or --file SPEC)"),
    "status": ("upm.commands.core:status", "where a change stands, with its events"),
    "watch": ("upm.commands.core:watch", "stream events live (a tenant's, or one change's)"),
    "plan": ("upm.commands.plan:plan", "compile a request or spec into a deterministic plan (offline); "
             "`plan diff A B` compares plans"),
    "guard": ("upm.commands.guard:guard", "say whether a command would be allowed to run, and why"),
    "verify": ("upm.commands.verify:verify_command", "re-run a change's verification now (read-backs vs the desired "
               "state the log holds now)"),
    "drift": ("upm.commands.verify:drift", "read every managed resource back now and show drift per resource"),
    "approve": ("upm.commands.approvals:approve", "approve a change's current plan"),
    "deny": ("upm.commands.approvals:deny", "deny a change (a denied change never executes)"),
    "approvals": ("upm.commands.approvals:approvals", "a change's approval trail (who, when, group, plan hash, "
                  "reason)"),
    "policy": ("upm.commands.approvals:policy", "policy packs: `policy test` evaluates them on a plan offline"),
    "resume": ("upm.commands.operate:resume", "continue a paused change from its first unfinished step"),
    "rollback": ("upm.commands.operate:rollback", "undo what a change ran (the inverse of its completed steps, in "
                 "reverse order)"),
    "cancel": ("upm.commands.operate:cancel", "stop a change: no further step starts (roll back what ran with "
               "`upm rollback`)"),
    "sql": ("upm.commands.read:sql", "read-only SQL over your tenant's projections (DuckDB)"),
    "kpi": ("upm.commands.read:kpi_command", "the ten UPM KPIs beside the spec's L3/L4 bands"),
    "score": ("upm.commands.read:score", "this stack's UPM level per phase, the evidence gates, the KPIs"),
    "evidence": ("upm.commands.read:evidence_group", "download a change's evidence pack (`evidence get ID`, or "
                 "`evidence ID`), or verify one (`evidence verify FILE`)"),
    "audit": ("upm.commands.read:audit_group", "tamper evidence of the whole log (`audit verify`)"),
    "serve": ("upm.commands.read:serve_group", "the web console (changes, approvals, evidence, KPIs) and JSON permalinks; token add"),
    "conformance": ("upm.commands.conformance:conformance_command", "play the conformance change set on embedded "
                    "defaults and score UPM clause by clause (report, evidence packs)"),
    "access": ("upm.commands.access:access_group", "check an access file; render the NATS permissions it stands for"),
}


class LazyGroup(click.Group):
    """A group whose commands are ``"module:attribute"`` references (click's documented lazy loading):
    listing them (``--help``, completing a command name) uses the one-line help kept beside the
    reference; the module is imported when the command itself is needed."""

    def __init__(self, *args: Any, lazy: Mapping[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy)  # in the registry's order

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return None
        module, _, attribute = self.lazy[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name][0]} is not a click command (COMMANDS in upm/cli.py)")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in self.lazy.items()])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        names = [CompletionItem(name, help=help_) for name, (_, help_) in self.lazy.items()
                 if name.startswith(incomplete)]
        return names + click.Command.shell_complete(self, ctx, incomplete)


def _version(ctx: click.Context, _: click.Parameter, asked: bool) -> None:
    """``--version``: the installed version (importlib.metadata is imported only when asked)."""
    if not asked or ctx.resilient_parsing:
        return
    from importlib import metadata

    try:
        version = metadata.version("upm")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "(not installed)"
    click.echo(f"upm {version}")
    ctx.exit()


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
             help="UPM: plan, pre-flight, execute, verify and audit infrastructure changes.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and exit.")
def upm() -> None:
    """The top of the command line; the work is in the subcommands."""


def run(command: click.Command, argv: Sequence[str], prog: str = "upm") -> int:
    """Parse ``argv`` for ``command`` and run it: the command's exit code. A usage error (a bad flag, a
    missing argument) is printed as click prints it and raises ``SystemExit(2)``; ``--help`` and
    ``--version`` raise ``SystemExit(0)`` (as the argparse CLI did). Anything unforeseen a command
    raises ends as one line and exit 2 (the module docstring)."""
    from upm import output

    json_errors = output.JSON_ERRORS.set(False)
    ctx: click.Context | None = None
    try:
        with command.make_context(prog, list(argv)) as ctx:
            code: int = command.invoke(ctx)
            return code
    except click.exceptions.Exit as done:
        raise SystemExit(done.exit_code) from None
    except click.ClickException as err:
        err.show()
        raise SystemExit(err.exit_code) from None
    except click.Abort:
        sys.stderr.write("\n")
        return 130
    except Exception as exc:  # the last resort (see the module docstring)
        if os.environ.get(DEBUG_ENV):
            raise
        name = (ctx.invoked_subcommand if ctx is not None else None) or prog
        if name == "service":  # a service's log is for its operators: keep where it failed
            import logging

            logging.getLogger("upm").exception("service failed unexpectedly")
        return output.error(f"{name} failed unexpectedly: {type(exc).__name__}: {str(exc)[:500]} "
                            f"(run again with {DEBUG_ENV}=1 to see where)", 2)
    finally:
        output.JSON_ERRORS.reset(json_errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``upm`` console script (log levels for a command line: :func:`upm.cliargs.run`)."""
    if COMPLETE_VAR in os.environ:  # a completion script asking (see `upm completion`)
        from click.shell_completion import shell_complete

        return shell_complete(upm, {}, "upm", COMPLETE_VAR, os.environ[COMPLETE_VAR])
    return run(upm, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
