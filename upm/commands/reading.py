"""What the projections-layer subcommands do (sql, kpi, score, evidence, audit, serve); their flags
are :mod:`upm.commands.read`'s, which imports this module only when one of them runs (``--help``
loads neither DuckDB nor NATS).

Each asks the projector over the bus as the caller's identity (``--as``, else ``UPM_IDENTITY``,
else the login name; or, with ``--offline`` or when no projector answers for
``sql``/``kpi``/``score``, opens the tenant's file read-only and applies the same rules), and
prints with :mod:`upm.output`. Exit codes: 0 success, 1 a verification failed, 2 refused
input or access, 3 UPM not reachable, 4 an evidence pack is intact but signed by a key that is
not trusted (UNTRUSTED: anyone can sign a pack with a key of their own).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
from nats.aio.client import Client as NATS

from events import signing
from events.codec import to_builtins
from events.errors import StoreTimeout
from events.store import EventStore
from projections import client, evidence_query, kpi, reports, serve
from projections.db import ALL_TENANTS, ProjectionDB
from projections.errors import AccessDenied, ProjectionError, ProjectionUnavailable, QueryRejected
from projections.limits import DEFAULT_ROWS, DEFAULT_TIMEOUT_S, MAX_ROWS
from projections.visibility import VisibleSql
from services.auditor import audit, evidence, heads
from services.auditor.errors import AuditFailed, EvidenceInvalid, EvidenceUntrusted
from services.common import connection, settings, statefile
from services.common.configfile import read_bytes, read_text
from services.common.errors import ConfigError, NotRunning
from services.security import access
from services.security.tls import Pki
from upm import natsauth
from upm.commands.core import fail
from upm.output import emit, render_table

T = TypeVar("T")
PROJECTIONS_DIR = "projections"
UNTRUSTED = 4
MAX_PACK_BYTES = 512 * 1024 * 1024


def db_folder(args: argparse.Namespace) -> Path:
    """The projection folder: ``--db``, else ``<data folder>/projections``."""
    return Path(args.db) if getattr(args, "db", None) else settings.data_dir(args.data) / PROJECTIONS_DIR


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
    return await connection.connect(connection.resolve_url(args.nats, args.data), data=args.data, identity=as_identity)


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


def trusted_keys(args: argparse.Namespace) -> dict[str, str]:
    """The keys to trust, by key id: the ``--public-key`` values and ``--trust`` files when given (only
    those), else the data folder's own keys and the ones it trusts (``keys/*.pub``, ``trust/*.pub``).
    May be empty: then no signature is trusted."""
    given = {signing.key_id(k): k for k in args.public_key or []}
    for path in getattr(args, "trust", None) or []:
        given.update(signing.parse_public_keys(read_text(path, what="the trust file", error=ConfigError), path))
    if given:
        return given
    folder = settings.data_dir(args.data)
    return signing.public_keys(folder) if folder.is_dir() else {}


def _verified(data: bytes, args: argparse.Namespace) -> evidence.PackReport:
    return evidence.verify_pack(data, trusted_keys(args))


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    report = _verified(read_bytes(args.file, what="the evidence pack", error=ConfigError, limit=MAX_PACK_BYTES), args)
    emit(report, args, text=f"{args.file}: OK — {report.files} files, {report.events} events of change "
                            f"{report.change_id} ({report.tenant}), signed by {report.key_id} (trusted), "
                            f"included in the log head of size {report.log_head_size}")
    return 0


def cmd_evidence_get(args: argparse.Namespace) -> int:
    principal = identity(args)

    async def main() -> evidence_query.Pack:
        nc = await _connect(args, principal)
        try:
            return await evidence_query.fetch(nc, args.change_id, principal=principal, tenant=args.tenant)
        finally:
            await nc.close()

    pack = anyio.run(main)
    out = Path(args.output or args.file or f"{args.change_id}.evidence.tar")
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


def _require_log_reader(args: argparse.Namespace) -> None:
    """`audit verify` reads the whole log: under an access file only the deployment's admin identity may."""
    state = statefile.read_state(settings.data_dir(args.data)) or {}
    who = identity(args)
    if state.get("security") == connection.SECURITY_ACCESS and who != natsauth.ADMIN:
        raise ConfigError(f"`upm audit verify` reads the whole log, which under the access file only the "
                          f"deployment's admin identity may: run it as --as {natsauth.ADMIN} on the UPM host "
                          f"(not as {who})")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    _require_log_reader(args)
    keys = trusted_keys(args) or {}
    known = heads.read(settings.data_dir(args.data))
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
    """`upm serve [--host H] [--port P]`: the web console; `upm serve token add NAME`: a sign-in token."""
    from projections.console import server

    folder = settings.data_dir(args.data)
    rules = deployment_rules(folder)
    chosen = server.settings(folder, args.host, Path(args.tokens) if args.tokens else None, rules=rules)
    pki = _console_pki(folder) if args.tls else None
    sock = server.bind(args.host, args.port)

    async def main() -> None:
        nc = await _connect(args, access.service_identity(serve.SERVICE))

        def started(url: str) -> None:
            sys.stdout.write(f"console: {url} ({'secure' if chosen.rules.enforced else 'open mode'}, "
                             f"{len(chosen.tokens)} token(s)); Ctrl-C stops it\n")
            sys.stdout.flush()

        try:
            await server.serve(server.app_for(nc, chosen), sock, ready=started, tls=pki)
        finally:
            with anyio.CancelScope(shield=True):
                await nc.close()

    anyio.run(main)
    return 0


def _console_pki(folder: Path) -> Pki:
    """The certificates of the deployment (``UPM_TLS_DIR``, else the data folder's ``tls_dir``)."""
    state = statefile.read_state(folder) or {}
    where = os.environ.get(connection.TLS_ENV) or state.get("tls_dir")
    if not where:
        raise ConfigError("--tls serves HTTPS with the deployment's certificates, and this one has none: start it "
                          "with `upm up --tls` or `--access FILE`, or set UPM_TLS_DIR")
    return Pki(Path(where))


def deployment_rules(folder: Path) -> access.Access:
    """The access rules of the deployment the console serves: ``UPM_ACCESS``, else the access file `upm up
    --access` copied into the data folder. Never open mode for a deployment that enforces identities: an
    open console there would let anyone act as anyone through ``upm-serve``."""
    state = statefile.read_state(folder) or {}
    return access.load(os.environ.get(access.ENV_VAR) or state.get("access") or None)


def cmd_serve_token(args: argparse.Namespace) -> int:
    """`upm serve token add NAME`: a sign-in token for NAME, printed once."""
    folder = settings.data_dir(args.data)
    tokens_file = Path(args.tokens) if args.tokens else folder / serve.TOKENS_FILE
    token = serve.add_token(tokens_file, args.name, deployment_rules(folder))
    sys.stdout.write(f"token for {args.name} (hand it to them; it is in {tokens_file}, mode 0600):\n{token}\n")
    return 0
