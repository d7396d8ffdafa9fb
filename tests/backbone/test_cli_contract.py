"""The CLI contract: every command has help, is in the README, and bad flags get a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from upm.cli import COMMANDS, main

README = (Path(__file__).parents[2] / "README.md").read_text()


def _commands() -> list[str]:
    return sorted(COMMANDS)


def test_the_design_cards_commands_exist() -> None:
    assert {"up", "down", "service", "submit", "status", "watch", "demo"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_and_is_in_the_readme(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert len(capsys.readouterr().out) > 80
    assert f"`upm {command}" in README, f"README does not document `upm {command}`"


def test_submit_without_request_or_file_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "--nats", "nats://127.0.0.1:1"]) == 2
    assert "give a REQUEST in words or --file SPEC" in capsys.readouterr().err


def test_an_unreachable_server_is_reported_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "0190a0a0-0000-7000-8000-000000000000", "--nats", "nats://127.0.0.1:1"]) == 3
    assert "cannot connect to NATS" in capsys.readouterr().err


def test_status_without_a_running_upm_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    assert main(["status", "0190c5b8-5d2c-7b3a-8e4f-123456789abc", "--data", str(tmp_path)]) == 3
    assert "upm up" in capsys.readouterr().err
