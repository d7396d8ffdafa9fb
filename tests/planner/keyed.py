"""The planner configuration tests compile with: it supplies the SSH public key AKS creates need
(the planner has no default key; see services/planner/config.py)."""

from __future__ import annotations

from pathlib import Path

from services.planner import load_config

KEYED_FILE = Path(__file__).with_name("planner_keyed.yaml")
KEYED = load_config(KEYED_FILE)
