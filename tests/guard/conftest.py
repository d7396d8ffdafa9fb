"""Helpers for the guard tests: real executable scripts, pinned by absolute path."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from guard_helpers import MakeScript


@pytest.fixture
def make_script(tmp_path: Path) -> MakeScript:
    """Write an executable Python script that answers ``--version`` with ``fake 1.0``."""

    def make(name: str, body: str, version: str = "1.0") -> Path:
        path = tmp_path / name
        path.write_text(
            f"#!{sys.executable}\n"
            "import os, sys, time, signal\n"
            "if sys.argv[1:] == ['--version']:\n"
            f"    print('{name} {version}')\n"
            "    sys.exit(0)\n" + textwrap.dedent(body)
        )
        path.chmod(0o755)
        return path

    return make
