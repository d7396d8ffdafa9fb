"""The registry of hosted services is lazy: a service's process imports its own stack only, and the
supervisor and the composition root import none (each of the eight processes of `upm up` paid ~76 MiB
for importing every service before)."""

from __future__ import annotations

import json
import subprocess
import sys

from upm import app

PIPELINE_PACKAGES = ("services.planner", "services.preflight", "services.executor", "services.verifier",
                     "services.auditor", "services.gateway", "projections.projector", "duckdb")


def _loaded(code: str) -> list[str]:
    """The pipeline modules a fresh interpreter holds after running ``code``."""
    probe = (f"import json, sys\n{code}\n"
             f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({PIPELINE_PACKAGES!r}))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def _packages(modules: list[str]) -> set[str]:
    return {p for p in PIPELINE_PACKAGES if any(m == p or m.startswith(p + ".") for m in modules)}


def test_the_composition_root_and_the_supervisor_import_no_service() -> None:
    assert _loaded("import upm.app, upm.supervisor, upm.health") == []


def test_a_service_spec_imports_its_own_stack_only() -> None:
    loaded = _packages(_loaded("from upm import app\nassert app.PIPELINE['planner']().name == 'planner'"))
    assert loaded == {"services.planner"}
    loaded = _packages(_loaded("from upm import app\nassert app.PIPELINE['executor']().name == 'executor'"))
    assert loaded == {"services.executor"}


def test_every_lazy_spec_resolves_to_its_service() -> None:
    assert {name: make().name for name, make in app.PIPELINE.items()} == {name: name for name in app.PIPELINE}
