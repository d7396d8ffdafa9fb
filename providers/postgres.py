"""The ``postgres`` provider: databases, roles, login users, schemas and grants (to the tables of a
schema, on one table, on a schema itself), with psql 15.

Every command is ``psql -X -q -v ON_ERROR_STOP=1 -d DB -c SQL`` (several ``-c`` for a grant);
the server, user and password come from the executor's environment (``PGHOST``…, a credential
reference), never from the plan. Identifiers are restricted to lowercase SQL identifiers, so no
quoting is ever needed and no value can inject SQL. Read-backs use ``-A -t`` (unaligned, tuples
only: ``a|b``); existence checks for prerequisites divide by the row count, so psql exits non-zero
when the object is missing.

Absence is proven by an answer: a read-back query that ran and returned no row, an existence
check's "division by zero", or, for what lives in a database (schema, grant), the server saying
that database does not exist. A connection that failed (refused, a password refused, a time-out)
proves nothing: the resource is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from providers.base import Batch, CliPin, FieldSpec, Requirement, ResourceType, Template, Vars, delimited
from providers.readback import Absence

PROVIDER = "postgres"
PIN = CliPin(
    name="psql",
    binaries=("psql",),
    version="15",
    version_argv=("psql", "--version"),
    version_pattern=r"\(PostgreSQL\) (\d+)",
)
_IDENT = r"[a-z_][a-z0-9_]{0,62}"
_RULE = "a lowercase SQL identifier: a letter or _, then letters, digits or _ (at most 63)"


def _sql(db: str, *statements: str) -> Template:
    out: list[str] = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db]
    for statement in statements:
        out += ["-c", statement]
    return tuple(out)


def _query(db: str, statement: str) -> Template:
    return ("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", statement)


def _ident(name: str, doc: str, *keys: str) -> FieldSpec:
    return FieldSpec(name=name, required=name != "owner", pattern=_IDENT, rule=_RULE, nl_keys=keys, doc=doc)


_NO_ROW = r"ERROR:  division by zero"  # an existence check: 1 / count(*) of no row
_EXISTS = Absence((_NO_ROW,))
_IN_DATABASE = Absence((_NO_ROW, r'FATAL:  database "[a-z0-9_]+" does not exist'))
_PRIVILEGES = {"read": "SELECT", "write": "SELECT, INSERT, UPDATE, DELETE", "all": "ALL PRIVILEGES"}
_CHECKED = {"read": "SELECT", "write": "INSERT", "all": "TRUNCATE"}


def _role_named(var: str) -> Requirement:
    """A role named by ``var``: created by this plan as a role or a login user, else existing."""
    return Requirement(type="pg_role", match={"name": var}, satisfied_by=("pg_user",))


def _grant_vars(v: Vars) -> dict[str, Any]:
    privilege = str(v.get("privilege", "read"))
    return {"privileges": _PRIVILEGES[privilege], "checked": _CHECKED[privilege]}


def _login_vars(v: Vars) -> dict[str, Any]:
    return {"login_kw": "LOGIN" if v.get("login") else "NOLOGIN"}


_DB_ROW = "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'"
_DB_PARSE = delimited(("name", "owner"), sep="|")
_OWNER = _ident("owner", "the owning role", "owned by", "owner")

DATABASE = ResourceType(
    name="pg_database",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("postgres database", "database", "db"),
    fields=(_ident("name", "the database name"), _OWNER),
    summary=("owner",),
    create=_sql("postgres", "CREATE DATABASE {name}"),
    delete=_sql("postgres", "DROP DATABASE {name}"),
    readback=_query("postgres", _DB_ROW),
    exists=_query("postgres", "SELECT 1 / count(*) FROM pg_database WHERE datname = '{name}'"),
    parse=_DB_PARSE,
    absent=_EXISTS,
    timeout_s=120.0,
    doc="a database (its owner is a facet)",
)

DATABASE_OWNER = ResourceType(
    name="pg_database_owner",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    state=("owner",),
    create=_sql("postgres", "ALTER DATABASE {name} OWNER TO {owner}"),
    readback=_query("postgres", _DB_ROW),
    parse=_DB_PARSE,
    requires=(_role_named("owner"),),
    facet_of=("pg_database",),
    facet_field="owner",
    on_create=True,
    doc="the owner of a database",
)

ROLE = ResourceType(
    name="pg_role",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("postgres role", "database role", "pg role", "role"),
    fields=(
        _ident("name", "the role name"),
        FieldSpec(name="login", kind="bool", default=False, nl_flags={"login": True, "nologin": False}),
    ),
    summary=("login",),
    state=("login",),
    create=_sql("postgres", "CREATE ROLE {name} {login_kw}"),
    update=_sql("postgres", "ALTER ROLE {name} {login_kw}"),
    delete=_sql("postgres", "DROP ROLE {name}"),
    readback=_query("postgres", "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = '{name}'"),
    exists=_query("postgres", "SELECT 1 / count(*) FROM pg_roles WHERE rolname = '{name}'"),
    parse=delimited(("name", "login"), sep="|", convert={"login": lambda s: s == "t"}),
    absent=_EXISTS,
    derive=_login_vars,
    doc="a role (no password in a plan: set one through a credential reference)",
)

SCHEMA = ResourceType(
    name="pg_schema",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{database}.{name}",
    nouns=("schema",),
    fields=(
        _ident("name", "the schema name"),
        _ident("database", "the database", "in database", "database", "in"),
    ),
    summary=("database",),
    create=_sql("{database}", "CREATE SCHEMA {name}"),
    delete=_sql("{database}", "DROP SCHEMA {name}"),
    readback=_query("{database}", "SELECT nspname FROM pg_namespace WHERE nspname = '{name}'"),
    exists=_query("{database}", "SELECT 1 / count(*) FROM pg_namespace WHERE nspname = '{name}'"),
    parse=delimited(("name",)),
    absent=_IN_DATABASE,
    requires=(Requirement(type="pg_database", match={"name": "database"}),),
    doc="a schema in a database",
)

# The grant itself, not what PUBLIC happens to allow: CONNECT and USAGE granted to the role by name
# (in the ACLs), and the privilege on every table of the schema. One query reads any number of
# grants of one database (``VALUES`` rows of ident, role, schema, privilege checked); a read-back
# of one grant is the same query with one row and no ident column: ``t`` (held) or ``f``; the batch
# prints ``ident|t`` per grant.
def _grants_held(rows: Sequence[str], *, ident: bool = True) -> str:
    return (
        f"SELECT {'v.ident, ' if ident else ''}CASE WHEN r.oid IS NULL THEN false ELSE "
        "EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() "
        "AND a.grantee = r.oid AND a.privilege_type = 'CONNECT') "
        "AND EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = v.sch "
        "AND a.grantee = r.oid AND a.privilege_type = 'USAGE') "
        "AND NOT EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = v.sch "
        "AND NOT has_table_privilege(v.rol, format('%I.%I', t.schemaname, t.tablename), v.chk)) END "
        f"FROM (VALUES {', '.join(rows)}) v(ident, rol, sch, chk) LEFT JOIN pg_roles r ON r.rolname = v.rol"
    )


def _grant_row(ident: str) -> str:
    role, _, rest = ident.partition("@")
    where, _, privilege = rest.rpartition(":")
    schema = where.partition(".")[2]
    return f"('{ident}', '{role}', '{schema}', '{_CHECKED[privilege]}')"


def _held(rc: int, stdout: str, idents: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    if rc != 0:
        return {}
    rows = dict(line.rsplit("|", 1) for line in stdout.splitlines() if "|" in line)
    return {ident: ({} if rows[ident] == "t" else None) for ident in idents if ident in rows}


def _grant_held(stdout: str, ident: str) -> dict[str, Any] | None:
    answer = stdout.strip()
    if answer not in ("t", "f"):
        raise ValueError(f"expected t or f, got {answer[:80]!r}")
    return {} if answer == "t" else None


GRANTS_HELD = Batch(
    group=lambda ident, target: f"{target}/{ident.partition('@')[2].partition('.')[0]}",
    command=lambda group, idents: (
        "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", group.rpartition("/")[2], "-c",
        _grants_held([_grant_row(i) for i in idents]),
    ),
    parse=_held,
)

GRANT = ResourceType(
    name="pg_grant",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{role}@{database}.{schema}:{privilege}",
    nouns=("grant",),
    fields=(
        _ident("role", "the grantee role", "role", "to role", "to"),
        _ident("database", "the database", "on database", "database", "on"),
        FieldSpec(name="privilege", kind="choice", default="read", choices=("read", "write", "all")),
        FieldSpec(
            name="schema", default="public", pattern=_IDENT, rule=_RULE, nl_keys=("schema", "in schema")
        ),
    ),
    summary=("role", "database", "schema", "privilege"),
    create=_sql(
        "{database}",
        "GRANT CONNECT ON DATABASE {database} TO {role}",
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT {privileges} ON ALL TABLES IN SCHEMA {schema} TO {role}",
    ),
    delete=_sql(
        "{database}",
        "REVOKE {privileges} ON ALL TABLES IN SCHEMA {schema} FROM {role}",
        "REVOKE USAGE ON SCHEMA {schema} FROM {role}",
        "REVOKE CONNECT ON DATABASE {database} FROM {role}",
    ),
    readback=_query(
        "{database}",
        _grants_held(["('{role}@{database}.{schema}:{privilege}', '{role}', '{schema}', '{checked}')"], ident=False),
    ),
    parse=_grant_held,
    absent=_IN_DATABASE,
    batch=GRANTS_HELD,
    derive=_grant_vars,
    requires=(
        _role_named("role"),
        Requirement(type="pg_database", match={"name": "database"}),
    ),
    doc="read / write / all access for a role to the tables of a schema (default public) of a database",
)

USER = ResourceType(
    name="pg_user",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("postgres user", "database user", "db user", "login role"),
    fields=(
        _ident("name", "the user name"),
        FieldSpec(name="login", kind="bool", default=True, nl_flags={"login": True, "nologin": False}),
    ),
    summary=("login",),
    state=("login",),
    create=ROLE.create,
    update=ROLE.update,
    delete=ROLE.delete,
    readback=ROLE.readback,
    exists=ROLE.exists,
    parse=ROLE.parse,
    absent=_EXISTS,
    derive=_login_vars,
    doc="a role that can log in (a user); no password in a plan: set one through a credential reference",
)

_TABLE_GRANT_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
    "aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee WHERE n.nspname = '{schema}' "
    "AND c.relname = '{table}' AND r.rolname = '{role}' AND a.privilege_type = '{checked}')"
)

TABLE_GRANT = ResourceType(
    name="pg_table_grant",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{role}@{database}.{schema}.{table}:{privilege}",
    nouns=("table grant",),
    fields=(
        _ident("role", "the grantee role", "role", "to role", "to"),
        _ident("table", "the table", "on table", "table"),
        _ident("database", "the database", "in database", "database"),
        FieldSpec(name="privilege", kind="choice", default="read", choices=("read", "write", "all")),
        FieldSpec(
            name="schema", default="public", pattern=_IDENT, rule=_RULE, nl_keys=("schema", "in schema")
        ),
    ),
    summary=("role", "database", "schema", "table", "privilege"),
    create=_sql("{database}", "GRANT {privileges} ON TABLE {schema}.{table} TO {role}"),
    delete=_sql("{database}", "REVOKE {privileges} ON TABLE {schema}.{table} FROM {role}"),
    readback=_query("{database}", _TABLE_GRANT_HELD),
    parse=_grant_held,
    absent=_IN_DATABASE,
    derive=_grant_vars,
    requires=(
        _role_named("role"),
        Requirement(type="pg_database", match={"name": "database"}),
    ),
    doc="read / write / all access for a role to one table (granted to the role by name, on that table "
    "only: connecting and the schema's usage come from a grant on the schema or PUBLIC)",
)

_SCHEMA_PRIVILEGES = {"usage": ("USAGE",), "create": ("CREATE",), "all": ("USAGE", "CREATE")}


def _schema_grant_vars(v: Vars) -> dict[str, Any]:
    privileges = _SCHEMA_PRIVILEGES[str(v.get("privilege", "usage"))]
    return {
        "schema_privileges": ", ".join(privileges),
        "privilege_types": ", ".join(f"'{p}'" for p in privileges),
        "privilege_count": len(privileges),
    }


SCHEMA_GRANT = ResourceType(
    name="pg_schema_grant",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{role}@{database}.{schema}:{privilege}",
    nouns=("schema grant",),
    fields=(
        _ident("role", "the grantee role", "role", "to role", "to"),
        _ident("schema", "the schema", "on schema", "schema"),
        _ident("database", "the database", "in database", "database"),
        FieldSpec(name="privilege", kind="choice", default="usage", choices=("usage", "create", "all")),
    ),
    summary=("role", "database", "schema", "privilege"),
    create=_sql("{database}", "GRANT {schema_privileges} ON SCHEMA {schema} TO {role}"),
    delete=_sql("{database}", "REVOKE {schema_privileges} ON SCHEMA {schema} FROM {role}"),
    readback=_query(
        "{database}",
        "SELECT count(DISTINCT a.privilege_type) = {privilege_count} FROM pg_namespace n, aclexplode(n.nspacl) a "
        "JOIN pg_roles r ON r.oid = a.grantee WHERE n.nspname = '{schema}' AND r.rolname = '{role}' "
        "AND a.privilege_type IN ({privilege_types})",
    ),
    parse=_grant_held,
    absent=_IN_DATABASE,
    derive=_schema_grant_vars,
    requires=(
        _role_named("role"),
        Requirement(type="pg_schema", match={"name": "schema", "database": "database"},
                    skip=lambda v: v.get("schema") == "public"),
        Requirement(type="pg_database", match={"name": "database"}),
    ),
    doc="usage / create / all on a schema itself (not its tables: that is pg_grant or pg_table_grant)",
)

TYPES = (DATABASE, DATABASE_OWNER, ROLE, USER, SCHEMA, GRANT, TABLE_GRANT, SCHEMA_GRANT)
