"""Natural language → plan: phrasings across every provider, and malformed or ambiguous requests."""

from __future__ import annotations

import pytest

from services.planner import CompileInput, compile_intent
from services.planner.errors import (
    AmbiguousPhrase,
    ConflictingActions,
    InvalidFieldValue,
    InvalidName,
    MissingRequiredField,
    PlanError,
    UnknownResourceType,
    UnrecognisedPhrase,
    UnsupportedAction,
)
from tests.planner.keyed import KEYED

PSQL = "psql -X -q -v ON_ERROR_STOP=1"
S3_PAB = (
    "aws s3api put-public-access-block --bucket {b} --public-access-block-configuration "
    "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true --region {r}"
)

PHRASINGS: list[tuple[str, list[str]]] = [
    (
        "Create AKS cluster aks-demo in eastus and namespace team-alpha",
        [
            "az group create --name rg-demo --location eastus",
            'az aks create --name aks-demo --resource-group rg-demo --node-count 2 --ssh-key-value "ssh-rsa AAAA..."',
            "kubectl-1.29 create namespace team-alpha",
        ],
    ),
    (
        "Create S3 bucket logs-acme in us-east-1 with versioning and encryption, tagged team=alpha",
        [
            "aws s3api create-bucket --bucket logs-acme --region us-east-1",
            "aws s3api put-bucket-encryption --bucket logs-acme --server-side-encryption-configuration "
            """'{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}' --region us-east-1""",
            """aws s3api put-bucket-tagging --bucket logs-acme --tagging '{"TagSet":[{"Key":"team","Value":"alpha"}]}' """
            "--region us-east-1",
            "aws s3api put-bucket-versioning --bucket logs-acme --versioning-configuration Status=Enabled --region us-east-1",
            S3_PAB.format(b="logs-acme", r="us-east-1"),
        ],
    ),
    (
        "Grant role analyst read access to database orders",
        [
            f'{PSQL} -d orders -c "GRANT CONNECT ON DATABASE orders TO analyst" -c "GRANT USAGE ON SCHEMA public TO analyst" '
            '-c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst"'
        ],
    ),
    ("Delete namespace team-alpha", ["kubectl-1.29 delete ns team-alpha"]),
    (
        "Create namespace team-alpha in clusters prod-east, prod-west and prod-eu",
        [
            f"kubectl-1.29 --context {c} create namespace team-alpha"
            for c in ("prod-east", "prod-west", "prod-eu")
        ],
    ),
    ("create directory /srv/app with mode 0750", ["upm-localfs mkdir -m 0750 /srv/app"]),
    ("create file /etc/app.conf containing 'x'", ["upm-localfs write -m 0644 /etc/app.conf"]),
    ("Create symlink /srv/current pointing to /srv/app", ["upm-localfs ln -s /srv/app /srv/current"]),
    (
        "Make a folder /data/cache owned by www-data",
        ["upm-localfs mkdir -m 0755 /data/cache", "upm-localfs chown www-data /data/cache"],
    ),
    (
        "Create directory /srv/app and file /srv/app/config.yml containing 'a: 1' with mode 0600",
        ["upm-localfs mkdir -m 0755 /srv/app", "upm-localfs write -m 0600 /srv/app/config.yml"],
    ),
    ("Change mode of directory /srv/app to 0700", ["upm-localfs chmod 0700 /srv/app"]),
    ("Remove file /tmp/old.log", ["upm-localfs rm -f /tmp/old.log"]),
    (
        "Create IAM role app-role for service lambda.amazonaws.com",
        [
            "aws iam create-role --role-name app-role --assume-role-policy-document "
            """'{"Statement":[{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"}}],"""
            """"Version":"2012-10-17"}'"""
        ],
    ),
    (
        "Attach policy arn:aws:iam::aws:policy/ReadOnlyAccess to role app-role",
        [
            "aws iam attach-role-policy --role-name app-role --policy-arn arn:aws:iam::aws:policy/ReadOnlyAccess"
        ],
    ),
    (
        "Create SQS queue jobs in eu-west-1 with visibility timeout 60",
        ["aws sqs create-queue --queue-name jobs --attributes VisibilityTimeout=60 --region eu-west-1"],
    ),
    (
        "Create DynamoDB table sessions with hash key sid",
        [
            "aws dynamodb create-table --table-name sessions --attribute-definitions AttributeName=sid,AttributeType=S "
            "--key-schema AttributeName=sid,KeyType=HASH --billing-mode PAY_PER_REQUEST --region us-east-1"
        ],
    ),
    (
        "Enable versioning on bucket logs-acme",
        [
            "aws s3api put-bucket-versioning --bucket logs-acme --versioning-configuration Status=Enabled --region us-east-1"
        ],
    ),
    (
        "Delete S3 bucket logs-acme in us-west-2",
        ["aws s3api delete-bucket --bucket logs-acme --region us-west-2"],
    ),
    (
        "Create postgres role analyst with login",
        [f'{PSQL} -d postgres -c "CREATE ROLE analyst LOGIN"'],
    ),
    (
        "Create database orders and postgres role app",
        [
            f'{PSQL} -d postgres -c "CREATE DATABASE orders"',
            f'{PSQL} -d postgres -c "CREATE ROLE app NOLOGIN"',
        ],
    ),
    ("Create schema reporting in database orders", [f'{PSQL} -d orders -c "CREATE SCHEMA reporting"']),
    (
        "Grant write access on database orders to role app",
        [
            f'{PSQL} -d orders -c "GRANT CONNECT ON DATABASE orders TO app" -c "GRANT USAGE ON SCHEMA public TO app" '
            '-c "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app"'
        ],
    ),
    (
        "Revoke role analyst read access to database orders",
        [
            f'{PSQL} -d orders -c "REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM analyst" '
            '-c "REVOKE USAGE ON SCHEMA public FROM analyst" -c "REVOKE CONNECT ON DATABASE orders FROM analyst"'
        ],
    ),
    ("Drop database orders", [f'{PSQL} -d postgres -c "DROP DATABASE orders"']),
    ("Create resource group rg-x in westeurope", ["az group create --name rg-x --location westeurope"]),
    (
        "Scale AKS cluster aks-demo to 4 nodes",
        ["az aks scale --name aks-demo --resource-group rg-demo --node-count 4"],
    ),
    ("Delete AKS cluster aks-demo", ["az aks delete --name aks-demo --resource-group rg-demo"]),
    (
        "Create deployment web with image nginx:1.27 and 3 replicas in namespace shop",
        ["kubectl-1.29 create deployment web --image=nginx:1.27 --replicas=3 -n shop"],
    ),
    (
        "Scale deployment web to 5 replicas in namespace shop",
        ["kubectl-1.29 scale deployment/web --replicas=5 -n shop"],
    ),
    (
        "Update deployment web image to nginx:1.28",
        ['kubectl-1.29 set image deployment/web "*=nginx:1.28" -n default'],
    ),
    (
        "Create configmap app-config in namespace team-alpha with data color=blue, size=3",
        [
            "kubectl-1.29 create configmap app-config --from-literal=color=blue --from-literal=size=3 -n team-alpha"
        ],
    ),
    (
        "Create namespace shop and deployment api with image ghcr.io/acme/api:2.0 in namespace shop.",
        [
            "kubectl-1.29 create namespace shop",
            "kubectl-1.29 create deployment api --image=ghcr.io/acme/api:2.0 --replicas=1 -n shop",
        ],
    ),
]


def test_targets_by_kind_and_clauses_after_the_target_list() -> None:
    plan = compile_intent(
        CompileInput(
            request="Create namespace x in clusters a, b and deployment web with image nginx in namespace x"
        )
    )
    assert [(s.target, s.resource.type) for s in plan.steps] == [
        ("a", "k8s_namespace"),
        ("a", "k8s_deployment"),
        ("b", "k8s_namespace"),
        ("b", "k8s_deployment"),
    ]
    plan = compile_intent(
        CompileInput(request="Create S3 bucket logs-acme in regions us-east-1, eu-west-1 as a canary")
    )
    assert [w.targets for w in plan.waves] == [("us-east-1",), ("eu-west-1",)]
    assert plan.steps[0].command.display == "aws s3api create-bucket --bucket logs-acme --region us-east-1"
    plan = compile_intent(CompileInput(request="Create database orders on servers pg-a and pg-b"))
    assert [s.target for s in plan.steps] == ["pg-a", "pg-b"]


@pytest.mark.parametrize(("request_text", "commands"), PHRASINGS, ids=[p[0][:60] for p in PHRASINGS])
def test_phrasing_compiles_to_expected_commands(request_text: str, commands: list[str]) -> None:
    plan = compile_intent(CompileInput(request=request_text), KEYED)
    assert [s.command.display for s in plan.steps] == commands


def test_there_are_at_least_25_phrasings_across_all_providers() -> None:
    providers = {
        s.resource.provider
        for text, _ in PHRASINGS
        for s in compile_intent(CompileInput(request=text), KEYED).steps
    }
    assert len(PHRASINGS) >= 25
    assert providers == {"local", "aws", "postgres", "azure", "k8s"}


def test_file_content_goes_to_stdin_never_into_argv() -> None:
    plan = compile_intent(CompileInput(request="create file /etc/app.conf containing 'hello world'"))
    (step,) = plan.steps
    assert step.stdin == "hello world"
    assert "hello world" not in step.command.display


def test_prerequisites_name_what_must_exist() -> None:
    plan = compile_intent(CompileInput(request="Grant role analyst read access to database orders"))
    assert [p.resource.key for p in plan.resources_needed] == [
        "pg_database:default:orders",
        "pg_role:default:analyst",
    ]
    assert (
        "SELECT 1 / count(*) FROM pg_roles WHERE rolname = 'analyst'"
        in plan.resources_needed[1].check.display
    )
    plan = compile_intent(
        CompileInput(
            request="Create postgres role analyst and database orders and grant role analyst read access to database orders"
        )
    )
    assert plan.resources_needed == ()
    assert plan.steps[-1].resource.type == "pg_grant"
    assert set(plan.steps[-1].depends_on) == {"pg_database:default:orders", "pg_role:default:analyst"}


ERRORS: list[tuple[str, type[PlanError], str]] = [
    ("Create role analyst", AmbiguousPhrase, "iam role"),
    ("Create kafka topic events", UnknownResourceType, "not a resource type"),
    ("Create deployment web", MissingRequiredField, "image"),
    ("Create S3 bucket Logs_Acme", InvalidName, "lowercase"),
    ("Create S3 bucket ab", InvalidName, "3 to 63"),
    ("Create S3 bucket", MissingRequiredField, "put its name"),
    ("Bucket logs", UnrecognisedPhrase, "verb"),
    ("create bucket logs-acme with sprinkles", UnrecognisedPhrase, "'sprinkles'"),
    ("Grant role analyst fly access to database orders", InvalidFieldValue, "read, write or all"),
    ("Create directory srv/app", InvalidName, "absolute path"),
    ("Update resource group rg-x", UnsupportedAction, "cannot be updated"),
    ("create directory /srv/app with mode 999", InvalidFieldValue, "octal"),
    ("Create namespace Team_Alpha", InvalidName, "DNS label"),
    ("", UnrecognisedPhrase, "empty"),
    ("Create namespace a and delete namespace a", ConflictingActions, "one action per resource"),
    ("Create namespace x and delete AKS cluster aks-demo", ConflictingActions, "which this request deletes"),
    ("Create S3 bucket logs in clusters a, b", UnrecognisedPhrase, "no resource in it"),
    ("Create SQS queue jobs in narnia", InvalidFieldValue, "AWS region"),
    ("create directory '/tmp/a>b'", InvalidName, "metacharacters"),
    ("Create S3 bucket logs-acme tagged team=a;b", InvalidFieldValue, "metacharacters"),
    ("Create deployment web with image nginx as a canary and in waves", UnrecognisedPhrase, "variants"),
]


@pytest.mark.parametrize(
    ("request_text", "error", "words"), ERRORS, ids=[e[0][:50] or "empty" for e in ERRORS]
)
def test_malformed_requests_give_clear_errors(request_text: str, error: type[PlanError], words: str) -> None:
    with pytest.raises(error) as caught:
        compile_intent(CompileInput(request=request_text))
    assert words in caught.value.message


def test_ambiguous_phrase_lists_candidates() -> None:
    with pytest.raises(AmbiguousPhrase) as caught:
        compile_intent(CompileInput(request="Create role analyst"))
    assert caught.value.candidates == ("aws_iam_role", "pg_role")
