"""The limits of a SQL request over the bus (:mod:`projections.sqlservice`), importable without DuckDB
(the CLI shows them as defaults in ``--help``)."""

DEFAULT_ROWS = 1000
MAX_ROWS = 10_000
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 60.0
