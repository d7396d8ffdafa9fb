"""The forgiving front of the NL parser: requests as platform engineers type them compile, every
non-verbatim reading and every default is a note in the plan, real ambiguities and values with no
safe default are asked for, and refusals say what would compile."""

from __future__ import annotations

import pytest

from services.planner import CompileInput, PlannerConfig, compile_intent
from services.planner.config import ENV_VAR, config_from_environment
from services.planner.errors import AmbiguousPhrase, MissingRequiredField, PlanError, UnknownResourceType
from services.planner.nl import parse_request
from tests.planner.keyed import KEYED, KEYED_FILE

# Requests measured as refused by the fixed grammar, with the resource each must compile to.
MEASURED: list[tuple[str, str, str, dict[str, object]]] = [
    ("spin up a bucket called logs-prod with versioning", "aws_s3_bucket", "create", {"name": "logs-prod"}),
    ("Please create a directory /opt/app with mode 0755", "local_directory", "create", {"mode": "0755"}),
    ("make namespace payments in the prod cluster", "k8s_namespace", "create", {"name": "payments"}),
    ("creat s3 bukket acme-tmp", "aws_s3_bucket", "create", {"name": "acme-tmp"}),
    (
        "A namespace called observability should be created",
        "k8s_namespace",
        "create",
        {"name": "observability"},
    ),
    (
        "deploy nginx:1.25 as deployment web in namespace payments with 3 replicas",
        "k8s_deployment",
        "create",
        {"name": "web", "image": "nginx:1.25", "namespace": "payments", "replicas": "3"},
    ),
    (
        "Give role reporting read-only access to database analytics",
        "pg_grant",
        "create",
        {"role": "reporting", "database": "analytics", "privilege": "read"},
    ),
    ("make me a k8s ns called ml-training pls", "k8s_namespace", "create", {"name": "ml-training"}),
]


@pytest.mark.parametrize(("text", "rtype", "action", "fields"), MEASURED, ids=[m[0][:50] for m in MEASURED])
def test_measured_refusals_now_compile(text: str, rtype: str, action: str, fields: dict[str, object]) -> None:
    (item,) = parse_request(text).resources
    assert (item.type, item.action) == (rtype, action)
    assert {k: item.fields.get(k) for k in fields} == fields
    assert compile_intent(CompileInput(request=text)).steps


def test_lists_expand_to_one_resource_per_name_with_shared_modifiers() -> None:
    plan = compile_intent(CompileInput(request="create namespaces team-a and team-b in cluster prod"))
    assert [(s.resource.name, s.target) for s in plan.steps] == [("team-a", "prod"), ("team-b", "prod")]
    intent = parse_request("create buckets x-logs and y-logs in us-west-2 with versioning")
    assert [(r.fields["name"], r.targets, r.fields["versioning"]) for r in intent.resources] == [
        ("x-logs", ("us-west-2",), True),
        ("y-logs", ("us-west-2",), True),
    ]


def test_every_correction_and_reading_is_a_note_in_the_plan() -> None:
    notes = compile_intent(
        CompileInput(request="creat s3 bukket acme-tmp with versoning")
    ).annotations.impact.notes
    assert notes[:3] == (
        "read 'creat' as 'create'",
        "read 's3 bukket' as 's3 bucket'",
        "read 'versoning' as 'versioning'",
    )
    notes = compile_intent(
        CompileInput(request="A namespace called observability should be created")
    ).annotations
    assert "read the request as 'create A namespace called observability'" in notes.impact.notes


def test_defaults_are_listed_as_assumptions() -> None:
    plan = compile_intent(CompileInput(request="Create deployment web with image nginx:1.27"))
    assert (
        "k8s_deployment default/web: namespace 'default' assumed (default)" in plan.annotations.impact.notes
    )
    assert "k8s_deployment default/web: target default assumed (planner config default)" in (
        plan.annotations.impact.notes
    )
    plan = compile_intent(CompileInput(request="Create AKS cluster edge"), KEYED)
    assert "az_aks edge: location 'eastus' assumed (default)" in plan.annotations.impact.notes


def test_no_placeholder_values_ssh_key_account_id_and_trust_principal_are_asked_for() -> None:
    assert PlannerConfig().ssh_public_key == ""
    with pytest.raises(MissingRequiredField) as caught:
        compile_intent(CompileInput(request="Create AKS cluster edge in eastus"))
    assert "ssh_public_key" in caught.value.message and "planner configuration" in caught.value.message
    with pytest.raises(MissingRequiredField) as caught:
        compile_intent(CompileInput(request="Create IAM role app"))
    assert "'service'" in caught.value.message and "for service" in caught.value.message
    assert PlannerConfig().aws_account_id == ""
    with pytest.raises(MissingRequiredField) as caught:
        compile_intent(CompileInput(request="Create SQS queue jobs"))
    assert "aws_account_id" in caught.value.message
    plan = compile_intent(CompileInput(request="Delete SQS queue jobs"), KEYED)
    assert "https://sqs.us-east-1.amazonaws.com/123456789012/jobs" in plan.steps[0].command.display
    plan = compile_intent(CompileInput(request="Create IAM role app for service lambda.amazonaws.com"))
    assert "lambda.amazonaws.com" in plan.steps[0].command.display


CLARIFY: list[tuple[str, type[PlanError], str]] = [
    ("Create cluster foo", AmbiguousPhrase, "say 'Create AKS cluster foo in eastus'"),
    ("create kubernetes cluster foo", AmbiguousPhrase, "which kind of cluster"),
    (
        "create role reporting",
        AmbiguousPhrase,
        "aws_iam_role (say 'iam role'); pg_role (say 'postgres role')",
    ),
    ("create /srv/www owned by nginx", AmbiguousPhrase, "say 'directory /srv/www'"),
    (
        "Create lambda function fn1 in region us-east-1",
        UnknownResourceType,
        "is not a resource type in UPM's catalog",
    ),
    ("namespace payments", PlanError, "the nearest phrasing that compiles: 'create namespace payments'"),
    (
        "create bucket logs-acme with sprinkles",
        PlanError,
        "the nearest phrasing that compiles: 'create bucket logs-acme'",
    ),
    ("create namespace x with quota 3", PlanError, "'in cluster CONTEXT'"),
]


@pytest.mark.parametrize(("text", "error", "words"), CLARIFY, ids=[c[0][:50] for c in CLARIFY])
def test_ambiguity_and_refusals_teach(text: str, error: type[PlanError], words: str) -> None:
    with pytest.raises(error) as caught:
        compile_intent(CompileInput(request=text), KEYED)
    assert words in caught.value.message


def test_refusals_no_longer_mislead() -> None:
    with pytest.raises(UnknownResourceType) as caught:
        compile_intent(CompileInput(request="Create kafka pool np1"))
    assert "did you mean 'folder'" not in caught.value.message and "closest types" in caught.value.message
    with pytest.raises(UnknownResourceType) as caught:
        compile_intent(CompileInput(request="create kafka topic events"))
    assert "not a resource type in UPM's catalog" in caught.value.message


def test_names_that_look_like_filler_or_abbreviations_are_kept() -> None:
    (item,) = parse_request("create database pg").resources
    assert item.fields["name"] == "pg"
    (item,) = parse_request("create namespace build").resources
    assert item.fields["name"] == "build"


def test_upm_up_reads_the_planner_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert config_from_environment() == PlannerConfig()
    monkeypatch.setenv(ENV_VAR, str(KEYED_FILE))
    assert config_from_environment().ssh_public_key == "ssh-rsa AAAA..."
