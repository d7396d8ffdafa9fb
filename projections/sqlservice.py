"""SQL over the bus: read-only queries answered on ``upm.sql.<tenant>.<principal>``.

The pure core is :func:`run_query`: DuckDB's own parser must find exactly one ``SELECT`` (no
``ATTACH``, ``COPY``, ``PRAGMA``, ``SET``, DDL or DML, no second statement hidden after a ``;``);
it runs in a ``READ ONLY`` transaction that is always rolled back, on a connection of the
tenant's own DuckDB instance (file access disabled, configuration locked; see
:mod:`projections.db`), with a row limit and a time limit (the query is interrupted). Who may
ask, and which rows they see, is :mod:`projections.visibility`'s (roles, team / org / private).
The last subject token is the caller's identity (authenticated by the server when an access file
is used); ``upm.sql._all.<principal>`` answers over every tenant's rows, for admins only.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from events import jsonbounds
from events.errors import InvalidEvent
from events.subjects import sql_subject
from projections.errors import AccessDenied, ProjectionUnavailable, QueryFailed, QueryRejected, QueryTimeout
from projections.limits import DEFAULT_ROWS, DEFAULT_TIMEOUT_S, MAX_ROWS, MAX_TIMEOUT_S, MEMORY_ENV

MAX_REQUEST_BYTES = 64 * 1024
LATEST = -1
"""``after_seq`` for "everything logged before this request" (the projector reads the stream's position)."""


class SqlRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A query; ``after_seq`` asks the projector to have ingested that stream sequence first
    (:data:`LATEST`: every event in the log when the projector receives the request — read your
    own writes; 0: answer from what is ingested now, which may be up to the projector's gathering
    time behind, see :data:`projections.projector.LINGER_S`).

    Unknown fields are refused: the caller's identity is the subject's last token, never a field."""

    sql: str
    max_rows: int = DEFAULT_ROWS
    timeout_s: float = DEFAULT_TIMEOUT_S
    after_seq: int = 0


class SqlResult(msgspec.Struct, frozen=True, kw_only=True, tag="result"):
    """Column names, rows (JSON values), whether rows were cut at the limit, the position read."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False
    position: int = 0


class SqlError(msgspec.Struct, frozen=True, kw_only=True, tag="error"):
    """A refused or failed query: ``kind`` is rejected, forbidden, failed, timeout or unavailable."""

    error: str
    kind: str
    rule: str = ""


Reply = SqlResult | SqlError


_request = msgspec.json.Decoder(SqlRequest)


def decode_request(data: bytes) -> SqlRequest:
    """The request in ``data``; :class:`QueryRejected` (rule ``size``, ``depth``, ``duplicate-key`` or
    ``schema``) naming what is wrong otherwise."""
    if len(data) > MAX_REQUEST_BYTES:
        raise QueryRejected(f"the SQL request is {len(data)} bytes; the limit is {MAX_REQUEST_BYTES}", rule="size")
    try:
        jsonbounds.check(data, what="the SQL request")
        request = _request.decode(data)
    except InvalidEvent as exc:
        raise QueryRejected(str(exc), rule=exc.rule) from exc
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise QueryRejected(
            f"invalid SQL request: {exc}; send {{\"sql\": \"SELECT …\"}} and optionally max_rows, timeout_s, after_seq",
            rule="schema",
        ) from exc
    if request.after_seq < LATEST:
        raise QueryRejected(f"after_seq must be a stream sequence, 0 (no wait) or {LATEST} (everything logged so "
                            f"far), not {request.after_seq}", rule="schema")
    if not math.isfinite(request.timeout_s):
        raise QueryRejected(f"timeout_s must be a finite number of seconds, not {request.timeout_s}", rule="schema")
    return request


def check(sql: str) -> None:
    """Refuse anything but exactly one SELECT statement (DuckDB's own parser decides)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRejected(f"the query does not parse: {exc}", rule="parse") from exc
    if len(statements) != 1:
        raise QueryRejected(
            f"send exactly one statement, not {len(statements)}; run several queries one at a time",
            rule="one-statement",
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryRejected(
            f"only SELECT queries are answered (this is a {kind.name} statement); the projections are read-only",
            rule="select-only",
        )


@contextmanager
def read_only(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh cursor of ``con`` in a ``READ ONLY`` transaction, always rolled back and closed."""
    cur = con.cursor()
    try:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        try:
            yield cur
        finally:
            cur.execute("ROLLBACK")
    finally:
        cur.close()


def execute(
    cur: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int = DEFAULT_ROWS, timeout_s: float = DEFAULT_TIMEOUT_S
) -> SqlResult:
    """Run one :func:`check`-ed SELECT on ``cur`` (inside its transaction), within the limits."""
    max_rows = max(1, min(max_rows, MAX_ROWS))
    timeout_s = max(0.01, min(timeout_s, MAX_TIMEOUT_S))
    timer = threading.Timer(timeout_s, cur.interrupt)
    timer.start()
    try:
        cur.execute(sql)
        columns = [d[0] for d in cur.description or []]
        fetched = cur.fetchmany(max_rows + 1)
    except duckdb.InterruptException as exc:
        raise QueryTimeout(
            f"the query ran longer than {timeout_s:g}s and was stopped; narrow it (WHERE, LIMIT) "
            "or ask for a longer --timeout"
        ) from exc
    except duckdb.OutOfMemoryException as exc:
        capped = os.environ.get(MEMORY_ENV)
        raise QueryFailed(f"DuckDB could not run the query: {exc}" + (
            f" — the projector's memory is capped at {MEMORY_ENV}={capped}: raise it (or unset it) and restart the "
            "projector" if capped else "")) from exc
    except duckdb.Error as exc:
        raise QueryFailed(f"DuckDB could not run the query: {exc}") from exc
    finally:
        timer.cancel()
    rows = [list(r) for r in fetched[:max_rows]]
    return SqlResult(columns=columns, rows=msgspec.to_builtins(rows, enc_hook=str), truncated=len(fetched) > max_rows)


def run_query(
    con: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int = DEFAULT_ROWS, timeout_s: float = DEFAULT_TIMEOUT_S
) -> SqlResult:
    """Run one checked SELECT on a fresh cursor of ``con``, read-only, within the limits."""
    check(sql)
    with read_only(con) as cur:
        return execute(cur, sql, max_rows=max_rows, timeout_s=timeout_s)


def error_reply(exc: Exception) -> SqlError:
    """The wire form of a query error."""
    match exc:
        case QueryRejected(rule=rule):
            return SqlError(error=str(exc), kind="rejected", rule=rule)
        case AccessDenied(rule=rule):
            return SqlError(error=str(exc), kind="forbidden", rule=rule)
        case QueryTimeout():
            return SqlError(error=str(exc), kind="timeout")
        case ProjectionUnavailable():
            return SqlError(error=str(exc), kind="unavailable")
        case _:
            return SqlError(error=str(exc), kind="failed")


def raise_for(reply: SqlError) -> None:
    """The typed error for a wire error."""
    match reply.kind:
        case "rejected":
            raise QueryRejected(reply.error, rule=reply.rule)
        case "forbidden":
            raise AccessDenied(reply.error, rule=reply.rule)
        case "timeout":
            raise QueryTimeout(reply.error)
        case "unavailable":
            raise ProjectionUnavailable(reply.error)
        case _:
            raise QueryFailed(reply.error)


_reply_decoder = msgspec.json.Decoder(SqlResult | SqlError)


def encode_reply(reply: Reply) -> bytes:
    return msgspec.json.encode(reply, enc_hook=str)


async def query(
    nc: NATS, tenant: str, request: SqlRequest, *, principal: str, wait_s: float | None = None
) -> SqlResult:
    """Ask the projector, as ``principal``, about ``tenant`` (or ``_all``); raises the typed error it reports."""
    subject = sql_subject(tenant, principal)
    try:
        msg = await nc.request(subject, msgspec.json.encode(request), timeout=wait_s or request.timeout_s + 5.0)
    except nats.errors.NoRespondersError as exc:
        raise ProjectionUnavailable(
            f"no projector answers on {subject}; start UPM with `upm up`, or query the file "
            "directly with `upm sql --offline`"
        ) from exc
    except nats.errors.TimeoutError as exc:
        raise QueryTimeout(
            f"the projector did not answer on {subject} in time; retry (with an access file, the server drops "
            f"what {principal} may not publish: check --as)"
        ) from exc
    reply = _reply_decoder.decode(msg.data)
    if isinstance(reply, SqlError):
        raise_for(reply)
    assert isinstance(reply, SqlResult)
    return reply
