"""`upm conformance --data`: what a running instance (its `upm up` state) must have to play the set (pure)."""

from __future__ import annotations

import json
from pathlib import Path

from upm import conformance


def test_an_instance_with_the_printed_configuration_has_no_problem_and_each_difference_is_named(tmp_path: Path) -> None:
    manifest = conformance.load_manifest()
    conformance.print_config(tmp_path / "cfg", manifest, ("aws",))
    files = {env: str(tmp_path / "cfg" / name)
             for env, (name, _) in conformance.config_bodies({**manifest.people, "initiator": manifest.initiator},
                                                              ("aws",)).items()}
    state = {"config": files, "secret_names": ["CONF_TOKEN"], "targets": {"aws": {}}, "security": "open"}
    assert conformance.instance_problems(state, manifest, ("aws",)) == []

    verifier = json.loads(Path(files["UPM_VERIFIER_CONFIG"]).read_text())
    verifier["drift"]["interval_s"] = 30.0
    Path(files["UPM_VERIFIER_CONFIG"]).write_text(json.dumps(verifier))
    problems = conformance.instance_problems(state | {"secret_names": [], "targets": {}}, manifest, ("aws", "postgres"))
    assert any(p.startswith(f"UPM_VERIFIER_CONFIG {files['UPM_VERIFIER_CONFIG']}: drift is ") and '"interval_s": 30.0'
               in p for p in problems), problems
    assert any("UPM_EXECUTOR_CONFIG" in p and "credentials" in p for p in problems), problems  # no postgres broker
    assert any("no secret CONF_TOKEN" in p for p in problems)
    assert any("no aws target" in p for p in problems) and any("no postgres target" in p for p in problems)
