"""The `upm` subcommands of the projections layer: sql, kpi, score, evidence, audit, serve.

Thin: each parses its flags, asks the projector over the bus as the caller's identity (``--as``,
else ``UPM_IDENTITY``, else the login name; or, with ``--offline`` or when no projector answers
for ``sql``/``kpi``/``score``, opens the tenant's file read-only and applies the same rules), and
prints with :mod:`services.output`. Exit codes: 0 success, 1 a verification failed, 2 refused
input or access, 3 UPM not reachable, 4 an evidence pack is intact but signed by a key that is
not trusted (UNTRUSTED: anyone can sign a pack with a key of their own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
from nats.aio.client import Client as NATS

from events import signing
from events.errors import StoreTimeout
from events.store import EventStore
from events.subjects import ANY_TENANT, CHANGE_ID_RE
from projections import audit, client, evidence, evidence_query, heads, kpi, reports, serve
from projections.db import ALL_TENANTS, ProjectionDB
from projections.errors import (
    AccessDenied,
    AuditFailed,
    EvidenceInvalid,
    EvidenceUntrusted,
    ProjectionError,
    ProjectionUnavailable,
    QueryRejected,
)
from projections.sqlservice import DEFAULT_ROWS, DEFAULT_TIMEOUT_S, MAX_ROWS
from projections.visibility import VisibleSql
from services import access, app, cliargs, natsauth
from services.commands import add_connection_options, add_identity_option, fail
from services.configfile import read_bytes, read_text
from services.errors import ConfigError, NotRunning
from services.output import add_output_options, emit, render_table, to_builtins

T = TypeVar("T")
PROJECTIONS_DIR = "projections"
UNTRUSTED = 4
MAX_PACK_BYTES = 512 * 1024 * 1024


def db_folder(args: argparse.Namespace) -> Path:
    """The projection folder: ``--db``, else ``<data folder>/projections``."""
    return Path(args.db) if getattr(args, "db", None) else app.data_dir(args.data) / PROJECTIONS_DIR


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """UPM's errors as a message and an exit code instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except EvidenceUntrusted as err:
            return fail(f"UNTRUSTED: {err}", UNTRUSTED)
        except (EvidenceInvalid, AuditFailed) as err:
            return fail(f"verification failed: {err}", 1)
        except (QueryRejected, AccessDenied) as err:
            return fail(f"refused (rule {err.rule}): {err}")
        except (NotRunning, ProjectionUnavailable) as err:
            return fail(str(err), 3)
        except (ProjectionError, ConfigError, signing.SigningKeyError) as err:
            return fail(str(err))
        except KeyboardInterrupt:
            return 130

    return run


def identity(args: argparse.Namespace) -> str:
    """Who this call acts as: ``--as``, else ``UPM_IDENTITY``, else the login name."""
    return access.whoami(getattr(args, "as_user", None))


async def _connect(args: argparse.Namespace, as_identity: str) -> NATS:
    return await app.connect(app.resolve_url(args.nats, args.data), data=args.data, identity=as_identity)


def with_asker(args: argparse.Namespace, body: Callable[[reports.Ask], Awaitable[T]]) -> T:
    """Run ``body`` against the projector over the bus, or the tenant's file read-only (same rules)."""
    tenant = ALL_TENANTS if args.all_tenants else args.tenant
    principal = identity(args)
    limits = {"timeout_s": args.timeout, "max_rows": getattr(args, "max_rows", DEFAULT_ROWS)}

    def offline() -> T:
        db = ProjectionDB(db_folder(args), read_only=True)
        try:
            return anyio.run(body, reports.local(VisibleSql(db, access.load()), tenant, principal=principal, **limits))
        finally:
            db.close()

    if args.offline:
        return offline()

    async def online() -> T:
        nc = await _connect(args, principal)
        try:
            return await body(reports.bus(nc, tenant, principal=principal, **limits))
        finally:
            await nc.close()

    try:
        return anyio.run(online)
    except (NotRunning, ProjectionUnavailable) as err:
        sys.stderr.write(f"upm: {err}\nupm: reading {db_folder(args)} read-only instead\n")
        return offline()


def _period(args: argparse.Namespace) -> kpi.Range:
    return kpi.Range(
        since=datetime.fromisoformat(args.since) if args.since else None,
        until=datetime.fromisoformat(args.until) if args.until else None,
    )


def cmd_sql(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise ConfigError("give a query: `upm sql \"SELECT …\"`")
    result = with_asker(args, lambda ask: ask(args.query))
    emit(reports.records(result), args)
    if result.truncated:
        sys.stderr.write(f"upm: only the first {len(result.rows)} rows (raise --max-rows)\n")
    return 0


def cmd_kpi(args: argparse.Namespace) -> int:
    rows = kpi.rows(with_asker(args, lambda ask: reports.kpis(ask, _period(args))))
    if args.json or args.csv:
        emit(rows, args)
        return 0
    table = [{"KPI": r.column, "value": "—" if r.value is None else f"{r.value:g}", "unit": r.unit, "L3": r.l3,
              "L4": r.l4, "meets": _meets(r)} for r in rows]
    emit(table, args, text=render_table(table))
    return 0


def _meets(row: kpi.KpiRow) -> str:
    if row.value is None:
        return "no data"
    return "L4" if row.meets_l4 else "L3" if row.meets_l3 else "below L3"


def cmd_score(args: argparse.Namespace) -> int:
    result = with_asker(args, lambda ask: reports.scored(ask, _period(args)))
    if args.json:
        emit(result, args)
        return 0
    lines = [f"Overall UPM level: L{result.overall}" + (f" (L{result.uncapped} before the evidence gates)"
                                                        if result.uncapped != result.overall else "")]
    for p in result.phases:
        lines.append(f"  {p.phase:<22} L{p.level}")
        lines += [f"      to reach L{p.level + 1}: {m}" for m in p.next_level_missing]
    lines += [f"  gate {'met' if g.met else 'NOT met'}: {g.name} (else cap L{g.cap})" for g in result.gates]
    if result.not_exercised:
        lines.append(f"  not judged ({len(result.not_exercised)} clauses nothing in the log exercised; never "
                     f"counted as held): {', '.join(result.not_exercised)}")
    lines.append("")
    emit([result.row], args, text="\n".join(lines) + "\n" + _template(result.row))
    return 0


def _template(row: dict[str, Any]) -> str:
    cells = [", ".join(v) if isinstance(v, list) else ("" if v is None else str(v)) for v in row.values()]
    return "| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n| " + " | ".join(cells) + " |"


def public_key(text: str) -> str:
    """``--public-key HEX``: an ed25519 public key as 64 hex digits."""
    if not signing.is_public_key(text.strip()):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not an ed25519 public key: give its 64 hex digits "
                                         "(the content of keys/ed25519.pub in the data folder of the UPM that signed)")
    return text.strip().lower()


def trusted_keys(args: argparse.Namespace) -> dict[str, str]:
    """The keys to trust, by key id: the ``--public-key`` values and ``--trust`` files when given (only
    those), else the data folder's own keys and the ones it trusts (``keys/*.pub``, ``trust/*.pub``).
    May be empty: then no signature is trusted."""
    given = {signing.key_id(k): k for k in args.public_key or []}
    for path in getattr(args, "trust", None) or []:
        given.update(signing.parse_public_keys(read_text(path, what="the trust file", error=ConfigError), path))
    if given:
        return given
    folder = app.data_dir(args.data)
    return signing.public_keys(folder) if folder.is_dir() else {}


def _verified(data: bytes, args: argparse.Namespace) -> evidence.PackReport:
    return evidence.verify_pack(data, trusted_keys(args))


def cmd_evidence(args: argparse.Namespace) -> int:
    if args.target == "verify":
        if not args.file:
            raise ConfigError("give the pack to verify: `upm evidence verify FILE`")
        report = _verified(read_bytes(args.file, what="the evidence pack", error=ConfigError, limit=MAX_PACK_BYTES), args)
        emit(report, args, text=f"{args.file}: OK — {report.files} files, {report.events} events of change "
                                f"{report.change_id} ({report.tenant}), signed by {report.key_id} (trusted), "
                                f"included in the log head of size {report.log_head_size}")
        return 0

    if not CHANGE_ID_RE.match(args.target):
        raise ConfigError(f"{args.target[:80]!r} is neither a change id nor `verify`: `upm evidence ID` downloads "
                          "a change's pack, `upm evidence verify FILE` verifies one")
    principal = identity(args)

    async def main() -> evidence_query.Pack:
        nc = await _connect(args, principal)
        try:
            return await evidence_query.fetch(nc, args.target, principal=principal, tenant=args.tenant)
        finally:
            await nc.close()

    pack = anyio.run(main)
    out = Path(args.output or args.file or f"{args.target}.evidence.tar")
    out.write_bytes(pack.data)
    report = _verified(pack.data, args)
    emit({"file": str(out), "permalink": pack.permalink, "object": pack.object_name,
          "verified": to_builtins(report)},
         args, text=f"{out}: {len(pack.data)} bytes, verified ({report.events} events, key {report.key_id})\n"
                    f"permalink: {pack.permalink}")
    return 0


def _with_store(args: argparse.Namespace, body: Callable[[EventStore], Awaitable[T]]) -> T:
    async def main() -> T:
        nc = await _connect(args, identity(args))
        try:
            return await body(EventStore(nc))
        finally:
            await nc.close()

    return anyio.run(main)


def head_pin(text: str) -> tuple[int, str]:
    """``--expect-head SIZE:ROOT`` (what `upm audit verify` prints as the newest verified head)."""
    size, _, root = text.partition(":")
    if not size.isdigit() or int(size) < 1 or len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
        raise argparse.ArgumentTypeError(f"{text!r} is not a head: give SIZE:ROOT, e.g. 1200:<64 hex digits>, as "
                                         "`upm audit verify` printed it")
    return int(size), root


def _require_log_reader(args: argparse.Namespace) -> None:
    """`audit verify` reads the whole log: under an access file only the deployment's admin identity may."""
    state = app.read_state(app.data_dir(args.data)) or {}
    who = identity(args)
    if state.get("security") == app.SECURITY_ACCESS and who != natsauth.ADMIN:
        raise ConfigError(f"`upm audit verify` reads the whole log, which under the access file only the "
                          f"deployment's admin identity may: run it as --as {natsauth.ADMIN} on the UPM host "
                          f"(not as {who})")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    _require_log_reader(args)
    keys = trusted_keys(args) or {}
    known = heads.read(app.data_dir(args.data))
    known += [audit.KnownHead(size=size, root=root, origin="--expect-head") for size, root in args.expect_head or []]
    try:
        report = _with_store(args, lambda store: client.audit_stream(
            store, keys, require_signatures=args.require_signatures, known=known))
    except StoreTimeout as err:
        raise NotRunning(f"the server did not answer the log reads ({err}); with an access file only "
                         f"{natsauth.ADMIN} may read the whole log: --as {natsauth.ADMIN}") from err
    if report.problems:
        names, unnamed = _names(args, audit.unreadable(report))
        if args.json:
            emit({**to_builtins(report), "names": sorted(names.values(), key=lambda n: n.seq), "unnamed": unnamed},
                 args)
        return fail(f"verification failed: {audit.render(report, names, unnamed)}", 1)
    emit(report, args, text=f"log OK: {report.events} events, {report.changes} hash chains, {report.heads} signed "
                            f"heads in the stream ({report.heads_signature_checked} signatures checked), {len(known)} "
                            f"kept outside it\nnewest verified head: {report.newest_head or 'none yet'}"
                            + (" (pin it: --expect-head SIZE:ROOT)" if report.newest_head else ""))
    return 0


def _names(args: argparse.Namespace, unreadable: list[tuple[int, int]]) -> tuple[dict[int, audit.EventName], str]:
    """What the projection recorded at the ``unreadable`` sequences (over the bus, else the file read-only),
    and, when it cannot be asked, why."""
    if not unreadable:
        return {}, ""
    lookup = argparse.Namespace(**{**vars(args), "all_tenants": True, "tenant": ALL_TENANTS,
                                   "timeout": DEFAULT_TIMEOUT_S, "max_rows": MAX_ROWS})

    async def body(ask: reports.Ask) -> dict[int, audit.EventName]:
        names: dict[int, audit.EventName] = {}
        for first, last in unreadable:
            for row in reports.records(await ask(audit.names_query(first, last))):
                name = msgspec.convert(row, audit.EventName)
                names[name.seq] = name
        return names

    try:
        return with_asker(lookup, body), ""
    except (ProjectionError, NotRunning, ConfigError) as err:
        return {}, f"the projection could not be read ({err})"


def cmd_serve(args: argparse.Namespace) -> int:
    tokens_file = Path(args.tokens) if args.tokens else app.data_dir(args.data) / "serve_tokens.json"
    rules = access.load()
    tokens = serve.load_tokens(tokens_file, rules)

    async def main() -> None:
        nc = await _connect(args, access.service_identity(serve.SERVICE))
        try:
            server = serve.Server(nc, tokens, rules)
            ready = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: server.serve(args.host, args.port, ready=ready))
                await ready.wait()
                sys.stdout.write(f"serving http://{args.host}:{server.port}/ for {len(tokens)} token(s)\n")
                sys.stdout.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    anyio.run(main)
    return 0


def _scope_options(p: argparse.ArgumentParser, *, rows: bool = False) -> None:
    p.add_argument("--tenant", type=cliargs.tenant, default="default", help="tenant whose rows to read (default: default)")
    p.add_argument("--all-tenants", action="store_true", help="every tenant at once (admins only)")
    p.add_argument("--timeout", type=cliargs.seconds, default=DEFAULT_TIMEOUT_S, help="query time limit in seconds")
    if rows:
        p.add_argument("--max-rows", type=cliargs.positive, default=DEFAULT_ROWS, help="row limit (default 1000)")
    p.add_argument("--offline", action="store_true", help="read the projection file read-only, not the bus")
    p.add_argument("--db", metavar="DIR", help="projection folder (default: <data>/projections)")
    add_identity_option(p)
    add_connection_options(p)


def _period_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=cliargs.iso_time, metavar="ISO", help="only facts at or after this UTC time")
    p.add_argument("--until", type=cliargs.iso_time, metavar="ISO", help="only facts before this UTC time")


def register(sub: Any) -> None:
    p = sub.add_parser("sql", help="read-only SQL over your tenant's projections (DuckDB)")
    p.add_argument("query", help="one SELECT statement")
    _scope_options(p, rows=True)
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_sql))

    p = sub.add_parser("kpi", help="the ten UPM KPIs beside the spec's L3/L4 bands")
    _scope_options(p)
    _period_options(p)
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_kpi))

    p = sub.add_parser("score", help="this stack's UPM level per phase, the evidence gates, the KPIs")
    _scope_options(p)
    _period_options(p)
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_score))

    p = sub.add_parser("evidence", help="download a change's evidence pack (`upm evidence ID`), or verify one "
                                        "(`upm evidence verify FILE`)")
    p.add_argument("target", metavar="ID|verify", help="a change id, or `verify`")
    p.add_argument("file", nargs="?", help="with `verify`: the pack file")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write the pack (default: ID.evidence.tar)")
    p.add_argument("--tenant", type=cliargs.tenant_or_any, default=ANY_TENANT,
                   help="tenant of the change (default: look it up)")
    p.add_argument("--public-key", action="append", type=public_key, metavar="HEX",
                   help="trust only this ed25519 key (repeatable; default: the data folder's keys/*.pub and trust/*.pub)")
    p.add_argument("--trust", action="append", metavar="FILE",
                   help="trust only the keys in this file, one hex key a line (repeatable)")
    add_identity_option(p)
    add_connection_options(p)
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_evidence))

    p = sub.add_parser("audit", help="tamper evidence of the whole log")
    audit_sub = p.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    v = audit_sub.add_parser("verify", help="re-verify every hash chain and every signed log head from the stream, "
                                            "against the heads kept in the data folder and any pinned ones")
    v.add_argument("--public-key", action="append", type=public_key, metavar="HEX",
                   help="trust this ed25519 key (repeatable)")
    v.add_argument("--require-signatures", action="store_true", help="fail on a head signed by an unknown key")
    v.add_argument("--expect-head", action="append", type=head_pin, metavar="SIZE:ROOT",
                   help="a head you pinned (as printed by an earlier verify): the log must still have it (repeatable)")
    v.add_argument("--offline", action="store_true", help="name lost events from the projection file, not the bus")
    v.add_argument("--db", metavar="DIR", help="projection folder naming lost events (default: <data>/projections)")
    add_identity_option(v)
    add_connection_options(v)
    add_output_options(v)
    v.set_defaults(func=guarded(cmd_audit_verify))

    p = sub.add_parser("serve", help="read-only HTTP permalinks (/changes/{id}[/evidence], /kpi, /score)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=cliargs.port, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--tokens", metavar="FILE", help="JSON object token → identity (with an access file) or → tenant "
                                                   "(open mode); default: <data>/serve_tokens.json")
    add_connection_options(p)
    p.set_defaults(func=guarded(cmd_serve))
