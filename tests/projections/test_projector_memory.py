"""The projector's DuckDB memory cap (UPM_PROJECTOR_MEMORY): applied to the files it writes, refused when it is
no size, and named by a query that runs out of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections import sqlservice
from projections.db import ProjectionDB
from projections.errors import ProjectionUnavailable, QueryFailed
from projections.limits import MEMORY_ENV, memory_limit
from services.common.errors import ConfigError
from upm import app


def test_unset_leaves_duckdb_its_default_and_a_value_that_is_no_size_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    assert memory_limit() is None
    monkeypatch.setenv(MEMORY_ENV, " 1.5GiB ")
    assert memory_limit() == "1.5GiB"
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(ProjectionUnavailable, match=r"UPM_PROJECTOR_MEMORY='lots' is not a size: give one such as 256MB"):
        memory_limit()


def test_the_cap_bounds_the_written_files_and_a_query_beyond_it_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MEMORY_ENV, "64MB")
    db = ProjectionDB(tmp_path / "p")
    try:
        limit = db.main.execute("SELECT current_setting('memory_limit')").fetchone()
        assert limit is not None and limit[0] in ("61.0 MiB", "64.0 MB", "61.0MiB")
        with pytest.raises(QueryFailed, match=r"capped at UPM_PROJECTOR_MEMORY=64MB: raise it"):
            sqlservice.execute(db.main.cursor(), "SELECT length(string_agg(repeat('x', 1000), '')) FROM range(200000)")
    finally:
        db.close()


def test_upm_up_refuses_a_cap_that_is_no_size_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MEMORY_ENV, "half")
    with pytest.raises(ConfigError, match="UPM_PROJECTOR_MEMORY='half' is not a size"):
        app.up(tmp_path / "data")
    assert not (tmp_path / "data").exists()
