"""The ``upm`` command line: a thin layer over library functions.

Each feature module contributes its subcommands through a ``register(subparsers)`` function
that adds an ``argparse`` parser whose ``func(args) -> int`` runs the command. Every
row-printing command takes ``--json`` (see :mod:`services.output`).

Bad flags and files are refused where they are parsed (:mod:`services.cliargs`,
:mod:`services.configfile`), and each command turns UPM's own errors into a message. As a last
resort, :func:`main` turns anything else into one line and exit 2 (``UPM_DEBUG=1`` shows the
traceback): a command line never ends in a traceback.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

DEBUG_ENV = "UPM_DEBUG"
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Register]:
    from projections import cli as projections_cli
    from services import access_cli, commands
    from services.executor import cli as executor_cli
    from services.guard import cli as guard_cli
    from services.planner import cli as planner_cli
    from services.preflight import cli as preflight_cli
    from services.steps import pin_table
    from services.verifier import cli as verifier_cli
    from upm import conformance_cli

    return [
        commands.register,
        planner_cli.register,
        functools.partial(guard_cli.register, pins=pin_table()),
        verifier_cli.register,
        preflight_cli.register,
        executor_cli.register,
        projections_cli.register,
        access_cli.register,
        conformance_cli.register,
    ]


def _version() -> str:
    try:
        return metadata.version("upm")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The whole ``upm`` parser, every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="upm",
        description="UPM: plan, pre-flight, execute, verify and audit infrastructure changes.",
    )
    parser.add_argument("--version", action="version", version=f"upm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``upm`` console script."""
    # asyncio warns on every TLS connection closed by the peer ("returning true from eof_received()
    # has no effect when using ssl"): noise, not news, for a CLI.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    # nats-py logs every failed connect attempt itself; the CLI says what failed, once, in its own words.
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
    args = build_parser().parse_args(argv)
    from services import output

    json_errors = output.JSON_ERRORS.set(bool(getattr(args, "json", False)))
    try:
        code: int = args.func(args)
    except Exception as exc:  # the last resort (see the module docstring)
        if os.environ.get(DEBUG_ENV):
            raise
        if args.command == "service":  # a service's log is for its operators: keep where it failed
            logging.getLogger("upm").exception("service failed unexpectedly")
        return output.error(f"{args.command} failed unexpectedly: {type(exc).__name__}: {str(exc)[:500]} "
                            f"(run again with {DEBUG_ENV}=1 to see where)", 2)
    finally:
        output.JSON_ERRORS.reset(json_errors)
    return code


if __name__ == "__main__":
    sys.exit(main())
