"""The ``aws`` provider (awscli): S3 buckets, IAM roles and attachments, SQS queues (with a
dead-letter queue's redrive), DynamoDB tables, EC2 security groups and their ingress rules, SNS
topics, SSM parameters, CloudWatch log groups (with retention) and ECR repositories.

The target of a regional resource is its region (``--region`` on every command); IAM is global
(target ``global``). Credentials and the endpoint (a moto server locally) are never in a plan: the
executor supplies them through the environment. An S3 bucket's settings are facets, one
``s3api put-…`` step each, so each is read back and undone on its own; the public access block is
on by default; bucket existence is read back for many buckets at once by one ``list-buckets``
(:data:`BUCKETS_LISTED`). SQS queue URLs are derived from the configured account id
(``PlannerConfig.aws_account_id``), since a plan cannot capture one command's output for another;
so are SNS topic ARNs and a redrive's dead-letter queue ARN. An SSM parameter's value is the step's
stdin (``--value file:///dev/stdin``), so a secret reference (``secret:NAME``) is resolved by the
executor and never held by the plan, an argv or a read-back (which reads the metadata only).
An S3 bucket cannot be renamed: a rename is refused when the plan is compiled (:data:`BUCKET`'s
``renaming``).

A failed read-back proves absence only by the service's not-found error code in awscli's
``An error occurred (CODE) when calling …`` (:func:`not_found`): ``404``/``NoSuchBucket``,
``NoSuchEntity``, ``AWS.SimpleQueueService.NonExistentQueue``/``QueueDoesNotExist``,
``ResourceNotFoundException``, ``InvalidGroup.NotFound``, ``NotFound`` (SNS),
``RepositoryNotFoundException``, and for a bucket setting its "not configured" code; a listing
that answers without the resource (SSM parameters, log groups) proves it absent too. A certificate,
credential, connection or throttling failure leaves the resource unknown.

Every ``aws`` command runs on a long-lived ``upm-aws-serve`` worker when the pinned ``aws`` is this
environment's own console script (the guard's :mod:`services.guard.worker`, :mod:`upm_aws_serve`):
awscli's own entry point per call, the same stdout, stderr and exit status as the ``aws`` process,
~0.1–0.2 s instead of ~0.5 s of start-up. A step with stdin (an SSM value) runs as a process.
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
    out: dict[str, Any] = {
        "region": region,
        "attributes": f"VisibilityTimeout={v.get('visibility_timeout', 30)}{fifo}",
    }
    if v.get("dead_letter_queue"):
        receives = v.get("max_receive_count") or _MAX_RECEIVES
        arn = f"arn:aws:sqs:{region}:{v.get('account_id', '')}:{v['dead_letter_queue']}"
        policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": receives}, sort_keys=True,
                            separators=(",", ":"))
        out |= {"max_receive_count": receives, "redrive": {"RedrivePolicy": policy}, "no_redrive": {"RedrivePolicy": ""}}
    return out


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
    renaming="S3 cannot rename a bucket (its name is its address); create the new bucket, copy the objects "
    "(aws s3 sync s3://{old} s3://{new}), then delete bucket {old}",
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

_QUEUE_NAME = r"[A-Za-z0-9_-]{1,75}(\.fifo)?|[A-Za-z0-9_-]{1,80}"
_QUEUE_RULE = "SQS queue names are 1 to 80 letters, digits, - and _ (a FIFO queue ends in .fifo)"
_MAX_RECEIVES = 5
_NO_QUEUE = not_found("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


def _queue_read(attribute: str) -> Template:
    return ("aws", "sqs", "get-queue-attributes", "--queue-url", _QUEUE_URL, "--attribute-names", attribute,
            "--region", "{region}", "--output", "json")


def _redrive(stdout: str, ident: str) -> dict[str, Any] | None:
    """The dead-letter queue (its name) and max receive count of a queue's ``RedrivePolicy``."""
    doc = json.loads(stdout) if stdout.strip() else {}
    policy = (doc.get("Attributes") or {}).get("RedrivePolicy")
    if not policy:
        return {"dead_letter_queue": None, "max_receive_count": None}
    redrive = json.loads(policy) if isinstance(policy, str) else policy
    return {
        "dead_letter_queue": str(redrive["deadLetterTargetArn"]).rpartition(":")[2],
        "max_receive_count": int(redrive["maxReceiveCount"]),
    }


QUEUE = ResourceType(
    name="aws_sqs_queue",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("sqs queue", "queue"),
    nl_in="@target",
    fields=(
        FieldSpec(name="name", required=True, pattern=_QUEUE_NAME, rule=_QUEUE_RULE, doc="the queue name"),
        FieldSpec(
            name="visibility_timeout",
            kind="int",
            default=30,
            minimum=0,
            nl_keys=("visibility timeout", "visibility"),
            doc="seconds",
        ),
        FieldSpec(
            name="dead_letter_queue",
            pattern=_QUEUE_NAME,
            rule=_QUEUE_RULE,
            nl_keys=("dead letter queue", "dead-letter queue", "redrive to", "redriving to"),
            doc="the queue (same region) that receives messages received too often",
        ),
        FieldSpec(
            name="max_receive_count",
            kind="int",
            minimum=1,
            nl_keys=("max receive count", "max receives", "after"),
            nl_suffix=("receives", "attempts", "tries"),
            doc=f"receives before a message moves to the dead-letter queue (default {_MAX_RECEIVES})",
        ),
    ),
    summary=("region", "visibility_timeout", "dead_letter_queue"),
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
    readback=_queue_read("VisibilityTimeout"),
    parse=json_fields(
        {"visibility_timeout": ("Attributes", "VisibilityTimeout")}, {"visibility_timeout": int}
    ),
    absent=_NO_QUEUE,
    derive=_regional,
    monthly_cost=0.4,
    doc="an SQS queue; its dead-letter queue (redrive) is a facet",
)

REDRIVE = ResourceType(
    name="aws_sqs_queue_redrive",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    state=("dead_letter_queue", "max_receive_count"),
    create=("aws", "sqs", "set-queue-attributes", "--queue-url", _QUEUE_URL, "--attributes", "{redrive}",
            "--region", "{region}"),
    delete=("aws", "sqs", "set-queue-attributes", "--queue-url", _QUEUE_URL, "--attributes", "{no_redrive}",
            "--region", "{region}"),
    readback=_queue_read("RedrivePolicy"),
    parse=_redrive,
    absent=_NO_QUEUE,
    derive=_regional,
    requires=(Requirement(type="aws_sqs_queue", match={"name": "dead_letter_queue"}),),
    facet_of=("aws_sqs_queue",),
    facet_field="dead_letter_queue",
    on_create=True,
    doc="a queue's redrive policy: messages received max_receive_count times move to the dead-letter queue",
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

def _regional_only(v: Vars) -> dict[str, Any]:
    return {"region": str(v["at"]), "scan": "true" if v.get("scan_on_push") else "false"}


def _by_id(group: Any) -> bool:
    return str(group).startswith("sg-")


def _group_vars(v: Vars) -> dict[str, Any]:
    by_id = _by_id(v.get("group") or v.get("name"))
    return {
        "region": str(v["at"]),
        "group_flag": "--group-id" if by_id else "--group-name",
        "groups_flag": "--group-ids" if by_id else "--group-names",
    }


_NO_GROUP = not_found("InvalidGroup.NotFound")


def _groups(stdout: str) -> list[dict[str, Any]]:
    groups = json.loads(stdout)["SecurityGroups"]
    if not isinstance(groups, list):
        raise ValueError("SecurityGroups is not a list")
    return groups


def _group(stdout: str, ident: str) -> dict[str, Any] | None:
    groups = _groups(stdout)
    return {"description": groups[0].get("Description")} if groups else None


def _ingress_held(stdout: str, ident: str) -> dict[str, Any] | None:
    """Whether the group allows ``protocol`` on ``port`` from ``cidr`` (ident ``group:protocol:port:cidr``)."""
    _, protocol, port, cidr = ident.split(":", 3)
    for group in _groups(stdout):
        for rule in group.get("IpPermissions") or ():
            if (
                str(rule.get("IpProtocol")) in (protocol, "-1")
                and int(rule.get("FromPort", 0)) <= int(port) <= int(rule.get("ToPort", 65535))
                and any(r.get("CidrIp") == cidr for r in rule.get("IpRanges") or ())
            ):
                return {}
    return None


SECURITY_GROUP = ResourceType(
    name="aws_security_group",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("security group", "sg", "ec2 security group"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"(?!sg-)[A-Za-z0-9._:/()#,@+=-]{1,255}",
            rule="security group names are 1 to 255 letters, digits and . _ : / ( ) # , @ + = -, not starting sg-",
            doc="the group name (in the default VPC)",
        ),
        FieldSpec(
            name="description",
            default="managed by UPM",
            pattern=r"[A-Za-z0-9 ._:/()#,@+=-]{1,255}",
            rule="1 to 255 letters, digits, spaces and . _ : / ( ) # , @ + = -",
            nl_keys=("description", "described as"),
            doc="the group description (AWS cannot change it later)",
        ),
    ),
    summary=("region",),
    create=("aws", "ec2", "create-security-group", "--group-name", "{name}", "--description", "{description}",
            "--region", "{region}"),
    delete=("aws", "ec2", "delete-security-group", "--group-name", "{name}", "--region", "{region}"),
    readback=("aws", "ec2", "describe-security-groups", "--group-names", "{name}", "--region", "{region}",
              "--output", "json"),
    parse=_group,
    absent=_NO_GROUP,
    derive=_group_vars,
    renaming="EC2 cannot rename a security group; create the new group with the same rules, move the "
    "instances to it, then delete the old one",
    doc="an EC2 security group in the default VPC (its rules are aws_security_group_ingress)",
)

INGRESS = ResourceType(
    name="aws_security_group_ingress",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{group}:{protocol}:{port}:{cidr}",
    nouns=("ingress rule", "security group rule", "inbound rule"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="group",
            required=True,
            pattern=r"sg-[0-9a-f]{8,17}|(?!sg-)[A-Za-z0-9._:/()#,@+=-]{1,255}",
            rule="a security group id (sg-0123abcd) or name",
            doc="the security group, by id (sg-…) or name",
        ),
        FieldSpec(
            name="port", kind="int", required=True, minimum=0, check=lambda t: None if int(t) <= 65535 else
            "a port is 0 to 65535", nl_keys=("port",), doc="the port opened",
        ),
        FieldSpec(
            name="protocol",
            kind="choice",
            default="tcp",
            choices=("tcp", "udp"),
            nl_flags={"tcp": "tcp", "udp": "udp"},
        ),
        FieldSpec(
            name="cidr",
            default="0.0.0.0/0",
            pattern=r"(\d{1,3}\.){3}\d{1,3}/\d{1,2}",
            rule="an IPv4 CIDR block like 10.0.0.0/16",
            nl_keys=("from", "cidr"),
            doc="who may connect (default 0.0.0.0/0: anyone)",
        ),
    ),
    summary=("group", "port", "protocol", "cidr"),
    create=("aws", "ec2", "authorize-security-group-ingress", "{group_flag}", "{group}", "--protocol",
            "{protocol}", "--port", "{port}", "--cidr", "{cidr}", "--region", "{region}"),
    delete=("aws", "ec2", "revoke-security-group-ingress", "{group_flag}", "{group}", "--protocol",
            "{protocol}", "--port", "{port}", "--cidr", "{cidr}", "--region", "{region}"),
    readback=("aws", "ec2", "describe-security-groups", "{groups_flag}", "{group}", "--region", "{region}",
              "--output", "json"),
    parse=_ingress_held,
    absent=_NO_GROUP,
    derive=_group_vars,
    requires=(Requirement(type="aws_security_group", match={"name": "group"}, skip=lambda v: _by_id(v.get("group"))),),
    doc="an inbound rule of a security group: one port, one protocol, one CIDR ('open port 443 on sg-…')",
)

_TOPIC_ARN = "arn:aws:sns:{region}:{account_id}:{name}"  # account_id: planner config

TOPIC = ResourceType(
    name="aws_sns_topic",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("sns topic", "topic"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"[A-Za-z0-9_-]{1,251}(\.fifo)?|[A-Za-z0-9_-]{1,256}",
            rule="SNS topic names are 1 to 256 letters, digits, - and _ (a FIFO topic ends in .fifo)",
            doc="the topic name",
        ),
    ),
    summary=("region",),
    create=("aws", "sns", "create-topic", "--name", "{name}", "--region", "{region}"),
    delete=("aws", "sns", "delete-topic", "--topic-arn", _TOPIC_ARN, "--region", "{region}"),
    readback=("aws", "sns", "get-topic-attributes", "--topic-arn", _TOPIC_ARN, "--region", "{region}",
              "--output", "json"),
    parse=json_fields({"arn": ("Attributes", "TopicArn")}),
    absent=not_found("NotFound"),
    derive=_regional_only,
    doc="an SNS topic",
)


def _parameter(stdout: str, ident: str) -> dict[str, Any] | None:
    """A parameter's metadata (never its value) from ``describe-parameters``; none listed: absent."""
    found = [p for p in json.loads(stdout)["Parameters"] if p.get("Name") == ident]
    return {"parameter_type": found[0].get("Type")} if found else None


_PUT_PARAMETER = ("aws", "ssm", "put-parameter", "--name", "{name}", "--type", "{parameter_type}",
                  "--value", "file:///dev/stdin", "--region", "{region}")

PARAMETER = ResourceType(
    name="aws_ssm_parameter",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("ssm parameter", "parameter"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*",
            check=lambda t: None if len(t) <= 1011 else "at most 1011 characters",
            rule="a parameter name or path like /app/db/password: letters, digits, _ . - between /",
            doc="the parameter name",
        ),
        FieldSpec(
            name="value",
            required=True,
            free_text=True,
            nl_keys=("value", "with value", "set to", "from"),
            doc="the value (fed on stdin): a secret as a reference, secret:NAME, never the value itself",
        ),
        FieldSpec(
            name="parameter_type",  # not "type": a spec's `type` is the resource type
            kind="choice",
            default="SecureString",
            choices=("String", "SecureString"),
            nl_flags={"securestring": "SecureString", "secure": "SecureString", "plain": "String"},
            doc="SecureString (default) or String",
        ),
    ),
    summary=("region", "parameter_type"),
    state=("parameter_type",),
    create=_PUT_PARAMETER,
    update=(*_PUT_PARAMETER, "--overwrite"),
    delete=("aws", "ssm", "delete-parameter", "--name", "{name}", "--region", "{region}"),
    readback=("aws", "ssm", "describe-parameters", "--parameter-filters", "Key=Name,Values={name}",
              "--region", "{region}", "--output", "json"),
    parse=_parameter,
    stdin_field="value",
    guarded=False,
    restorable=False,
    derive=_regional_only,
    doc="an SSM parameter whose value is fed on stdin (a secret by reference, resolved by the executor); "
    "read-backs show its type, never its value",
)

_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                   2922, 3288, 3653)


def _log_group(stdout: str, ident: str) -> dict[str, Any] | None:
    found = [g for g in json.loads(stdout)["logGroups"] if g.get("logGroupName") == ident]
    return {"retention_days": found[0].get("retentionInDays")} if found else None


_LOG_READ = ("aws", "logs", "describe-log-groups", "--log-group-name-prefix", "{name}", "--region", "{region}",
             "--output", "json")

LOG_GROUP = ResourceType(
    name="aws_cloudwatch_log_group",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("log group", "cloudwatch log group"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"[A-Za-z0-9_./#-]{1,512}",
            rule="log group names are 1 to 512 letters, digits and _ . / # -",
            doc="the log group name",
        ),
        FieldSpec(
            name="retention_days",
            kind="int",
            minimum=1,
            check=lambda t: None if int(t) in _RETENTION_DAYS else
            f"CloudWatch keeps logs for one of {', '.join(map(str, _RETENTION_DAYS))} days",
            nl_keys=("retention", "retention of", "retained for", "keeping logs for"),
            nl_suffix=("days", "day"),
            doc="days the logs are kept (unset: forever)",
        ),
    ),
    summary=("region", "retention_days"),
    create=("aws", "logs", "create-log-group", "--log-group-name", "{name}", "--region", "{region}"),
    delete=("aws", "logs", "delete-log-group", "--log-group-name", "{name}", "--region", "{region}"),
    readback=_LOG_READ,
    parse=_log_group,
    derive=_regional_only,
    doc="a CloudWatch Logs log group; its retention is a facet",
)

LOG_RETENTION = ResourceType(
    name="aws_cloudwatch_log_group_retention",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    state=("retention_days",),
    create=("aws", "logs", "put-retention-policy", "--log-group-name", "{name}", "--retention-in-days",
            "{retention_days}", "--region", "{region}"),
    delete=("aws", "logs", "delete-retention-policy", "--log-group-name", "{name}", "--region", "{region}"),
    readback=_LOG_READ,
    parse=_log_group,
    derive=_regional_only,
    facet_of=("aws_cloudwatch_log_group",),
    facet_field="retention_days",
    on_create=True,
    doc="how long a log group keeps its logs",
)

_ECR_READ = ("aws", "ecr", "describe-repositories", "--repository-names", "{name}", "--region", "{region}",
             "--output", "json")
_ECR_PARSE = json_fields(
    {
        "tag_mutability": ("repositories", 0, "imageTagMutability"),
        "scan_on_push": ("repositories", 0, "imageScanningConfiguration", "scanOnPush"),
    },
    {"scan_on_push": bool},
)
_NO_REPOSITORY = not_found("RepositoryNotFoundException")

REPOSITORY = ResourceType(
    name="aws_ecr_repository",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{name}",
    nouns=("ecr repository", "ecr repo", "container registry", "repository"),
    nl_in="@target",
    fields=(
        FieldSpec(
            name="name",
            required=True,
            pattern=r"(?=.{2,256}$)([a-z0-9]+([._-][a-z0-9]+)*/)*[a-z0-9]+([._-][a-z0-9]+)*",
            rule="ECR repository names are 2 to 256 lowercase letters, digits and . _ - (/ between parts)",
            doc="the repository name",
        ),
        FieldSpec(
            name="tag_mutability",
            kind="choice",
            default="MUTABLE",
            choices=("MUTABLE", "IMMUTABLE"),
            nl_flags={"immutable": "IMMUTABLE", "immutable-tags": "IMMUTABLE", "mutable": "MUTABLE"},
            doc="whether an image tag may be pushed again",
        ),
        FieldSpec(
            name="scan_on_push",
            kind="bool",
            default=False,
            nl_flags={"scan-on-push": True, "scanning": True},
            doc="scan each image pushed",
        ),
    ),
    summary=("region", "tag_mutability", "scan_on_push"),
    state=("tag_mutability", "scan_on_push"),
    create=("aws", "ecr", "create-repository", "--repository-name", "{name}", "--image-tag-mutability",
            "{tag_mutability}", "--image-scanning-configuration", "scanOnPush={scan}", "--region", "{region}"),
    delete=("aws", "ecr", "delete-repository", "--repository-name", "{name}", "--region", "{region}"),
    readback=_ECR_READ,
    parse=_ECR_PARSE,
    absent=_NO_REPOSITORY,
    derive=_regional_only,
    doc="an ECR repository (delete refuses one that still holds images); tag mutability and scanning are facets",
)


def _ecr_facet(name: str, field: str, put: Template) -> ResourceType:
    """A setting of a repository, changed in place (the create sets both)."""
    return ResourceType(
        name=name,
        provider=PROVIDER,
        cli=PIN.name,
        ident="{name}",
        state=(field,),
        create=put,
        readback=_ECR_READ,
        parse=_ECR_PARSE,
        absent=_NO_REPOSITORY,
        derive=_regional_only,
        facet_of=("aws_ecr_repository",),
        facet_field=field,
    )


REPOSITORY_FACETS = (
    _ecr_facet("aws_ecr_tag_mutability", "tag_mutability",
               ("aws", "ecr", "put-image-tag-mutability", "--repository-name", "{name}", "--image-tag-mutability",
                "{tag_mutability}", "--region", "{region}")),
    _ecr_facet("aws_ecr_scan_on_push", "scan_on_push",
               ("aws", "ecr", "put-image-scanning-configuration", "--repository-name", "{name}",
                "--image-scanning-configuration", "scanOnPush={scan}", "--region", "{region}")),
)

TYPES = (
    BUCKET, *BUCKET_FACETS, ROLE, ATTACHMENT, QUEUE, REDRIVE, TABLE, SECURITY_GROUP, INGRESS, TOPIC, PARAMETER,
    LOG_GROUP, LOG_RETENTION, REPOSITORY, *REPOSITORY_FACETS,
)
