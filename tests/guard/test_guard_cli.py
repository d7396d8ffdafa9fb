"""`upm guard "COMMAND" [--json]`: 0 when allowed, 2 when refused, with the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.guard import DEFAULT_PINS, Pin, PinTable
from upm.cli import run
from upm.commands.guard import command


def _guard(capsys: pytest.CaptureFixture[str], *argv: str, pins: PinTable = DEFAULT_PINS) -> tuple[int, str]:
    code = run(command(pins=pins), argv, prog="upm guard")
    return code, capsys.readouterr().out


def test_allowed_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _guard(capsys, "cat /etc/hosts | jq .x | wc -l", "--json")
    verdict = json.loads(out)
    assert code == 0
    assert verdict["allowed"] is True and verdict["rule"] is None
    assert verdict["stages"] == [["cat", "/etc/hosts"], ["jq", ".x"], ["wc", "-l"]]


def test_refused_command_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _guard(capsys, "ls; rm -rf /", "--json")
    verdict = json.loads(out)
    assert code == 2
    assert (verdict["allowed"], verdict["rule"], verdict["token"], verdict["position"]) == (
        False,
        "meta",
        ";",
        2,
    )
    assert "position 2" in verdict["reason"]


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        ("cat f | sh", "pipe-allow-list"),
        ("cat f | sort -o /etc/passwd", "filter-option"),
        ("cat f | head /etc/shadow", "filter-operand"),
        ("kubectl get pods", "unpinned"),
        ("bash -c x", "forbidden-binary"),
    ],
)
def test_text_output_says_why(capsys: pytest.CaptureFixture[str], command: str, rule: str) -> None:
    code, out = _guard(capsys, command)
    assert code == 2 and out.startswith(f"refused [{rule}]: ")


def test_allow_replaces_the_allow_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert _guard(capsys, "cat f | grep x", "--allow", "grep")[0] == 0
    assert _guard(capsys, "cat f | wc -l", "--allow", "grep")[0] == 2
    code, out = _guard(capsys, "cat f | tr a b", "--allow", "tr")
    assert code == 2 and "refused [policy]" in out


def test_pins_can_be_given_at_registration(capsys: pytest.CaptureFixture[str]) -> None:
    pins = DEFAULT_PINS.with_pins(Pin.versioned("kubectl-1.29"))
    code, out = _guard(capsys, "kubectl-1.29 create namespace team-alpha", pins=pins)
    assert code == 0 and out.startswith("passes the guard rails: kubectl-1.29 create namespace team-alpha")


def test_a_pass_says_what_was_checked_and_what_was_not(capsys: pytest.CaptureFixture[str]) -> None:
    """`upm guard "rm -rf /"` passes the syntax rules; it must not read as a safety verdict."""
    code, out = _guard(capsys, "rm -rf /")
    assert code == 0 and "allowed:" not in out
    assert "✓ no live shell metacharacters" in out and "✓ every program is pinned: rm" in out
    assert "not checked: what the command does" in out and "`rm -rf /` passes them" in out


def test_secrets_in_the_command_are_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _guard(capsys, "ls --token=s3cr3tTOKEN x", "--json")
    assert code == 0 and "s3cr3tTOKEN" not in out and "--token=***" in out
    code, out = _guard(capsys, "ls --token=s3cr3tTOKEN | sh", "--json")
    assert code == 2 and "s3cr3tTOKEN" not in out


def test_with_a_tenant_the_executor_scope_rules_apply(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    scope = tmp_path / "scope.yaml"
    scope.write_text(f"roots: [{tmp_path}]\n")
    monkeypatch.setenv("UPM_SCOPE_CONFIG", str(scope))
    from services.guard.steps import pin_table

    code, out = _guard(capsys, "rm -rf /", "--tenant", "acme", pins=pin_table())
    assert code == 2 and "refused [path-scope]" in out and "upm-localfs" in out
    code, out = _guard(capsys, "upm-localfs mkdir -m 0755 /etc/x", "--tenant", "acme", pins=pin_table())
    assert code == 2 and "rule path-scope: /etc/x is outside tenant acme's roots" in out
    code, out = _guard(capsys, f"upm-localfs mkdir -m 0755 {tmp_path}/app", "--tenant", "acme", pins=pin_table())
    assert code == 0 and f"tenant acme's scope: {tmp_path}/app is below its roots" in out
