"""Terraform resource types → UPM catalog types, attribute by attribute (shared by plan JSON and HCL).

A :class:`TfType` says which catalog type a Terraform type becomes, how each UPM field is read
from the Terraform attributes, which attributes that consumes, which are computed or provider
bookkeeping (ignored), and which provider defaults are accepted as they are. Any other attribute
with a value is refused by name: UPM would not set it, so planning without it would be partial.
Pure; no I/O.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers import CATALOG
from services.planner.errors import InvalidFieldValue, SpecError, UnknownResourceType

Attrs = Mapping[str, Any]
# Computed or bookkeeping attributes of every Terraform resource that UPM has nothing to do with.
_ALWAYS_IGNORED = frozenset({"id", "arn", "tags_all", "timeouts", "region", "force_destroy", "url"})


def attr(name: str) -> Callable[[Attrs], Any]:
    """The attribute ``name``."""
    return lambda a: a.get(name)


def block(name: str, key: str) -> Callable[[Attrs], Any]:
    """``key`` of the first ``name`` block (Terraform blocks are lists of objects in both forms)."""

    def read(a: Attrs) -> Any:
        value = a.get(name)
        first = value[0] if isinstance(value, list) and value else value
        return first.get(key) if isinstance(first, Mapping) else None

    return read


def _service(a: Attrs) -> Any:
    """The one service principal of an ``assume_role_policy`` (a JSON string or a decoded object)."""
    raw = a.get("assume_role_policy")
    if raw is None:
        return None
    doc = json.loads(raw) if isinstance(raw, str) else raw
    statements = doc.get("Statement") if isinstance(doc, Mapping) else None
    if isinstance(statements, Mapping):
        statements = [statements]
    principal = statements[0].get("Principal") if isinstance(statements, list) and len(statements) == 1 else None
    service = principal.get("Service") if isinstance(principal, Mapping) else None
    if not isinstance(service, str):
        raise InvalidFieldValue(
            "assume_role_policy must be one statement allowing one service principal "
            '(Principal = {Service = "lambda.amazonaws.com"}): that is the trust policy UPM\'s aws_iam_role sets'
        )
    return service


def _hash_key_type(a: Attrs) -> Any:
    key = a.get("hash_key")
    for item in a.get("attribute") or ():
        if isinstance(item, Mapping) and item.get("name") == key:
            return item.get("type")
    return None


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _sse(a: Attrs) -> Any:
    """The algorithm of the inline ``server_side_encryption_configuration`` block."""
    rule = _first((_first(a.get("server_side_encryption_configuration")) or {}).get("rule"))
    default = _first((rule or {}).get("apply_server_side_encryption_by_default"))
    return (default or {}).get("sse_algorithm")


def _versioning(a: Attrs) -> Any:
    """``enabled`` of the inline ``versioning`` block."""
    return (_first(a.get("versioning")) or {}).get("enabled")


def _versioning_status(a: Attrs) -> Any:
    status = (_first(a.get("versioning_configuration")) or {}).get("status")
    return None if status is None else status == "Enabled"


def _sse_rule(a: Attrs) -> Any:
    return _sse({"server_side_encryption_configuration": [{"rule": a.get("rule")}]})


_BLOCKS = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")


def _public_access_block(a: Attrs) -> Any:
    return all(bool(a.get(k)) for k in _BLOCKS)


def _mode(a: Attrs) -> Any:
    return a.get("file_permission")


@dataclass(frozen=True)
class TfType:
    """How one Terraform type maps to a catalog type (see the module docstring)."""

    upm: str
    fields: Mapping[str, Callable[[Attrs], Any]]
    consumes: frozenset[str]
    ignored: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    setting: bool = False  # a setting of another resource (``upm``), merged into it: see merge_settings

    def translate(self, attrs: Attrs, where: str) -> dict[str, Any]:
        """The UPM fields of a resource with Terraform ``attrs``; refuses attributes UPM cannot set."""
        extra = sorted(
            k for k, v in attrs.items()
            if k not in self.consumes and k not in self.ignored and k not in _ALWAYS_IGNORED
            and not _empty(v) and self.defaults.get(k, _UNSET) != v
        )
        if extra:
            raise SpecError(
                f"{where}: UPM's {self.upm} cannot set {', '.join(extra)}; remove "
                f"{'them' if len(extra) > 1 else 'it'} from the configuration or manage this resource outside UPM "
                f"(it sets: {', '.join(sorted(self.consumes))})"
            )
        out: dict[str, Any] = {}
        for name, read in self.fields.items():
            try:
                value = read(attrs)
            except (InvalidFieldValue, ValueError) as err:
                raise SpecError(f"{where}: {getattr(err, 'message', err)}") from None
            if value is not None and value != {}:
                out[name] = value
        return out


_UNSET = object()


def _empty(value: Any) -> bool:
    return (value is None or value is False or value == "" or (type(value) is int and value == 0)
            or (isinstance(value, (list, dict)) and not value))


_K8S_META = frozenset({"metadata"})

TYPES: Mapping[str, TfType] = {
    "aws_s3_bucket": TfType(
        "aws_s3_bucket",
        {"name": attr("bucket"), "tags": attr("tags"), "encryption": _sse, "versioning": _versioning},
        frozenset({"bucket", "tags", "server_side_encryption_configuration", "versioning"}),
        ignored=frozenset({"bucket_domain_name", "bucket_regional_domain_name", "hosted_zone_id",
                           "acceleration_status", "acl", "policy", "request_payer", "object_lock_enabled",
                           "website_domain", "website_endpoint", "bucket_prefix"}),
    ),
    "aws_s3_bucket_versioning": TfType(
        "aws_s3_bucket", {"name": attr("bucket"), "versioning": _versioning_status},
        frozenset({"bucket", "versioning_configuration"}), ignored=frozenset({"expected_bucket_owner"}), setting=True,
    ),
    "aws_s3_bucket_server_side_encryption_configuration": TfType(
        "aws_s3_bucket", {"name": attr("bucket"), "encryption": _sse_rule},
        frozenset({"bucket", "rule"}), ignored=frozenset({"expected_bucket_owner"}), setting=True,
    ),
    "aws_s3_bucket_public_access_block": TfType(
        "aws_s3_bucket", {"name": attr("bucket"), "public_access_block": _public_access_block},
        frozenset({"bucket", *_BLOCKS}), setting=True,
    ),
    "aws_sqs_queue": TfType(
        "aws_sqs_queue",
        {"name": attr("name"), "visibility_timeout": attr("visibility_timeout_seconds")},
        frozenset({"name", "visibility_timeout_seconds", "fifo_queue", "tags"}),
        defaults={"message_retention_seconds": 345600, "max_message_size": 262144,
                  "sqs_managed_sse_enabled": True, "kms_data_key_reuse_period_seconds": 300},
    ),
    "aws_iam_role": TfType(
        "aws_iam_role", {"name": attr("name"), "service": _service},
        frozenset({"name", "assume_role_policy"}),
        ignored=frozenset({"create_date", "unique_id", "managed_policy_arns", "inline_policy", "name_prefix"}),
        defaults={"path": "/", "max_session_duration": 3600},
    ),
    "aws_iam_role_policy_attachment": TfType(
        "aws_iam_role_policy_attachment", {"role": attr("role"), "policy_arn": attr("policy_arn")},
        frozenset({"role", "policy_arn"}),
    ),
    "aws_dynamodb_table": TfType(
        "aws_dynamodb_table",
        {"name": attr("name"), "hash_key": attr("hash_key"), "hash_key_type": _hash_key_type},
        frozenset({"name", "hash_key", "attribute"}),
        ignored=frozenset({"stream_arn", "stream_label"}),
        defaults={"billing_mode": "PAY_PER_REQUEST"},
    ),
    "kubernetes_namespace": TfType(
        "k8s_namespace", {"name": block("metadata", "name")}, _K8S_META,
    ),
    "kubernetes_config_map": TfType(
        "k8s_configmap",
        {"name": block("metadata", "name"), "namespace": block("metadata", "namespace"), "data": attr("data")},
        frozenset({"metadata", "data"}),
    ),
    "postgresql_database": TfType(
        "pg_database", {"name": attr("name"), "owner": attr("owner")}, frozenset({"name", "owner"}),
    ),
    "postgresql_role": TfType(
        "pg_role", {"name": attr("name"), "login": attr("login")}, frozenset({"name", "login"}),
    ),
    "azurerm_resource_group": TfType(
        "az_resource_group", {"name": attr("name"), "location": attr("location")},
        frozenset({"name", "location"}),
    ),
    "local_file": TfType(
        "local_file", {"path": attr("filename"), "content": attr("content"), "mode": _mode},
        frozenset({"filename", "content", "file_permission"}),
        ignored=frozenset({"directory_permission", "content_md5", "content_sha1", "content_sha256",
                           "content_sha512", "content_base64sha256", "content_base64sha512"}),
    ),
}
TYPES = {**TYPES, "kubernetes_namespace_v1": TYPES["kubernetes_namespace"],
         "kubernetes_config_map_v1": TYPES["kubernetes_config_map"]}


def with_region(entry: dict[str, Any], region: Any) -> dict[str, Any]:
    """``entry`` with the provider's ``region`` as its target, for a regional AWS type (not IAM)."""
    if isinstance(region, str) and entry["type"] in _REGIONAL:
        return {**entry, "target": region}
    return entry


_REGIONAL = frozenset({"aws_s3_bucket", "aws_sqs_queue", "aws_dynamodb_table"})


_NOT_SET = frozenset({"type", "name", "target", "depends_on", "action"})


def fields_set(entry: Mapping[str, Any]) -> str:
    """The fields a translated setting sets, for the notes (``versioning, encryption``)."""
    return ", ".join(k for k in entry if k not in _NOT_SET)


def merge_settings(resources: list[dict[str, Any]], settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``resources`` with each setting (a translated ``aws_s3_bucket_versioning``…: the parent's type,
    its name, the field) merged into the parent the same input creates or updates, else added as
    an update of that parent (which must exist: the plan checks it)."""
    out = [dict(r) for r in resources]
    for setting in settings:
        key = name_of(setting["type"], setting)
        parent = next((r for r in out if name_of(r["type"], r) == key and r.get("action") != "delete"), None)
        if parent is None:
            out.append({**setting, "action": "update"})
            continue
        for field_name, value in setting.items():
            if field_name == "depends_on":
                deps = sorted(set(parent.get("depends_on", [])) | set(value) - {key})
                if deps:
                    parent["depends_on"] = deps
            elif field_name != "action":
                parent[field_name] = value
    return out


def name_of(upm_type: str, fields: Mapping[str, Any]) -> str:
    """The ``type:name`` reference a native spec's ``depends_on`` uses for a translated resource
    (the name is the type's identity, e.g. ``namespace/name`` for a deployment)."""
    rtype = CATALOG[upm_type]
    values = {f.name: fields.get(f.name, f.default) for f in rtype.fields}
    return f"{upm_type}:{rtype.ident.format_map(values)}"


def refuse_unsupported(found: Sequence[tuple[str, str]], what: str, supported: Sequence[str]) -> None:
    """Raise one :class:`UnknownResourceType` listing every unsupported ``(type, where)`` at once,
    each with the closest supported types; nothing is planned."""
    if not found:
        return
    lines = []
    for kind, where in found:
        close = difflib.get_close_matches(kind, supported, n=3, cutoff=0.5)
        hint = f"; closest supported: {', '.join(close)}" if close else ""
        lines.append(f"{kind} ({where}){hint}")
    raise UnknownResourceType(
        f"{len(found)} {what} UPM cannot plan, so nothing was planned: " + "; ".join(lines)
        + f". Supported: {', '.join(sorted(supported))}. Remove them or manage them outside UPM"
    )
