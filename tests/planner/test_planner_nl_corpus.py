"""The natural-language corpus (nl_corpus.yaml): every phrasing compiles to the resources it names,
covers every resource type and action of the catalog, and compiles byte-identically across processes
and hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from providers import CATALOG, facets_of
from services.planner import CompileInput, compile_intent
from services.planner.nl import parse_request
from tests.planner.keyed import KEYED

CORPUS_FILE = Path(__file__).with_name("nl_corpus.yaml")
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_FILE.read_text(encoding="utf-8"))


def corpus_hashes() -> list[str]:
    """The plan hash of every corpus phrasing, in corpus order."""
    return [compile_intent(CompileInput(request=e["request"]), KEYED).hash for e in CORPUS]


def _matches(item: dict[str, Any], found: Any) -> bool:
    want = {k: v for k, v in item.items() if k not in {"type", "action"}}
    fields = {**found.fields, **({"region": found.targets[0]} if found.targets else {})}
    return (
        found.type == item["type"]
        and found.action == item["action"]
        and all(fields.get(k) == v or str(fields.get(k)) == str(v) for k, v in want.items())
    )


@pytest.mark.parametrize("entry", CORPUS, ids=[e["request"][:70] for e in CORPUS])
def test_phrasing_compiles_to_its_expected_resources(entry: dict[str, Any]) -> None:
    intent = parse_request(entry["request"])
    assert len(intent.resources) == len(entry["expect"]), intent.resources
    for item in entry["expect"]:
        assert any(_matches(item, found) for found in intent.resources), (item, intent.resources)
    plan = compile_intent(CompileInput(request=entry["request"]), KEYED)
    kinds = {s.resource.type for s in plan.steps} | {p.resource.type for p in plan.resources_needed}
    for item in entry["expect"]:
        family = {item["type"], *(f.name for f in facets_of(item["type"]))}
        assert kinds & family, (item, kinds)


def test_corpus_covers_every_type_and_action_of_the_catalog() -> None:
    assert len(CORPUS) >= 300
    covered = {(i["type"], i["action"]) for e in CORPUS for i in e["expect"]}
    wanted = set()
    for rtype in CATALOG.values():
        if rtype.facet_of or not rtype.nouns:
            continue
        wanted |= (
            {(rtype.name, "create"), (rtype.name, "delete")} if rtype.delete else {(rtype.name, "create")}
        )
        if rtype.update is not None or any(f.facet_field for f in facets_of(rtype.name)):
            wanted.add((rtype.name, "update"))
    assert sorted(wanted - covered) == []


def test_corpus_compiles_byte_identically_across_hash_seeds_and_processes() -> None:
    code = "import json, tests.planner.test_planner_nl_corpus as c; print(json.dumps(c.corpus_hashes()))"
    runs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        )
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == corpus_hashes()
    assert len(runs[0]) == len(CORPUS)
