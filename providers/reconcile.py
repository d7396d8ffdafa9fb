"""Drift reconciliation: the spec resource that brings a drifted resource back to its baseline.

Given a managed step (its type, name, desired state and stdin) and what a read-back observed,
``reconcile_resource`` returns one resource of a declarative spec — create it again when it is
gone, update the fields that drifted when it is there — or ``None`` when the drift needs a
person (e.g. a directory replaced by a file). The spec goes through the whole pipeline as a
change of source ``drift``. Types without a rule here are alarm-only.

AWS and PostgreSQL resources (:func:`_target_rule`): a missing resource is created again with its
desired settings; a drifted setting (S3 versioning / encryption / tags / public access block, a
role's trust, a queue's visibility timeout or dead-letter queue, a log group's retention, an ECR
repository's tag mutability or scanning, a database owner, a role's login) is updated back; a
removed ingress rule is opened again; an SSM parameter is put again from its (referenced) value; a
changed DynamoDB key needs a person (it cannot be updated in place).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from events.plan import Step

Observed = Mapping[str, Any] | None
Rule = Callable[[Step, Observed], "dict[str, Any] | None"]


def _differs(step: Step, observed: Observed, field: str) -> bool:
    return observed is not None and field in step.desired and observed.get(field) != step.desired[field]


def _content_differs(step: Step, observed: Observed) -> bool:
    """A file's content drifted: its size, or (same size) its sha256."""
    return _differs(step, observed, "size") or _differs(step, observed, "sha256")


def _with_settings(base: dict[str, Any], step: Step, *fields: str) -> dict[str, Any]:
    return base | {f: step.desired[f] for f in fields if f in step.desired}


def _directory(step: Step, observed: Observed) -> dict[str, Any] | None:
    base = {"type": "local_directory", "path": step.resource.name}
    if observed is None:
        return _with_settings(base, step, "mode", "owner")
    if observed.get("kind") != step.desired.get("kind", "directory"):
        return None
    drifted = [f for f in ("mode", "owner") if _differs(step, observed, f)]
    return _with_settings(base | {"action": "update"}, step, *drifted) if drifted else None


def _file(step: Step, observed: Observed) -> dict[str, Any] | None:
    base = {"type": "local_file", "path": step.resource.name}
    if observed is None:
        return _with_settings(base, step, "mode", "owner") | ({"content": step.stdin} if step.stdin is not None else {})
    if observed.get("kind") != step.desired.get("kind", "regular file"):
        return None
    update = _with_settings(base | {"action": "update"}, step,
                            *[f for f in ("mode", "owner") if _differs(step, observed, f)])
    if _content_differs(step, observed) and step.stdin is not None:
        update["content"] = step.stdin
    return update if len(update) > 3 else None


def _symlink(step: Step, observed: Observed) -> dict[str, Any] | None:
    base = {"type": "local_symlink", "path": step.resource.name, "target": step.desired.get("target")}
    if observed is None:
        return base
    return base | {"action": "update"} if _differs(step, observed, "target") else None


def _setting(field: str) -> Rule:
    """A facet (mode, owner, content) drifted: update that field of its resource."""

    def rule(step: Step, observed: Observed) -> dict[str, Any] | None:
        drifted = _content_differs(step, observed) if field == "content" else _differs(step, observed, field)
        if not drifted:
            return None
        if field == "content":
            if step.stdin is None:
                return None
            return {"type": "local_file", "path": step.resource.name, "content": step.stdin, "action": "update"}
        return {"type": "local_directory", "path": step.resource.name, field: step.desired[field], "action": "update"}

    return rule


Names = Callable[[str], dict[str, Any]]


def _named(name: str) -> dict[str, Any]:
    return {"name": name}


def _schema(ident: str) -> dict[str, Any]:
    database, _, name = ident.partition(".")
    return {"database": database, "name": name}


def _grant(ident: str) -> dict[str, Any]:
    role, _, rest = ident.partition("@")
    where, _, privilege = rest.rpartition(":")
    database, _, schema = where.partition(".")
    return {"role": role, "database": database, "schema": schema, "privilege": privilege}


def _table_grant(ident: str) -> dict[str, Any]:
    role, _, rest = ident.partition("@")
    where, _, privilege = rest.rpartition(":")
    database, schema, table = where.split(".", 2)
    return {"role": role, "database": database, "schema": schema, "table": table, "privilege": privilege}


def _attachment(ident: str) -> dict[str, Any]:
    role, _, policy_arn = ident.partition(":")
    return {"role": role, "policy_arn": policy_arn}


def _ingress(ident: str) -> dict[str, Any]:
    group, protocol, port, cidr = ident.split(":", 3)
    return {"group": group, "protocol": protocol, "port": int(port), "cidr": cidr}


def _parameter(step: Step, observed: Observed) -> dict[str, Any] | None:
    """An SSM parameter gone, or of another type, is put again from its stdin (a secret stays a
    reference, resolved by the executor again); a value changed out of band is not seen (read-backs
    never read the value)."""
    if step.stdin is None or not (observed is None or _differs(step, observed, "parameter_type")):
        return None
    base = {"type": "aws_ssm_parameter", "name": step.resource.name, "target": step.target, "value": step.stdin}
    return _with_settings(base | ({} if observed is None else {"action": "update"}), step, "parameter_type")


def _target_rule(
    type_name: str, names: Names = _named, settings: tuple[str, ...] = (), *, facet: bool = False,
    fixed: tuple[str, ...] = (),
) -> Rule:
    """A rule for an AWS or PostgreSQL resource (``facet``: a setting of its parent ``type_name``).

    Absent → create it again (a facet: set it again); ``settings`` drifted → update them;
    ``fixed`` drifted → ``None`` (a person must decide)."""

    def rule(step: Step, observed: Observed) -> dict[str, Any] | None:
        base = {"type": type_name, **names(step.resource.name)}
        if step.target != "global":
            base["target"] = step.target
        if observed is None:
            return _with_settings(base | ({"action": "update"} if facet else {}), step, *settings, *fixed)
        if any(_differs(step, observed, f) for f in fixed):
            return None
        drifted = [f for f in settings if _differs(step, observed, f)]
        return _with_settings(base | {"action": "update"}, step, *drifted) if drifted else None

    return rule


RULES: Mapping[str, Rule] = {
    "local_directory": _directory,
    "local_file": _file,
    "local_symlink": _symlink,
    "local_mode": _setting("mode"),
    "local_owner": _setting("owner"),
    "local_file_content": _setting("content"),
    "aws_s3_bucket": _target_rule("aws_s3_bucket"),
    **{
        f"aws_s3_bucket_{name}": _target_rule("aws_s3_bucket", settings=(field,), facet=True)
        for name, field in (("versioning", "versioning"), ("encryption", "encryption"), ("tagging", "tags"))
    },
    "aws_s3_public_access_block": _target_rule("aws_s3_bucket", settings=("public_access_block",), facet=True),
    "aws_iam_role": _target_rule("aws_iam_role", settings=("service",)),
    "aws_iam_role_policy_attachment": _target_rule("aws_iam_role_policy_attachment", _attachment),
    "aws_sqs_queue": _target_rule("aws_sqs_queue", settings=("visibility_timeout",)),
    "aws_sqs_queue_redrive": _target_rule(
        "aws_sqs_queue", settings=("dead_letter_queue", "max_receive_count"), facet=True
    ),
    "aws_dynamodb_table": _target_rule("aws_dynamodb_table", fixed=("hash_key",)),
    "aws_security_group": _target_rule("aws_security_group"),
    "aws_security_group_ingress": _target_rule("aws_security_group_ingress", _ingress),
    "aws_sns_topic": _target_rule("aws_sns_topic"),
    "aws_ssm_parameter": _parameter,
    "aws_cloudwatch_log_group": _target_rule("aws_cloudwatch_log_group"),
    "aws_cloudwatch_log_group_retention": _target_rule(
        "aws_cloudwatch_log_group", settings=("retention_days",), facet=True
    ),
    "aws_ecr_repository": _target_rule("aws_ecr_repository", settings=("tag_mutability", "scan_on_push")),
    "aws_ecr_tag_mutability": _target_rule("aws_ecr_repository", settings=("tag_mutability",), facet=True),
    "aws_ecr_scan_on_push": _target_rule("aws_ecr_repository", settings=("scan_on_push",), facet=True),
    "pg_database": _target_rule("pg_database"),
    "pg_database_owner": _target_rule("pg_database", settings=("owner",), facet=True),
    "pg_role": _target_rule("pg_role", settings=("login",)),
    "pg_schema": _target_rule("pg_schema", _schema),
    "pg_grant": _target_rule("pg_grant", _grant),
    "pg_user": _target_rule("pg_user", settings=("login",)),
    "pg_table_grant": _target_rule("pg_table_grant", _table_grant),
    "pg_schema_grant": _target_rule("pg_schema_grant", _grant),
}


def reconcile_resource(step: Step, observed: Observed) -> dict[str, Any] | None:
    """The spec resource that restores ``step``'s resource, or ``None`` (alarm only)."""
    if step.desired.get("exists", True) is False:
        return None
    rule = RULES.get(step.resource.type)
    return None if rule is None else rule(step, observed)
