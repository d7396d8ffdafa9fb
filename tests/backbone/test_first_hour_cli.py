"""Issue 22, the parts of the first hour that are the command line's own: every message in the user's
words, output that scripts can use, and machine-readable errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from upm.cli import main
from upm.output import emit, render_table

UPM = [sys.executable, "-m", "upm.cli"]
ROOT = Path(__file__).resolve().parents[2]


def test_version_is_an_answer_not_an_error() -> None:
    done = subprocess.run([*UPM, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("upm ") and not done.stderr


def test_rows_keep_their_column_order_and_csv_ends_lines_with_lf(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    rows = [{"z": 1, "a": 2}]
    emit(rows, argparse.Namespace(json=False, csv=False))
    assert capsys.readouterr().out.splitlines()[0].split() == ["z", "a"]
    emit(rows, argparse.Namespace(json=False, csv=True))
    assert capsys.readouterr().out == "z,a\n1,2\n"  # LF only: `while read` loops see no \r
    assert render_table(rows).splitlines()[0].split() == ["z", "a"]


def test_errors_are_json_under_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "01a24e70-0000-7000-8000-000000000000", "--json", "--nats", "nats://127.0.0.1:1"])
    out, err = capsys.readouterr()
    body = json.loads(out)
    assert code == 3 and body["ok"] is False and body["error"]["exit"] == 3
    assert "cannot connect to NATS" in body["error"]["message"] and err == ""
    code = main(["plan", "Create flux capacitor delorean", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 2 and "not a resource type" in body["error"]["message"]


def test_a_failed_connect_is_said_once_in_our_words() -> None:
    done = subprocess.run([*UPM, "status", "01a24e70-0000-7000-8000-000000000000", "--nats", "nats://127.0.0.1:1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("upm: cannot connect to NATS")
    assert "Errno" not in done.stderr.splitlines()[0][:20]


async def test_an_unknown_change_id_is_not_found(pipeline: object, nats_server: object,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import anyio

    url = nats_server.url  # type: ignore[attr-defined]
    code = await anyio.to_thread.run_sync(
        main, ["status", "01a24e70-0000-7000-8000-000000000000", "--nats", url, "--as", "root"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("upm: not found: no change 01a24e70-0000-7000-8000-000000000000")
    assert "rule visibility" not in err and "field caller" not in err


async def test_wait_shows_the_id_who_must_approve_and_stops_with_its_own_code(
    pipeline: object, nats_server: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    target = tmp_path / "gone"
    target.mkdir()
    url = nats_server.url  # type: ignore[attr-defined]
    code = await anyio.to_thread.run_sync(main, [
        "submit", f"Delete directory {target}", "--env", "staging", "--wait", "--timeout", "4",
        "--nats", url, "--as", "alice"])  # a staging delete waits for an approver (a dev one goes through)
    out, err = capsys.readouterr()
    first = out.splitlines()[0]
    assert first.startswith("change ") and "submitted" in first
    change_id = first.split()[1]
    assert "waiting for people" in out and f"upm approve {change_id} --tenant default --as <approver>" in out
    assert code == 5 and "stopped waiting after 4s" in err and f"upm watch {change_id}" in err
    assert "Traceback" not in out + err and target.exists()


def test_the_readme_links_only_to_files_in_the_repository() -> None:
    import re

    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), target
