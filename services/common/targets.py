"""Where the targets are: the settings that name the AWS endpoint and region, the PostgreSQL server and
the roles UPM uses there, and running statements with psql as a DSN's user.

``upm up --with aws,postgres`` (:mod:`upm.emulators`) sets them for the services it starts; against real
endpoints the operator sets them (``--aws-endpoint``, ``--postgres-dsn``). The executor's credentials
broker (:mod:`services.security.credentials`) reads them.
"""

from __future__ import annotations

import subprocess
import urllib.parse

from services.common.errors import ConfigError

AWS_ENDPOINT = "UPM_AWS_ENDPOINT"
AWS_REGION = "UPM_AWS_REGION"
AWS_OBSERVER_FILE = "UPM_AWS_OBSERVER_FILE"
PG_HOST = "UPM_PG_HOST"
PG_PORT = "UPM_PG_PORT"
PG_OBSERVER_USER = "UPM_PG_OBSERVER_USER"
PG_OBSERVER_PASSFILE = "UPM_PG_OBSERVER_PASSFILE"
POSTGRES_DSN = "UPM_POSTGRES_DSN"
DEFAULT_REGION = "us-east-1"
PG_OPERATOR = "upm_operator"
PG_OBSERVER = "upm_observer"

def psql_dsn(dsn: str, statements: tuple[str, ...], *, timeout: float = 30.0) -> str:
    """Run ``statements`` with psql as the user of ``dsn``: the password by environment, the
    statements on stdin (they may hold a new role's password: never in argv, where ``ps`` sees it)."""
    parts = urllib.parse.urlsplit(dsn)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PGHOST": parts.hostname or "127.0.0.1",
           "PGPORT": str(parts.port or 5432), "PGUSER": urllib.parse.unquote(parts.username or "postgres"),
           "PGPASSWORD": urllib.parse.unquote(parts.password or ""),
           "PGDATABASE": parts.path.lstrip("/") or "postgres", "PGCONNECT_TIMEOUT": "5"}
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    script = "".join(f"{statement};\n" for statement in statements)
    try:
        done = subprocess.run(argv, env=env, input=script, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"could not run psql against {parts.hostname}:{parts.port} ({exc}); install the "
                          "PostgreSQL client (psql) in /usr/bin or /usr/local/bin") from exc
    if done.returncode != 0:
        raise ConfigError(f"PostgreSQL at {parts.hostname}:{parts.port} refused the set-up "
                          f"({done.stderr.strip()[-300:]}); check --postgres-dsn (a superuser's DSN)")
    return done.stdout
