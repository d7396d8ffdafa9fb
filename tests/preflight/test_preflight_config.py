"""The configuration file: defaults, a full example, and clear errors (what, where, what to do)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from services.preflight.config import BUILTIN_PACK, DEFAULT, ENV_VAR, load_config, parse_config
from services.preflight.errors import PreflightConfigError

EXAMPLE = """
groups:
  "*": {platform-owners: [bob, carol]}
  acme: {security: [erin]}
quotas:
  "*": {"*": 20, aws_s3_bucket: 2}
budgets: {acme: 500}
windows:
  prod:
    timezone: Europe/Paris
    weekly: ["sat 22:00-06:00"]
    cron: [{schedule: "0 2 * * 1-5", duration: 2h}]
    outside: refuse
policies:
  acme: [builtin, packs/acme]
limits: {max_resources: 10}
approval_expiry: 24h
release_interval: 5s
slo: {p95_ms: 500, window: 50, min_samples: 10}
risk: {low_below: 15, high_from: 60}
"""


def test_the_defaults_keep_the_demo_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = load_config()
    assert cfg is DEFAULT and cfg.packs("any") == (BUILTIN_PACK,)
    assert cfg.windows == {} and cfg.quota("any", "local_directory") == 100


def test_a_full_file_from_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "preflight.yaml"
    path.write_text(EXAMPLE)
    monkeypatch.setenv(ENV_VAR, str(path))
    cfg = load_config()
    assert cfg.group_members("acme") == {"platform-owners": frozenset({"bob", "carol"}), "security": frozenset({"erin"})}
    assert (cfg.quota("acme", "aws_s3_bucket"), cfg.quota("acme", "k8s_namespace")) == (2, 20)
    assert cfg.budget("acme") == 500 and cfg.budget("other") is None
    assert cfg.packs("acme") == (BUILTIN_PACK, (tmp_path / "packs" / "acme").resolve())
    assert cfg.windows["prod"].outside == "refuse" and cfg.approval_expiry == timedelta(hours=24)
    assert cfg.release_interval == 5.0 and cfg.slo.p95_ms == 500 and cfg.source == str(path)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"groups": {"*": {"ops": "bob"}}}, "Expected `array`, got `str` - at `$.groups[...][...]`"),
        ({"windows": {"production": {"weekly": ["sat 22:00-06:00"]}}}, "windows.production: unknown environment"),
        ({"windows": {"prod": {"weekly": ["saturday night"]}}}, "windows.prod: weekly range 'saturday night'"),
        ({"windows": {"prod": {"timezone": "Mars/Base"}}}, "unknown timezone"),
        ({"windows": {"prod": {}}}, "at least one weekly range or cron slot"),
        ({"quotas": {"acme": {"aws_s3_bucket": -1}}}, "quotas.acme.aws_s3_bucket: -1 is negative"),
        ({"approval_expiry": "soon"}, "write e.g. 90s, 30m, 72h or 2d"),
        ({"risk": {"low_below": 70, "high_from": 50}}, "low_below must not exceed high_from"),
        ({"colour": "blue"}, "Object contains unknown field `colour`"),
    ],
)
def test_a_bad_configuration_says_what_where_and_what_to_do(data: object, needle: str) -> None:
    with pytest.raises(PreflightConfigError) as err:
        parse_config(data, source="cfg.yaml")
    assert needle in str(err.value) and str(err.value).startswith("cfg.yaml")


def test_an_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(PreflightConfigError, match="cannot read the pre-flight configuration"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - [unclosed\n")
    with pytest.raises(PreflightConfigError, match="at line 3"):
        load_config(bad)
