"""Flag types and shared options of the ``upm`` command line (click).

Each type refuses a bad value with a message click prints (``Error: Invalid value for '--flag': ...``,
exit 2), so no bad number, date or name reaches the code that would choke on it. The checks are
plain functions raising :class:`ValueError` (usable without click); :class:`Checked` makes a click
type of one.

This module stays light (click and :mod:`events.subjects` only): ``upm --help`` and ``upm submit
--help`` import it, and nothing of the services.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

from events.subjects import ANY_TENANT, CHANGE_ID_RE, is_producer_tenant

NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
F = TypeVar("F", bound=Callable[..., Any])


def seconds(text: str) -> float:
    """A number of seconds above 0 (``--timeout``): not negative, not ``nan`` or ``inf``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a number of seconds above 0 (e.g. 30 or 2.5)")
    return value


def count(text: str) -> int:
    """A whole number of 0 or more (``--count``; 0 means no limit)."""
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise ValueError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def positive(text: str) -> int:
    """A whole number of 1 or more (``--max-rows``)."""
    value = count(text)
    if value < 1:
        raise ValueError(f"{text!r} is not a whole number of 1 or more")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    value = count(text)
    if value > 65535:
        raise ValueError(f"{text!r} is not a port: give 0 (any free port) to 65535")
    return value


def iso_time(text: str) -> str:
    """An ISO 8601 date or time (``--since``, ``--until``, ``--at``), kept as given."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or time: write e.g. 2025-10-01 or 2025-10-01T12:00:00+00:00"
        ) from None
    return text


def tenant(text: str) -> str:
    """A tenant name: 1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit."""
    if not is_producer_tenant(text):
        raise ValueError(
            f"{text[:80]!r} is not a tenant: use 1-63 characters of a-z, 0-9 and '-', starting and ending with "
            "a letter or digit"
        )
    return text


def tenant_or_any(text: str) -> str:
    """A tenant name, or ``_any`` (look the change up) / ``*`` (every tenant) where a command allows it."""
    return text if text in (ANY_TENANT, "*") else tenant(text)


def change_id(text: str) -> str:
    """A change id: the UUID `upm submit` printed."""
    if not CHANGE_ID_RE.match(text):
        raise ValueError(f"{text[:80]!r} is not a change id: give the UUID `upm submit` printed")
    return text


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list of people (``--approvers alice,bob``): each 1-64 of letters, digits, ``.``, ``_``,
    ``@`` and ``-``."""
    found = tuple(n.strip() for n in text.split(","))
    bad = [n for n in found if not NAME_RE.fullmatch(n)]
    if bad or not found:
        raise ValueError(f"{bad[0][:80] if bad else text!r} is not a name: give names of letters, "
                         "digits, '.', '_', '@' and '-', comma-separated (e.g. alice,bob)")
    return tuple(dict.fromkeys(found))


class Checked(click.ParamType[Any]):
    """A click type of a check above: its value, or the check's message as click's usage error."""

    def __init__(self, check: Callable[[str], Any], metavar: str) -> None:
        self.check, self.name, self.metavar = check, check.__name__, metavar

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return self.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):  # a default, already converted
            return value
        try:
            return self.check(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


SECONDS = Checked(seconds, "S")
COUNT = Checked(count, "N")
POSITIVE = Checked(positive, "N")
PORT = Checked(port, "PORT")
ISO_TIME = Checked(iso_time, "ISO")
TENANT = Checked(tenant, "TENANT")
TENANT_OR_ANY = Checked(tenant_or_any, "TENANT")
CHANGE_ID = Checked(change_id, "CHANGE_ID")
NAMES = Checked(names, "NAME[,NAME]")


class LazyChoice(click.ParamType[Any]):
    """A choice whose values live in a heavy module (``"module:attribute"``), imported only when a value
    is checked or completed, never for ``--help`` (which shows ``metavar``)."""

    name = "choice"

    def __init__(self, where: str, metavar: str) -> None:
        self.where, self.metavar = where, metavar

    def choices(self) -> Sequence[str]:
        module, _, attribute = self.where.partition(":")
        found: Sequence[str] = getattr(importlib.import_module(module), attribute)
        return found

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return self.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices():
            return value
        self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices()))}", param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [CompletionItem(c) for c in self.choices() if c.startswith(incomplete)]


def var_options(f: F) -> F:
    """``--var NAME=VALUE`` and ``--var-file FILE``: Terraform variables for ``.tf`` input (repeatable)."""
    f = click.option("--var-file", multiple=True, metavar="FILE",
                     help="a .tfvars or .tfvars.json file for .tf input (repeatable; --var wins)")(f)
    return click.option("--var", multiple=True, metavar="NAME=VALUE",
                        help="a Terraform variable for .tf input (repeatable)")(f)


def output_options(f: F) -> F:
    """The mutually exclusive ``--json`` and ``--csv`` flags of a row-printing command (see :mod:`upm.output`)."""
    f = click.option("--csv", is_flag=True, help="print CSV rows")(f)
    return click.option("--json", is_flag=True, help="print JSON (machine-readable)")(f)


def connection_options(f: F) -> F:
    """``--nats URL`` and ``--data DIR``: which UPM to talk to."""
    f = click.option("--data", metavar="DIR", help="data folder of `upm up` (default: UPM_DATA or ./.upm)")(f)
    return click.option("--nats", metavar="URL", help="NATS server URL (default: NATS_URL, then `upm up`'s)")(f)


def identity_option(f: F) -> F:
    """``--as NAME``: who the call acts as."""
    return click.option("--as", "as_user", metavar="NAME",
                        help="who you act as (default: UPM_IDENTITY, then your login name); with TLS, the client "
                             "certificate client-NAME is used, and with an access file the server accepts no "
                             "other name from it")(f)


def run(handler: Callable[[argparse.Namespace], int], params: dict[str, Any]) -> int:
    """Run a command's ``handler`` on its parsed ``params`` (as an ``argparse.Namespace``: the handlers read
    ``args.flag``). ``--json`` and ``--csv`` together are refused here (click has no exclusive groups);
    under ``--json`` errors are JSON too (:data:`upm.output.JSON_ERRORS`, reset by :func:`upm.cli.main`)."""
    import logging

    from upm import output

    # asyncio warns on every TLS connection closed by the peer ("returning true from eof_received()
    # has no effect when using ssl"): noise, not news, for a CLI.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    # nats-py logs every failed connect attempt itself; the CLI says what failed, once, in its own words.
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
    if params.get("json") and params.get("csv"):
        raise click.UsageError("--json and --csv are exclusive: give one of them")
    output.JSON_ERRORS.set(bool(params.get("json")))
    return handler(argparse.Namespace(**params))


class DefaultGroup(click.Group):
    """A group that runs its ``default`` subcommand when the first word names none of the others (and when
    there is no word at all): ``upm plan "words"`` is ``upm plan compile "words"``, ``upm evidence ID`` is
    ``upm evidence get ID``. The group's own options are ``--help`` only; every other flag is the
    subcommand's."""

    def __init__(self, *args: Any, default: str, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", False)
        super().__init__(*args, **kwargs)
        self.default = default
        self.context_settings["ignore_unknown_options"] = True  # `upm plan --file X`: --file is compile's

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        completing = ctx.resilient_parsing  # `upm plan <TAB>`: offer the subcommands, not the default's words
        return super().parse_args(ctx, args or ([] if completing else [self.default]))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The group's help also lists the default subcommand's flags (`upm plan --help` shows compile's)."""
        super().format_options(ctx, formatter)
        default = self.commands[self.default]
        rows = [row for param in default.get_params(ctx)
                if isinstance(param, click.Option) and (row := param.get_help_record(ctx)) is not None]
        with formatter.section(f"Options of {self.default} (the default)"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return self.default, self.commands[self.default], args
