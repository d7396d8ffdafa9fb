"""Every `upm` command refuses bad flag values and bad files with a message and exit 2 (a pack that
is not one fails verification: exit 1), never a traceback, and within a bounded time.

Most cases run in-process through :func:`upm.cli.main` (the code the console script runs);
a representative subset runs the real ``upm`` entry point as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from upm import cli

NO_NATS = ("--nats", "nats://127.0.0.1:1")  # nothing listens: input must be refused before connecting
CID = "0190c5b8-5d2c-7b3a-8e4f-123456789abc"
GOOD_SPEC = "resources:\n  - type: local_directory\n    path: /tmp/upm-hostile-x\n"
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
FILES = {
    "binary.yaml": bytes(range(256)) * 4,
    "binary.json": b"\xff\xfe{" * 100,
    "deep.yaml": b"a: " + b"[" * 3000 + b"]" * 3000,
    "deep.json": b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}",
    "bomb.yaml": BOMB.encode(),
    "dup.yaml": b"resources: []\nresources: []\n",
    "dup.json": b'{"resources": [], "resources": []}',
    "bad.json": b"{not json",
    "list.json": b"[1, 2]",
}
BAD_FILES = [*FILES, "dir", "/dev/zero", "missing.yaml"]


def _file_cases() -> list[tuple[str, list[str], int]]:
    cases: list[tuple[str, list[str], int]] = []
    for f in BAD_FILES:
        cases += [(f, argv, 2) for argv in (
            ["submit", "--file", "{f}", *NO_NATS], ["plan", "--file", "{f}"], ["plan", "x", "--config", "{f}"],
            ["plan", "diff", "{f}", "{f}"], ["policy", "test", "--file", "{f}"],
            ["policy", "test", "--file", "{good}", "--config", "{f}"], ["access", "check", "{f}"],
            ["access", "nats-config", "{f}"], ["up", "--access", "{f}", "--data", "{tmp}/up"],
            ["serve", "--tokens", "{f}", *NO_NATS], ["evidence", "verify", "{good}", "--trust", "{f}"],
        )]
        cases.append((f, ["evidence", "verify", "{f}"], 2 if f in ("dir", "/dev/zero", "missing.yaml") else 1))
    return cases


FLAG_CASES = [
    *[[cmd, *args, "--timeout", t, *NO_NATS] for t in ("-5", "nan", "inf", "abc", "0")
      for cmd, *args in (["submit", "x", "--wait"], ["sql", "select 1"], ["kpi"], ["score"])],
    ["watch", "--count", "-1", *NO_NATS], ["watch", "--count", "x", *NO_NATS], ["watch", "nope", *NO_NATS],
    ["sql", "select 1", "--max-rows", "0", *NO_NATS], ["sql", "", *NO_NATS],
    ["kpi", "--since", "notadate", *NO_NATS], ["score", "--until", "2025-13-45", *NO_NATS],
    ["serve", "--port", "70000", *NO_NATS], ["serve", "--port", "x", *NO_NATS],
    ["policy", "test", "--file", "{good}", "--at", "never"], ["policy", "test", "--file", "{good}", "--env", "moon"],
    ["audit", "verify", "--expect-head", "x", *NO_NATS], ["audit", "verify", "--public-key", "zz", *NO_NATS],
    ["evidence", "verify", "{good}", "--public-key", "zz"], ["evidence", "notanid", *NO_NATS],
    ["up", "--data", "/proc/self"], ["up", "--data", "/dev/null"], ["up", "--with", "moon", "--data", "{tmp}/w"],
    ["status", "not-a-uuid", *NO_NATS], ["approve", "x", *NO_NATS], ["deny", "x", *NO_NATS],
    ["resume", "x", *NO_NATS], ["rollback", "x", *NO_NATS], ["cancel", "x", *NO_NATS], ["verify", "x", *NO_NATS],
    ["approvals", "x", *NO_NATS], ["submit", *NO_NATS], ["submit", "x", "--env", "moon", *NO_NATS],
    ["submit", "x", "--source", "email", *NO_NATS], ["submit", "x", "--visibility", "public", *NO_NATS],
    ["plan", "x", "--variant", "moon"], ["service", "nosuch"], ["nosuch"], [],
    *[[*cmd, "--tenant", bad, *NO_NATS] for bad in ("BAD", "a..b", "x" * 100, "_system", "a b", "-x")
      for cmd in (["watch"], ["drift"], ["sql", "select 1"], ["kpi"], ["score"], ["submit", "x"], ["status", CID],
                  ["approve", CID], ["evidence", CID], ["verify", CID], ["cancel", CID], ["approvals", CID])],
    *[["plan", "x", "--tenant", bad] for bad in ("BAD", "_system")],
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("hostile")
    for name, body in FILES.items():
        (folder / name).write_bytes(body)
    (folder / "dir").mkdir()
    (folder / "good.yaml").write_text(GOOD_SPEC)
    return {"folder": str(folder), "good": str(folder / "good.yaml")}


def _argv(template: list[str], files: dict[str, str], f: str = "") -> list[str]:
    path = f if f.startswith("/") else f"{files['folder']}/{f}"
    return [a.format(f=path, good=files["good"], tmp=files["folder"]) for a in template]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    started = time.monotonic()
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse refusing a flag
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    assert time.monotonic() - started < 10, argv
    return code, err


@pytest.mark.parametrize(("f", "template", "code"), _file_cases(), ids=lambda v: v if isinstance(v, str) else None)
def test_bad_files_are_refused_with_a_message(f: str, template: list[str], code: int, files: dict[str, str],
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPM_DEBUG", raising=False)
    got, err = _run(_argv(template, files, f), capsys)
    assert got == code, err
    assert err.startswith("upm") and len(err) > 20 and "Traceback" not in err and "failed unexpectedly" not in err


@pytest.mark.parametrize("template", FLAG_CASES, ids=lambda v: " ".join(v)[:60])
def test_bad_flag_values_are_refused_with_a_message(template: list[str], files: dict[str, str],
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPM_DEBUG", raising=False)
    code, err = _run(_argv(template, files), capsys)
    assert code == 2, err
    assert "upm" in err and "Traceback" not in err and "failed unexpectedly" not in err


def test_an_unforeseen_error_is_one_line_and_exit_2_unless_debugging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UPM_DEBUG", raising=False)

    def broken(*_: object, **__: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("upm.commands.planning.compile_intent", broken)
    code, err = _run(["plan", "create directory /tmp/x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "ZeroDivisionError" in err and "UPM_DEBUG=1" in err
    monkeypatch.setenv("UPM_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["plan", "create directory /tmp/x"])


SUBPROCESS_CASES = [
    ["submit", "--file", "{folder}/deep.json", *NO_NATS], ["submit", "--file", "{folder}/bomb.yaml", *NO_NATS],
    ["submit", "--file", "/dev/zero", *NO_NATS], ["evidence", "verify", "{folder}/dir"],
    ["kpi", "--since", "notadate", *NO_NATS], ["submit", "x", "--timeout", "nan", "--wait", *NO_NATS],
    ["up", "--data", "/proc/self"], ["watch", "--tenant", "Bad!", *NO_NATS],
]


@pytest.mark.parametrize("template", SUBPROCESS_CASES, ids=lambda v: " ".join(v)[:50])
def test_the_real_entry_point_refuses_without_a_traceback(template: list[str], files: dict[str, str]) -> None:
    upm = Path(sys.executable).with_name("upm")
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "UPM_DEBUG", "UPM_ACCESS")}
    argv = [a.format(folder=files["folder"]) for a in template]
    started = time.monotonic()
    done = subprocess.run([str(upm), *argv], capture_output=True, text=True, timeout=30, env=env, check=False)
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr
    assert "upm" in done.stderr and "Traceback" not in done.stderr
