"""The ``aws`` provider: S3 buckets, IAM roles and attachments, SQS queues, DynamoDB tables (awscli).

The target of a regional resource is its region (``--region`` on every command); IAM is global
(target ``global``). Credentials and the endpoint (a moto server locally) are never in a plan: the
executor supplies them through the environment. An S3 bucket's settings are facets, one
``s3api put-…`` step each, so each is read back and undone on its own; the public access block is
on by default; bucket existence is read back for many buckets at once by one ``list-buckets``
(:data:`BUCKETS_LISTED`). SQS queue URLs are derived from the configured account id
(``PlannerConfig.aws_account_id``), since a plan cannot capture one command's output for another.

A failed read-back proves absence only by the service's not-found error code in awscli's
``An error occurred (CODE) when calling …`` (:func:`not_found`): ``404``/``NoSuchBucket``,
``NoSuchEntity``, ``AWS.SimpleQueueService.NonExistentQueue``/``QueueDoesNotExist``,
``ResourceNotFoundException``, and for a bucket setting its "not configured" code. A certificate,
credential, connection or throttling failure leaves the resource unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from providers.base import (
    Batch,
    CliPin,
    FieldSpec,
    Requirement,
    ResourceType,
    Template,
    Vars,
    json_fields,
    rc_exists,
)
from providers.readback import Absence

PROVIDER = "aws"
GLOBAL = "global"
PIN = CliPin(
    name="awscli",
    binaries=("aws",),
    version="1.46.3",
    version_argv=("aws", "--version"),
    version_pattern=r"aws-cli/(\S+)",
)
REGION_PATTERN = r"[a-z]{2}(-gov)?-[a-z]+-\d"


def bucket_name_problem(name: Any) -> str | None:
    """Why ``name`` breaks the S3 bucket naming rules, or ``None``."""
    text = str(name)
    if not 3 <= len(text) <= 63:
        return "S3 bucket names are 3 to 63 characters long"
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", text):
        return "S3 bucket names use lowercase letters, digits, '.' and '-', and start and end with a letter or digit"
    if ".." in text or ".-" in text or "-." in text:
        return "S3 bucket names have no '..', '.-' or '-.'"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", text):
        return "S3 bucket names are not IP addresses"
    if text.startswith(("xn--", "sthree-")) or text.endswith(("-s3alias", "--ol-s3")):
        return "S3 bucket names do not start with xn--/sthree- or end with -s3alias/--ol-s3"
    return None


def _bucket_vars(v: Vars) -> dict[str, Any]:
    region = str(v["at"])
    tags = v.get("tags") or {}
    return {
        "region": region,
        "location_constraint": "" if region == "us-east-1" else region,
        "versioning_status": "Enabled" if v.get("versioning") else "Suspended",
        "encryption_config": {
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": v.get("encryption") or "AES256"}}
            ]
        },
        "tagging": {"TagSet": [{"Key": k, "Value": tags[k]} for k in sorted(tags)]},
        "block": "true" if v.get("public_access_block") else "false",
    }


_QUEUE_URL = "https://sqs.{region}.amazonaws.com/{account_id}/{name}"  # account_id: planner config


def _regional(v: Vars) -> dict[str, Any]:
    region = str(v["at"])
    name = str(v.get("name", ""))
    fifo = ",FifoQueue=true" if name.endswith(".fifo") else ""
    return {
        "region": region,
        "attributes": f"VisibilityTimeout={v.get('visibility_timeout', 30)}{fifo}",
    }


def _role_vars(v: Vars) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Principal": {"Service": v.get("service")}, "Action": "sts:AssumeRole"}
    return {"trust_policy": {"Version": "2012-10-17", "Statement": [statement]}}


def _policy_doc(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def not_found(*codes: str) -> Absence:
    """Absence proven by one of the service's error ``codes`` in awscli's error line."""
    return Absence(tuple(rf"An error occurred \({re.escape(code)}\) when calling" for code in codes))


_NO_BUCKET = ("NoSuchBucket",)


def _attached(stdout: str, ident: str) -> dict[str, Any] | None:
    arn = ident.split(":", 1)[1]
    policies = json.loads(stdout)["AttachedPolicies"]
    return {} if any(p.get("PolicyArn") == arn for p in policies) else None


def _listed(rc: int, stdout: str, idents: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """Which of ``idents`` one ``list-buckets`` shows; nothing known when it failed or answered
    anything but a list of names (each bucket is then read back on its own, which says why)."""
    try:
        names = json.loads(stdout) if rc == 0 else None
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list):
        return {}
    return {ident: ({} if ident in names else None) for ident in idents}


# One ListBuckets call answers for every bucket of the account, in every region.
BUCKETS_LISTED = Batch(
    group=lambda ident, target: "account",
    command=lambda group, idents: ("aws", "s3api", "list-buckets", "--query", "Buckets[].Name", "--output", "json"),
    parse=_listed,
)


def _s3(verb: str, *rest: str | tuple[str, ...]) -> Template:
    return ("aws", "s3api", verb, "--bucket", "{name}", *rest, "--region", "{region}")


def _s3_read(verb: str) -> Template:
    return _s3(verb, "--output", "json")


_NAME_S3 = FieldSpec(name="name", required=True, check=bucket_name_problem, doc="the bucket name")

BUCKET = ResourceType(
    name="aws_s3_bucket",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("s3 bucket", "bucket"),
    nl_in="@target",
    fields=(
        _NAME_S3,
        FieldSpec(
            name="versioning", kind="bool", default=False, nl_flags={"versioning": True, "versioned": True}
        ),
        FieldSpec(
            name="encryption",
            kind="choice",
            choices=("AES256", "aws:kms"),
            nl_flags={"encryption": "AES256", "encrypted": "AES256", "kms": "aws:kms"},
            doc="server-side encryption algorithm",
        ),
        FieldSpec(name="tags", kind="map", nl_keys=("tagged", "tags", "tag"), doc="key=value tags"),
        FieldSpec(
            name="public_access_block",
            kind="bool",
            default=True,
            nl_flags={"public-access-block": True, "public": False},
            doc="block all public access (default on)",
        ),
    ),
    summary=("region", "versioning", "encryption", "tags"),
    create=_s3(
        "create-bucket", ("--create-bucket-configuration", "LocationConstraint={location_constraint}")
    ),
    delete=_s3("delete-bucket"),
    readback=_s3("head-bucket"),
    parse=rc_exists,
    absent=not_found("404", *_NO_BUCKET),
    batch=BUCKETS_LISTED,
    derive=_bucket_vars,
    monthly_cost=1.0,
    timeout_s=60.0,
    doc="an S3 bucket; versioning, encryption, tags and the public access block are facets",
)


def _bucket_facet(
    name: str, field: str, put: Template, delete: Template, read: str, parse: Any, *unset: str
) -> ResourceType:
    """A setting of a bucket; absent when the bucket is, or when the service says it is not set
    (``unset`` error codes)."""
    return ResourceType(
        name=name,
        provider=PROVIDER,
        cli=PIN.name,
        ident="{name}",
        state=(field,),
        create=put,
        delete=delete,
        readback=_s3_read(read),
        parse=parse,
        absent=not_found(*_NO_BUCKET, *unset),
        derive=_bucket_vars,
        facet_of=("aws_s3_bucket",),
        facet_field=field,
        on_create=True,
    )


def _tags(value: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in value} if isinstance(value, list) else {}


def _all_true(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(value.values())


BUCKET_FACETS = (
    _bucket_facet(
        "aws_s3_bucket_versioning",
        "versioning",
        _s3("put-bucket-versioning", "--versioning-configuration", "Status={versioning_status}"),
        _s3("put-bucket-versioning", "--versioning-configuration", "Status=Suspended"),
        "get-bucket-versioning",
        json_fields({"versioning": ("Status",)}, {"versioning": lambda s: s == "Enabled"}),
    ),
    _bucket_facet(
        "aws_s3_bucket_encryption",
        "encryption",
        _s3("put-bucket-encryption", "--server-side-encryption-configuration", "{encryption_config}"),
        _s3("delete-bucket-encryption"),
        "get-bucket-encryption",
        json_fields(
            {
                "encryption": (
                    "ServerSideEncryptionConfiguration",
                    "Rules",
                    0,
                    "ApplyServerSideEncryptionByDefault",
                    "SSEAlgorithm",
                )
            }
        ),
        "ServerSideEncryptionConfigurationNotFoundError",
    ),
    _bucket_facet(
        "aws_s3_bucket_tagging",
        "tags",
        _s3("put-bucket-tagging", "--tagging", "{tagging}"),
        _s3("delete-bucket-tagging"),
        "get-bucket-tagging",
        json_fields({"tags": ("TagSet",)}, {"tags": _tags}),
        "NoSuchTagSet",
    ),
    _bucket_facet(
        "aws_s3_public_access_block",
        "public_access_block",
        _s3(
            "put-public-access-block",
            "--public-access-block-configuration",
            "BlockPublicAcls={block},IgnorePublicAcls={block},BlockPublicPolicy={block},RestrictPublicBuckets={block}",
        ),
        _s3("delete-public-access-block"),
        "get-public-access-block",
        json_fields(
            {"public_access_block": ("PublicAccessBlockConfiguration",)}, {"public_access_block": _all_true}
        ),
        "NoSuchPublicAccessBlockConfiguration",
    ),
)

_IAM_NAME = FieldSpec(
    name="name",
    required=True,
    pattern=r"[\w+=,.@-]{1,64}",
    rule="IAM role names are 1 to 64 letters, digits and + = , . @ _ -",
    doc="the role name",
)

ROLE = ResourceType(
    name="aws_iam_role",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("iam role", "aws role", "role"),
    fields=(
        _IAM_NAME,
        FieldSpec(
            name="service",
            required=True,
            pattern=r"[a-z0-9.-]+\.amazonaws\.com",
            rule="an AWS service principal like lambda.amazonaws.com",
            nl_keys=("for service", "assumable by", "service", "for"),
            doc="the service allowed to assume the role",
        ),
    ),
    summary=("service",),
    state=("service",),
    create=(
        "aws",
        "iam",
        "create-role",
        "--role-name",
        "{name}",
        "--assume-role-policy-document",
        "{trust_policy}",
    ),
    update=(
        "aws",
        "iam",
        "update-assume-role-policy",
        "--role-name",
        "{name}",
        "--policy-document",
        "{trust_policy}",
    ),
    delete=("aws", "iam", "delete-role", "--role-name", "{name}"),
    readback=("aws", "iam", "get-role", "--role-name", "{name}", "--output", "json"),
    parse=json_fields(
        {"service": ("Role", "AssumeRolePolicyDocument")},
        {
            "service": lambda doc: (
                ((_policy_doc(doc) or {}).get("Statement") or [{}])[0].get("Principal", {}).get("Service")
            )
        },
    ),
    absent=not_found("NoSuchEntity"),
    derive=_role_vars,
    fixed_target=GLOBAL,
    doc="an IAM role assumable by one AWS service (global: target 'global')",
)

ATTACHMENT = ResourceType(
    name="aws_iam_role_policy_attachment",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{role}:{policy_arn}",
    nouns=("role policy attachment", "policy attachment"),
    fields=(
        FieldSpec(
            name="role", required=True, pattern=_IAM_NAME.pattern, rule=_IAM_NAME.rule, doc="the role name"
        ),
        FieldSpec(
            name="policy_arn",
            required=True,
            pattern=r"arn:aws[\w-]*:iam::(\d{12}|aws):policy/[\w+=,.@/-]+",
            rule="a policy ARN like arn:aws:iam::aws:policy/ReadOnlyAccess",
            doc="the managed policy ARN",
        ),
    ),
    summary=("role", "policy_arn"),
    create=("aws", "iam", "attach-role-policy", "--role-name", "{role}", "--policy-arn", "{policy_arn}"),
    delete=("aws", "iam", "detach-role-policy", "--role-name", "{role}", "--policy-arn", "{policy_arn}"),
    readback=("aws", "iam", "list-attached-role-policies", "--role-name", "{role}", "--output", "json"),
    parse=_attached,
    absent=not_found("NoSuchEntity"),
    requires=(Requirement(type="aws_iam_role", match={"name": "role"}),),
    fixed_target=GLOBAL,
    doc="a managed policy attached to an IAM role",
)

QUEUE = ResourceType(
    name="aws_sqs_queue",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("sqs queue", "queue"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"[A-Za-z0-9_-]{1,75}(\.fifo)?|[A-Za-z0-9_-]{1,80}",
            rule="SQS queue names are 1 to 80 letters, digits, - and _ (a FIFO queue ends in .fifo)",
            doc="the queue name",
        ),
        FieldSpec(
            name="visibility_timeout",
            kind="int",
            default=30,
            minimum=0,
            nl_keys=("visibility timeout", "visibility"),
            doc="seconds",
        ),
    ),
    summary=("region", "visibility_timeout"),
    state=("visibility_timeout",),
    create=(
        "aws",
        "sqs",
        "create-queue",
        "--queue-name",
        "{name}",
        "--attributes",
        "{attributes}",
        "--region",
        "{region}",
    ),
    update=(
        "aws",
        "sqs",
        "set-queue-attributes",
        "--queue-url",
        _QUEUE_URL,
        "--attributes",
        "VisibilityTimeout={visibility_timeout}",
        "--region",
        "{region}",
    ),
    delete=("aws", "sqs", "delete-queue", "--queue-url", _QUEUE_URL, "--region", "{region}"),
    readback=(
        "aws",
        "sqs",
        "get-queue-attributes",
        "--queue-url",
        _QUEUE_URL,
        "--attribute-names",
        "VisibilityTimeout",
        "--region",
        "{region}",
        "--output",
        "json",
    ),
    parse=json_fields(
        {"visibility_timeout": ("Attributes", "VisibilityTimeout")}, {"visibility_timeout": int}
    ),
    absent=not_found("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"),
    derive=_regional,
    monthly_cost=0.4,
    doc="an SQS queue",
)

TABLE = ResourceType(
    name="aws_dynamodb_table",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("dynamodb table", "table"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"[A-Za-z0-9_.-]{3,255}",
            rule="DynamoDB table names are 3 to 255 letters, digits, _ . -",
            doc="the table name",
        ),
        FieldSpec(
            name="hash_key",
            default="id",
            pattern=r"[A-Za-z0-9_.-]{1,255}",
            rule="an attribute name",
            nl_keys=("hash key", "partition key", "key"),
            doc="the partition key attribute",
        ),
        FieldSpec(
            name="hash_key_type", kind="choice", default="S", choices=("S", "N", "B"), nl_keys=("key type",)
        ),
    ),
    summary=("region", "hash_key"),
    state=("hash_key",),
    create=(
        "aws",
        "dynamodb",
        "create-table",
        "--table-name",
        "{name}",
        "--attribute-definitions",
        "AttributeName={hash_key},AttributeType={hash_key_type}",
        "--key-schema",
        "AttributeName={hash_key},KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
        "--region",
        "{region}",
    ),
    delete=("aws", "dynamodb", "delete-table", "--table-name", "{name}", "--region", "{region}"),
    readback=(
        "aws",
        "dynamodb",
        "describe-table",
        "--table-name",
        "{name}",
        "--region",
        "{region}",
        "--output",
        "json",
    ),
    parse=json_fields({"hash_key": ("Table", "KeySchema", 0, "AttributeName")}),
    absent=not_found("ResourceNotFoundException"),
    health=("aws", "dynamodb", "wait", "table-exists", "--table-name", "{name}", "--region", "{region}"),
    derive=_regional,
    monthly_cost=1.25,
    doc="a pay-per-request DynamoDB table with a hash key",
)

TYPES = (BUCKET, *BUCKET_FACETS, ROLE, ATTACHMENT, QUEUE, TABLE)
