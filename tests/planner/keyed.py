"""The planner configuration tests compile with: it supplies the SSH public key AKS creates need
(the planner has no default key; see services/planner/config.py)."""

from __future__ import annotations

from pathlib import Path

from services.planner import load_config

KEYED_FILE = Path(__file__).with_name("planner_keyed.yaml")
KEYED = load_config(KEYED_FILE)


def upm(argv: list[str]) -> int:
    """Run a planner CLI command (``upm plan ...`` gets ``--config KEYED_FILE``) in-process."""
    from upm.cli import main

    return main([*argv, "--config", str(KEYED_FILE)] if argv[:1] == ["plan"] else argv)
