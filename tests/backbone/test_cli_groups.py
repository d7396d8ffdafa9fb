"""The `upm` command line on click: a lazy registry (`upm --help` and `upm submit --help` load no service,
no NATS, no DuckDB), real subcommands where positionals used to fake them (`plan diff`, `evidence verify`,
`audit verify`, `access check|nats-config`, `policy test`), and each command showing only its own flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from upm import cli

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("duckdb", "nats", "anyio", "yaml", "services.common.client", "services.gateway", "services.planner",
         "services.security.access", "projections", "upm.app", "events.model")


def _loaded_by(argv: list[str]) -> set[str]:
    """The modules `upm ARGV` has imported when it exits (run in a fresh interpreter)."""
    probe = (f"import sys\nfrom upm import cli\ntry:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
             "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Usage: upm" in done.stdout, done.stderr
    return set(done.stderr.split())


@pytest.mark.parametrize("argv", [["--help"], ["submit", "--help"]], ids=" ".join)
def test_help_imports_no_service_no_nats_no_duckdb(argv: list[str]) -> None:
    loaded = _loaded_by(argv)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == [], f"`upm {' '.join(argv)}` imported {heavy}"
    commands = {m for m in loaded if m.startswith("upm.commands.")}
    assert commands == (set() if argv == ["--help"] else {"upm.commands.core"})


@pytest.mark.parametrize("argv", [["approve", "--help"], ["approvals", "--help"], ["policy", "test", "--help"],
                                  ["verify", "--help"], ["drift", "--help"], ["access", "check", "--help"],
                                  ["rollback", "--help"], ["resume", "--help"], ["plan", "--help"],
                                  ["plan", "diff", "--help"]],
                         ids=" ".join)
def test_the_help_of_commands_that_reach_services_loads_none_of_them(argv: list[str]) -> None:
    """Their handlers import what they need when they run (`upm access --help` took 0.44 s, `approve` 0.34 s)."""
    loaded = _loaded_by(argv)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m.startswith((*HEAVY, "services.preflight",
                                                                                  "services.verifier")))
    assert heavy == [], f"`upm {' '.join(argv)}` imported {heavy}"


def test_the_top_help_lists_every_command_with_its_short_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert all(f"  {name} " in out for name in cli.COMMANDS)
    assert "deny a change (a denied change never executes)" in out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_registered_command_resolves_to_a_click_command(name: str) -> None:
    command = cli.upm.get_command(click.Context(cli.upm), name)
    assert isinstance(command, click.Command) and command.help, name


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("group", "subcommands"), [
    ("plan", ["compile", "diff"]), ("evidence", ["get", "verify"]), ("audit", ["verify"]),
    ("access", ["check", "nats-config"]), ("policy", ["test"]),
])
def test_groups_list_their_subcommands(group: str, subcommands: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys, group)
    listed = out.split("Commands:")[1].split()
    assert all(name in listed for name in subcommands), out


def test_each_subcommand_shows_only_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    verify = _help(capsys, "evidence", "verify")
    assert "--public-key" in verify and "--trust" in verify
    assert not any(flag in verify for flag in ("--nats", "--as", "--tenant", "--output"))
    get = _help(capsys, "evidence", "get")
    assert all(flag in get for flag in ("--nats", "--as", "--tenant", "--output"))
    assert "--graph" in _help(capsys, "plan").split("Options of compile (the default)")[1]
    diff = _help(capsys, "plan", "diff")
    assert "A B" in diff and not any(flag in diff for flag in ("--graph", "--simulate", "--file", "--initiator"))
    nats_config = _help(capsys, "access", "nats-config")
    assert "--output" in nats_config and "--json" not in nats_config


def test_plan_diff_is_a_subcommand_and_plan_words_still_compile(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("resources:\n  - type: local_directory\n    path: /tmp/upm-groups-a\n")
    b.write_text("resources:\n  - type: local_directory\n    path: /tmp/upm-groups-a\n"
                 "  - type: local_directory\n    path: /tmp/upm-groups-b\n")
    assert cli.main(["plan", "diff", str(a), str(b), "--json"]) == 0
    assert [s["id"] for s in json.loads(capsys.readouterr().out)["added"]] == ["local_directory:local:/tmp/upm-groups-b"]
    assert cli.main(["plan", "Create directory /tmp/upm-groups-c", "--json"]) == 0  # the default: compile
    assert json.loads(capsys.readouterr().out)["steps"]
    assert cli.main(["plan", "--file", str(a), "--json"]) == 0  # compile's flags before any word
    assert cli.main(["plan", "compile", "--file", str(a), "--json"]) == 0


def test_lazy_choices_show_the_values_their_module_holds() -> None:
    from events.commands import ENVIRONMENTS
    from upm.app import PROCESS_NAMES
    from upm.commands import core

    assert core.ENVIRONMENTS.metavar == f"[{'|'.join(ENVIRONMENTS)}]"  # what `upm submit --help` shows
    assert tuple(core.ENVIRONMENTS.choices()) == ENVIRONMENTS and tuple(core.SERVICES.choices()) == PROCESS_NAMES


def test_flag_checks_keep_their_messages_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["watch", "--count", "x"], "'x' is not a whole number of 0 or more"),
        (["submit", "x", "--timeout", "nan"], "'nan' is not a number of seconds above 0"),
        (["evidence", "notanid"], "'notanid' is not a change id: give the UUID `upm submit` printed"),
        (["audit", "verify", "--expect-head", "x"], "'x' is not a head: give SIZE:ROOT"),
        (["submit", "x", "--env", "moon"], "'moon' is not one of 'dev', 'test', 'staging', 'prod'"),
        (["service", "nosuch"], "'nosuch' is not one of"),
        (["sql", "select 1", "--json", "--csv"], "--json and --csv are exclusive"),
    ):
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("argv", [["evidence", "verify", "--help"], ["sql", "--help"], ["kpi", "--help"],
                                  ["audit", "verify", "--help"], ["serve", "token", "add", "--help"]])
def test_help_of_the_read_commands_loads_none_of_what_they_run(argv: list[str]) -> None:
    """Their flags are upm.commands.read's; what they do (DuckDB, NATS, the auditor's evidence code) is
    upm.commands.reading's, imported when one runs (`upm evidence verify --help` took 540 ms, 19x a bare
    interpreter, importing it all)."""
    loaded = _loaded_by(argv)
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("duckdb", "nats") or m.startswith(
        ("services.auditor", "upm.commands.reading", "projections.sqlservice", "upm.natsauth")))
    assert heavy == [], f"`upm {' '.join(argv)}` imported {heavy}"


def test_connecting_without_tls_loads_no_x509() -> None:
    """Every CLI call that reaches the bus imports the connection module: X.509 (cryptography, ~35 ms)
    only when TLS is on."""
    probe = "import sys\nimport services.common.connection\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    assert not [m for m in done.stdout.split() if m.startswith(("cryptography", "services.security.tls"))]
