"""``upm access check FILE`` and ``upm access nats-config FILE``: validate an access file and show
who holds which role, and render the nats-server users and permissions it stands for — for your
own NATS server (``upm up --access`` does both for the embedded one).

The rendered block maps each client certificate to its user by subject (``CN=<identity>,O=UPM``):
issue your people's and services' certificates with that subject from your CA, and give the
server's ``tls`` block ``verify_and_map: true``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import click

from upm import cliargs
from upm.cliargs import output_options
from upm.commands.core import guarded
from upm.output import emit, render_table


def cmd_check(args: argparse.Namespace) -> int:
    from services.security import access

    acl = access.load(args.file)
    rows = [{"tenant": tenant, "identity": who, "roles": ", ".join(sorted(roles))}
            for tenant, people in sorted(acl.members.items()) for who, roles in sorted(people.items())]
    rows += [{"tenant": "(every tenant)", "identity": who, "roles": "admin"} for who in sorted(acl.admins)]
    summary = f"{args.file}: org {acl.org}, {len(acl.members)} tenant(s), {len(acl.principals())} people — valid"
    emit(rows, args, text=f"{render_table(rows)}\n\n{summary}")
    return 0


def cmd_nats_config(args: argparse.Namespace) -> int:
    from services.security import access
    from upm import app, natsauth

    acl = access.load(args.file)
    users = natsauth.users(acl, app.SERVICE_NAMES)
    text = (
        f"# NATS users and permissions for {args.file} (upm access nats-config); include it in your\n"
        "# server's configuration beside a tls block with verify_and_map: true. Each user is a client\n"
        "# certificate's subject: issue certificates with subject CN=<identity>,O=UPM.\n"
        + natsauth.authorization_block(users)
    )
    if args.output is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    sys.stdout.write(f"wrote {len(users)} users to {out}\n")
    return 0


# -- the click commands (registered in upm/cli.py's COMMANDS) --------------------------------------


@click.group(help="Check an access file; render the NATS permissions it stands for.")
def access_group() -> None:
    """``upm access``: its subcommands."""


@access_group.command("check", help="Validate an access file and list who holds which role.")
@click.argument("file")
@output_options
def check(**params: Any) -> int:
    return cliargs.run(guarded(cmd_check), params)


@access_group.command("nats-config", help="The nats-server users and permissions for your own server.")
@click.argument("file")
@click.option("-o", "--output", metavar="FILE", help="write it here (mode 0600) instead of printing it")
def nats_config(**params: Any) -> int:
    return cliargs.run(guarded(cmd_nats_config), params)
