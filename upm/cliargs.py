"""argparse types for the ``upm`` flags: each refuses a bad value with a message argparse prints
(``upm <command>: error: argument --flag: ...``, exit 2), so no bad number, date or name reaches
the code that would choke on it."""

from __future__ import annotations

import argparse
import math
import re
from datetime import datetime

from events.subjects import ANY_TENANT, CHANGE_ID_RE, is_producer_tenant

NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")


def seconds(text: str) -> float:
    """A number of seconds above 0 (``--timeout``): not negative, not ``nan`` or ``inf``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0 (e.g. 30 or 2.5)")
    return value


def count(text: str) -> int:
    """A whole number of 0 or more (``--count``; 0 means no limit)."""
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def positive(text: str) -> int:
    """A whole number of 1 or more (``--max-rows``)."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    value = count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 0 (any free port) to 65535")
    return value


def iso_time(text: str) -> str:
    """An ISO 8601 date or time (``--since``, ``--until``, ``--at``), kept as given."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time: write e.g. 2025-10-01 or 2025-10-01T12:00:00+00:00"
        ) from None
    return text


def tenant(text: str) -> str:
    """A tenant name: 1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit."""
    if not is_producer_tenant(text):
        raise argparse.ArgumentTypeError(
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
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a change id: give the UUID `upm submit` printed")
    return text


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list of people (``--approvers alice,bob``): each 1-64 of letters, digits, ``.``, ``_``,
    ``@`` and ``-``."""
    found = tuple(n.strip() for n in text.split(","))
    bad = [n for n in found if not NAME_RE.fullmatch(n)]
    if bad or not found:
        raise argparse.ArgumentTypeError(f"{bad[0][:80] if bad else text!r} is not a name: give names of letters, "
                                         "digits, '.', '_', '@' and '-', comma-separated (e.g. alice,bob)")
    return tuple(dict.fromkeys(found))


def add_var_options(parser: argparse.ArgumentParser) -> None:
    """``--var NAME=VALUE`` and ``--var-file FILE``: Terraform variables for ``.tf`` input (repeatable)."""
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a Terraform variable for .tf input (repeatable)")
    parser.add_argument("--var-file", action="append", default=[], metavar="FILE",
                        help="a .tfvars or .tfvars.json file for .tf input (repeatable; --var wins)")
