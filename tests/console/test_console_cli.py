"""`upm serve` and `upm up --console` as real processes (issue 25): the console starts without a tokens
file in open mode and says so on every page, prints its URL, refuses a too-short token at start
(never a process that dies in the background), makes tokens, and under `upm up` it is one more
supervised process that comes back on the same port after `kill -9`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

UPM = [sys.executable, "-m", "upm.cli"]
ROOT = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("UPM_DATA", "UPM_ACCESS", "NATS_URL")}
    return base | extra


def get(url: str, accept: str = "text/html") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def eventually_get(url: str, within: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + within
    while True:
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_up_console_is_a_supervised_open_console_with_a_banner(tmp_path: Path) -> None:
    data = tmp_path / "upm"
    up = subprocess.run([*UPM, "up", "--data", str(data), "--console"], capture_output=True, text=True,
                        env=env(), cwd=ROOT, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((data / "state.json").read_text())
        url = state["console"]
        assert f"console: {url}" in up.stdout
        for page in ("changes", "approvals", "kpi", "drift"):
            status, body = eventually_get(url + page)
            assert status == 200 and "OPEN MODE" in body and 'id="mode-banner"' in body, page
        status, body = get(url + "kpi", accept="application/json")  # the permalink still answers JSON
        assert status == 200 and len(json.loads(body)) == 10
        first = state["pids"]["console"]
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while json.loads((data / "state.json").read_text())["pids"].get("console") in (first, None):
            assert time.monotonic() < deadline, "the supervisor did not restart the console"
            time.sleep(0.1)
        status, _ = eventually_get(url + "changes")  # the same port again
        assert status == 200
    finally:
        down = subprocess.run([*UPM, "down", "--data", str(data)], capture_output=True, text=True, env=env(),
                              cwd=ROOT, timeout=60)
    assert "console" in down.stdout


def test_serve_prints_its_url_without_a_tokens_file_and_refuses_short_tokens_at_start(tmp_path: Path) -> None:
    data = tmp_path / "upm"
    data.mkdir()
    (data / "state.json").write_text(json.dumps({"url": "nats://127.0.0.1:1"}))  # nothing listens: no bus needed yet
    (data / "serve_tokens.json").write_text(json.dumps({"short": "acme"}))
    refused = subprocess.run([*UPM, "serve", "--data", str(data), "--port", "0"], capture_output=True, text=True,
                             env=env(), cwd=ROOT, timeout=60)
    assert refused.returncode == 2 and "at least 16 characters" in refused.stderr
    assert "upm serve token add NAME" in refused.stderr
    up = subprocess.run([*UPM, "up", "--data", str(data), "--console"], capture_output=True, text=True,
                        env=env(), cwd=ROOT, timeout=60)
    assert up.returncode == 2 and "--console" in up.stderr and "at least 16 characters" in up.stderr
    assert not (data / "run").exists() or not list((data / "run").glob("*.ready"))

    (data / "serve_tokens.json").unlink()
    access = tmp_path / "access.yaml"
    access.write_text("tenants: {acme: {alice: [requester]}}\n")
    # a deployment started with `upm up --access`: the console takes its rules from the data folder, so it
    # never serves it as an open console (anyone acting as anyone through upm-serve)
    (data / "state.json").write_text(json.dumps({"url": "nats://127.0.0.1:1", "access": str(access)}))
    secure = subprocess.run([*UPM, "serve", "--data", str(data), "--port", "0"], capture_output=True, text=True,
                            env=env(), cwd=ROOT, timeout=60)
    assert secure.returncode == 2 and "secure mode" in secure.stderr and "token add NAME" in secure.stderr
    made = subprocess.run([*UPM, "serve", "token", "add", "alice", "--data", str(data)], capture_output=True,
                          text=True, env=env(), cwd=ROOT, timeout=60)
    assert made.returncode == 0, made.stderr
    assert json.loads((data / "serve_tokens.json").read_text()) == {made.stdout.split()[-1]: "alice"}
    stranger = subprocess.run([*UPM, "serve", "token", "add", "mallory", "--data", str(data)], capture_output=True,
                              text=True, env=env(), cwd=ROOT, timeout=60)
    assert stranger.returncode == 2 and "not an identity named in the access file" in stranger.stderr
