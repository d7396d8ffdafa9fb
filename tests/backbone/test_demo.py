"""The main job: `upm demo` on embedded defaults ends with every change's expected outcome and
leaves nothing running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_upm_demo_runs_every_story_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "UPM_PREFLIGHT_CONFIG")}
    done = subprocess.run([sys.executable, "-m", "upm.cli", "demo", "--data", str(tmp_path / "demo"), "--json"],
                          capture_output=True, text=True, env=env, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert [r["outcome"] for r in rows] == ["succeeded", "succeeded", "rejected", "rejected", "succeeded",
                                            "rolled_back", "succeeded"]
    assert "nothing left running" in done.stderr
    assert "  console: http://127.0.0.1:" in done.stderr and "sign in as bob with " in done.stderr  # issue 25
    assert "security: secure" in done.stderr  # it runs as `upm up --access` does
    assert "--as dave: refused (server-refused)" in done.stderr  # a requester cannot approve
    assert "--as bob: ok" in done.stderr and "--as carol: ok" in done.stderr
    assert "--as dave: refused (visibility)" in done.stderr  # the private change, hidden from him
    assert "--as audrey: sees it (succeeded)" in done.stderr  # and shown to the auditor
    assert not (tmp_path / "demo" / "state.json").exists()
