"""Determinism: one input gives one plan hash, in-process, across processes and hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import msgspec

from services.planner import CompileInput, compile_intent
from tests.planner.keyed import KEYED, KEYED_FILE

REQUEST = "Create AKS cluster aks-demo in eastus and namespace team-alpha"
SPEC: dict[str, Any] = {
    "variant": "canary",
    "targets": ["prod-east", "prod-west", "prod-eu"],
    "resources": [
        {"type": "k8s_namespace", "name": "team-alpha"},
        {
            "type": "k8s_deployment",
            "name": "web",
            "namespace": "team-alpha",
            "image": "nginx:1.27",
            "replicas": 3,
        },
        {
            "type": "aws_s3_bucket",
            "name": "logs-acme",
            "versioning": True,
            "tags": {"team": "alpha", "env": "prod"},
        },
        {"type": "pg_role", "name": "analyst"},
        {"type": "pg_database", "name": "orders"},
        {"type": "pg_grant", "role": "analyst", "database": "orders"},
        {"type": "local_directory", "path": "/srv/app", "mode": "0750"},
        {"type": "local_file", "path": "/srv/app/app.conf", "content": "x = 1\n"},
    ],
}
_CHILD = (
    "from services.planner import CompileInput, compile_intent\n"
    "from tests.planner.keyed import KEYED\n"
    "import json, sys\n"
    "spec = json.loads(sys.argv[1])\n"
    "print(compile_intent(CompileInput(request=sys.argv[2]), KEYED).hash, compile_intent(CompileInput(spec=spec), KEYED).hash)\n"
)


def test_one_input_compiled_1000_times_gives_one_hash() -> None:
    hashes = {compile_intent(CompileInput(request=REQUEST), KEYED).hash for _ in range(1000)}
    assert len(hashes) == 1


def test_fresh_processes_with_different_hash_seeds_agree() -> None:
    import json

    expected = (
        f"{compile_intent(CompileInput(request=REQUEST), KEYED).hash} {compile_intent(CompileInput(spec=SPEC), KEYED).hash}"
    )
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(SPEC), REQUEST],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert out.stdout.strip() == expected


def test_reordering_resources_in_a_spec_gives_the_same_plan() -> None:
    base = compile_intent(CompileInput(spec=SPEC), KEYED)
    reordered = {**SPEC, "resources": list(reversed(SPEC["resources"]))}
    rotated = {**SPEC, "resources": SPEC["resources"][3:] + SPEC["resources"][:3]}
    assert compile_intent(CompileInput(spec=reordered), KEYED) == base
    assert compile_intent(CompileInput(spec=rotated), KEYED) == base


def test_reordering_clauses_of_a_request_gives_the_same_plan() -> None:
    a = compile_intent(
        CompileInput(request="Create S3 bucket logs-acme and SQS queue jobs and DynamoDB table sessions"), KEYED)
    b = compile_intent(
        CompileInput(request="Create DynamoDB table sessions, SQS queue jobs and S3 bucket logs-acme"), KEYED)
    assert a.steps == b.steps and a.hash != ""


def test_the_determinism_witness_compiles_with_the_planner_services_configuration() -> None:
    line = msgspec.json.encode(CompileInput(request=REQUEST)) + b"\n"
    answers = []
    for config in (str(KEYED_FILE), ""):
        env = {**os.environ, "PYTHONHASHSEED": "7", "UPM_PLANNER_CONFIG": config}
        out = subprocess.run(
            [sys.executable, "-m", "services.planner.recompile"], input=line, env=env, capture_output=True, check=True
        )
        answers.append(json.loads(out.stdout))
    assert answers[0] == {"hash": compile_intent(CompileInput(request=REQUEST), KEYED).hash}
    assert "ssh_public_key" in answers[1]["error"]
