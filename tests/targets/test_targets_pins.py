"""The project's own aws and psql are the pinned ones; a CLI of another version is refused."""

from __future__ import annotations

import importlib.metadata

import pytest

from events.plan import Command
from providers import PINS
from providers.base import display
from services.guard import DEFAULT_PATH, Pin
from services.guard.steps import execute, pin_table
from upm.emulators import postgres_bin


def command(*argv: str) -> Command:
    return Command(argv=argv, display=display(argv))


async def test_the_awscli_the_project_installs_is_the_pinned_one_and_runs() -> None:
    assert importlib.metadata.version("awscli") == PINS["awscli"].version
    done = await execute(command("aws", "--version"))
    assert done.output.rc == 0, done.output.stderr
    assert f"aws-cli/{PINS['awscli'].version}" in done.output.stdout + done.output.stderr


async def test_an_awscli_of_another_version_is_refused_with_both_versions() -> None:
    awscli = PINS["awscli"]
    older = Pin(binary="aws", version="1.45.11", version_args=awscli.version_argv[1:], pattern=awscli.version_pattern)
    done = await execute(command("aws", "s3api", "list-buckets"), pins=pin_table().with_pins(older))
    assert done.output.rc != 0
    assert "1.45.11" in done.output.stderr and awscli.version in done.output.stderr


async def test_a_psql_of_another_version_is_refused_with_both_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedded server's own psql (18.x) comes first on the step path: a real psql, not the pinned one.
    monkeypatch.setenv("UPM_STEP_PATH", f"{postgres_bin()}:{DEFAULT_PATH}")
    done = await execute(command("psql", "-X", "-c", "SELECT 1"))
    assert done.output.rc != 0
    assert f"pinned to version {PINS['psql'].version}" in done.output.stderr
    assert "reports 18 " in done.output.stderr  # the pin reads the major version
