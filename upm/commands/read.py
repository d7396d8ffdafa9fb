"""The `upm` subcommands of the projections layer: sql, kpi, score, evidence, audit, serve — their
flags and help. What they do is :mod:`upm.commands.reading`, imported when one runs."""

from __future__ import annotations

from typing import Any

import click

from events.subjects import ANY_TENANT
from projections.limits import DEFAULT_ROWS, DEFAULT_TIMEOUT_S
from upm import cliargs
from upm.cliargs import F, connection_options, identity_option, output_options


def _run(handler: str, params: dict[str, Any]) -> int:
    from upm.commands import reading

    return cliargs.run(reading.guarded(getattr(reading, handler)), params)


def public_key(text: str) -> str:
    """``--public-key HEX``: an ed25519 public key as 64 hex digits."""
    from events import signing

    if not signing.is_public_key(text.strip()):
        raise ValueError(f"{text[:80]!r} is not an ed25519 public key: give its 64 hex digits "
                                         "(the content of keys/ed25519.pub in the data folder of the UPM that signed)")
    return text.strip().lower()


def head_pin(text: str) -> tuple[int, str]:
    """``--expect-head SIZE:ROOT`` (what `upm audit verify` prints as the newest verified head)."""
    size, _, root = text.partition(":")
    if not size.isdigit() or int(size) < 1 or len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
        raise ValueError(f"{text!r} is not a head: give SIZE:ROOT, e.g. 1200:<64 hex digits>, as "
                                         "`upm audit verify` printed it")
    return int(size), root



PUBLIC_KEY = cliargs.Checked(public_key, "HEX")
HEAD_PIN = cliargs.Checked(head_pin, "SIZE:ROOT")


def _scope_options(f: F) -> F:
    """Whose rows, how long, where from (bus or file), as whom."""
    for option in reversed((
        click.option("--tenant", type=cliargs.TENANT, default="default",
                     help="tenant whose rows to read (default: default)"),
        click.option("--all-tenants", is_flag=True, help="every tenant at once (admins only)"),
        click.option("--timeout", type=cliargs.SECONDS, default=DEFAULT_TIMEOUT_S, help="query time limit in seconds"),
        click.option("--offline", is_flag=True, help="read the projection file read-only, not the bus"),
        click.option("--db", metavar="DIR", help="projection folder (default: <data>/projections)"),
        identity_option,
        connection_options,
    )):
        f = option(f)
    return f


def _period_options(f: F) -> F:
    f = click.option("--until", type=cliargs.ISO_TIME, help="only facts before this UTC time")(f)
    return click.option("--since", type=cliargs.ISO_TIME, help="only facts at or after this UTC time")(f)


def _trust_options(f: F) -> F:
    f = click.option("--trust", multiple=True, metavar="FILE",
                     help="trust only the keys in this file, one hex key a line (repeatable)")(f)
    return click.option("--public-key", multiple=True, type=PUBLIC_KEY,
                        help="trust only this ed25519 key (repeatable; default: the data folder's keys/*.pub and "
                             "trust/*.pub)")(f)


@click.command(help="Read-only SQL over your tenant's projections (DuckDB): QUERY is one SELECT statement.")
@click.argument("query")
@_scope_options
@click.option("--max-rows", type=cliargs.POSITIVE, default=DEFAULT_ROWS, help="row limit (default 1000)")
@output_options
def sql(**params: Any) -> int:
    return _run("cmd_sql", params)


@click.command(help="The ten UPM KPIs beside the spec's L3/L4 bands.")
@_scope_options
@_period_options
@output_options
def kpi_command(**params: Any) -> int:
    return _run("cmd_kpi", params)


@click.command(help="This stack's UPM level per phase, the evidence gates, the KPIs.")
@_scope_options
@_period_options
@output_options
def score(**params: Any) -> int:
    return _run("cmd_score", params)


@click.group(cls=cliargs.DefaultGroup, default="get", subcommand_metavar="[get] CHANGE_ID | verify FILE",
             help="Evidence packs: `upm evidence get ID` (or `upm evidence ID`) downloads a change's pack and "
                  "verifies it; `upm evidence verify FILE` verifies a pack offline.")
def evidence_group() -> None:
    """``upm evidence``: get (the default) or verify."""


@evidence_group.command("get", short_help="download a change's pack and verify it (the default)", help="Download CHANGE_ID's evidence pack (to FILE, -o FILE, or "
                                    "CHANGE_ID.evidence.tar) and verify it.")
@click.argument("change_id", type=cliargs.CHANGE_ID)
@click.argument("file", required=False)
@click.option("-o", "--output", metavar="FILE", help="where to write the pack (default: CHANGE_ID.evidence.tar)")
@click.option("--tenant", type=cliargs.TENANT_OR_ANY, default=ANY_TENANT,
              help="tenant of the change (default: look it up)")
@_trust_options
@identity_option
@connection_options
@output_options
def evidence_get(**params: Any) -> int:
    return _run("cmd_evidence_get", params)


@evidence_group.command("verify", short_help="verify a pack offline", help="Verify the evidence pack FILE offline: hashes, signature, chain, inclusion "
                                       "proof, and whether the signing key is one you trust.")
@click.argument("file")
@_trust_options
@click.option("--data", metavar="DIR", help="data folder whose keys/*.pub and trust/*.pub are trusted when no "
                                            "--public-key or --trust is given (default: UPM_DATA or ./.upm)")
@output_options
def evidence_verify(**params: Any) -> int:
    return _run("cmd_evidence_verify", params)


@click.group(help="Tamper evidence of the whole log.")
def audit_group() -> None:
    """``upm audit``: its subcommands."""


@audit_group.command("verify", short_help="re-verify every hash chain and signed log head", help="Re-verify every hash chain and every signed log head from the stream, against "
                                    "the heads kept in the data folder and any pinned ones.")
@click.option("--public-key", multiple=True, type=PUBLIC_KEY, help="trust this ed25519 key (repeatable)")
@click.option("--require-signatures", is_flag=True, help="fail on a head signed by an unknown key")
@click.option("--expect-head", multiple=True, type=HEAD_PIN,
              help="a head you pinned (as printed by an earlier verify): the log must still have it (repeatable)")
@click.option("--offline", is_flag=True, help="name lost events from the projection file, not the bus")
@click.option("--db", metavar="DIR", help="projection folder naming lost events (default: <data>/projections)")
@identity_option
@connection_options
@output_options
def audit_verify(**params: Any) -> int:
    return _run("cmd_audit_verify", params)


@click.group(cls=cliargs.DefaultGroup, default="run", subcommand_metavar="[run] | token add NAME",
             help="The web console (changes, approvals, evidence, KPIs; JSON permalinks /changes/{id}[/evidence], "
                  "/kpi, /score): `upm serve` runs it; `upm serve token add NAME` makes a sign-in token.")
def serve_group() -> None:
    """``upm serve``: run (the default) or token add."""


_TOKENS = click.option("--tokens", metavar="FILE", help="JSON object token → identity (with an access file) or → "
                                                        "tenant (open mode); default: <data>/serve_tokens.json")


@serve_group.command("run", short_help="run the console (the default)", help="Run the web console and print its URL.")
@click.option("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; an open console serves "
                                                  "loopback only)")
@click.option("--port", type=cliargs.PORT, default=8080, help="port (default 8080; 0 picks a free one)")
@_TOKENS
@click.option("--tls", is_flag=True, help="HTTPS with the deployment's certificates; a person's client certificate "
                                          "(client-NAME.pem from `upm up --access`) signs them in")
@connection_options
def serve_run(**params: Any) -> int:
    return _run("cmd_serve", params)


@serve_group.group("token", help="Sign-in tokens of the console.")
def serve_token_group() -> None:
    """``upm serve token``: its subcommands."""


@serve_token_group.command("add", help="Make a sign-in token for NAME, store it (mode 0600) and print it once.")
@click.argument("name")
@_TOKENS
@click.option("--data", metavar="DIR", help="data folder of `upm up` (default: UPM_DATA or ./.upm)")
def serve_token_add(**params: Any) -> int:
    return _run("cmd_serve_token", params)
