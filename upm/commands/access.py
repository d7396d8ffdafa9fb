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

from services.security import access
from upm import app, natsauth
from upm.commands.core import guarded
from upm.output import add_output_options, emit, render_table


def cmd_check(args: argparse.Namespace) -> int:
    acl = access.load(args.file)
    rows = [{"tenant": tenant, "identity": who, "roles": ", ".join(sorted(roles))}
            for tenant, people in sorted(acl.members.items()) for who, roles in sorted(people.items())]
    rows += [{"tenant": "(every tenant)", "identity": who, "roles": "admin"} for who in sorted(acl.admins)]
    summary = f"{args.file}: org {acl.org}, {len(acl.members)} tenant(s), {len(acl.principals())} people — valid"
    emit(rows, args, text=f"{render_table(rows)}\n\n{summary}")
    return 0


def cmd_nats_config(args: argparse.Namespace) -> int:
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


def register(sub: Any) -> None:
    p = sub.add_parser("access", help="check an access file; render the NATS permissions it stands for")
    access_sub = p.add_subparsers(dest="access_command", metavar="COMMAND", required=True)
    c = access_sub.add_parser("check", help="validate an access file and list who holds which role")
    c.add_argument("file", help="the access file (YAML or JSON)")
    add_output_options(c)
    c.set_defaults(func=guarded(cmd_check))
    n = access_sub.add_parser("nats-config", help="the nats-server users and permissions for your own server")
    n.add_argument("file", help="the access file (YAML or JSON)")
    n.add_argument("-o", "--output", metavar="FILE", help="write it here (mode 0600) instead of printing it")
    n.set_defaults(func=guarded(cmd_nats_config))
