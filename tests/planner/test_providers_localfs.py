"""The local writer (``upm-localfs``) never acts through a symbolic link, on any component."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

import upm_localfs as localfs
from services.guard.steps import step_path

ORIGINAL = "in no plan\n"


def writer(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["upm-localfs", *args], input=stdin, capture_output=True, text=True, timeout=30,
                          check=False, env={"PATH": step_path()})


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    victim = tmp_path / "outside" / "f"
    victim.write_text(ORIGINAL)
    victim.chmod(0o600)
    return victim


@pytest.mark.parametrize("args", [("write", "-m", "0644"), ("write",), ("chmod", "0777")])
def test_no_component_is_followed(tmp_path: Path, outside: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "last").symlink_to(outside)            # the last component
    (tmp_path / "mid").symlink_to(outside.parent)             # a middle one
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "x").symlink_to(tmp_path / "outside")
    for path in (tmp_path / "in" / "last", tmp_path / "mid" / "f", tmp_path / "deep" / "x" / "f"):
        done = writer(*args, str(path), stdin="overwritten\n")
        assert done.returncode == 1 and "symbolic link" in done.stderr and "rule path-symlink" in done.stderr
        assert outside.read_text() == ORIGINAL and outside.stat().st_mode & 0o777 == 0o600


def test_writes_in_place_and_removes_a_link_not_its_target(tmp_path: Path, outside: Path) -> None:
    assert writer("mkdir", "-m", "0750", str(tmp_path / "d")).returncode == 0
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    assert writer("write", "-m", "0640", str(tmp_path / "d" / "f"), stdin="hello\n").returncode == 0
    assert (tmp_path / "d" / "f").read_text() == "hello\n" and (tmp_path / "d" / "f").stat().st_mode & 0o777 == 0o640
    assert writer("ln", "-s", str(outside), str(tmp_path / "d" / "l")).returncode == 0
    assert writer("ln", "-sfn", str(tmp_path), str(tmp_path / "d" / "l")).returncode == 0
    assert os.readlink(tmp_path / "d" / "l") == str(tmp_path)
    assert writer("rm", "-f", str(tmp_path / "d" / "l")).returncode == 0
    assert writer("rm", "-f", str(tmp_path / "d" / "f")).returncode == 0
    assert writer("rmdir", str(tmp_path / "d")).returncode == 0
    assert not (tmp_path / "d").exists() and outside.read_text() == ORIGINAL


def test_a_hard_link_to_another_file_is_not_written(tmp_path: Path, outside: Path) -> None:
    os.link(outside, tmp_path / "hard")
    done = writer("write", str(tmp_path / "hard"), stdin="overwritten\n")
    assert done.returncode == 1 and "hard link" in done.stderr and outside.read_text() == ORIGINAL


def test_dot_dot_and_empty_components_are_refused() -> None:
    for bad in ("/tmp/../etc/passwd", "/tmp//x", "/tmp/./x", "relative"):
        with pytest.raises(localfs.Refused):
            localfs.components(bad)


def test_the_preflight_walk_names_the_first_link(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "mid").symlink_to(outside.parent)
    assert localfs.symlink_in(str(tmp_path / "mid" / "f")) == str(tmp_path / "mid")
    assert localfs.symlink_in(str(tmp_path / "not-yet" / "there")) is None
    assert localfs.symlink_in(str(outside)) is None


def test_serve_answers_each_request_line_and_never_acts_on_one_cut_short(tmp_path: Path) -> None:
    requests = io.BytesIO(b"".join([
        localfs.encode_request(["mkdir", "-m", "0750", str(tmp_path / "a")], b""),
        b"not json\n",
        b'{"argv": ["mkdir", 1], "stdin": ""}\n',
        localfs.encode_request(["mkdir"], b""),
        localfs.encode_request(["mkdir", "-m", "0750", str(tmp_path / "cut")], b"").rstrip(b"\n"),  # no newline: cut
    ]))
    replies = io.BytesIO()
    assert localfs.serve(requests, replies) == 0
    answers = [localfs.decode_reply(line) for line in replies.getvalue().splitlines(keepends=True)]
    assert [rc for rc, _, _ in answers] == [0, 2, 2, 2]
    assert b"not a request: not JSON" in answers[1][2] and b"'argv' must be a list of strings" in answers[2][2]
    assert b"required: -m" in answers[3][2]
    assert (tmp_path / "a").is_dir() and not (tmp_path / "cut").exists()


def test_the_serve_protocol_carries_any_bytes_and_refuses_what_is_not_a_reply() -> None:
    data = bytes(range(256)) * 3
    assert localfs.decode_request(localfs.encode_request(["write", "/x"], data)) == (["write", "/x"], data)
    assert localfs.decode_reply(localfs.encode_reply(-9, data, b"")) == (-9, data, b"")
    bad_replies = (b"[]\n", b'{"rc": true, "stdout": "", "stderr": ""}\n', b'{"rc": 0, "stdout": "@@", "stderr": ""}\n')
    for bad in bad_replies:
        with pytest.raises(ValueError):
            localfs.decode_reply(bad)
