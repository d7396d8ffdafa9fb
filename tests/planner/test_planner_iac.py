"""Infrastructure code → plans: fixtures written from the formats' documentation (``terraform show
-json``, ``.tf`` with variables and references, multi-document manifests) compile to the expected
plans, to the same hash as the equivalent native spec, and bad or unsupported input is refused
saying where and what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from events.model import IntentSubmitted
from services.planner.compiler import CompileInput, compile_intent
from services.planner.errors import PlanError, SpecError, UnknownResourceType
from services.planner.iac import to_native
from services.planner.iac.load import load_input
from tests.planner.keyed import KEYED, upm

FIXTURES = Path(__file__).parent / "iac"

PLAN_NATIVE: dict[str, Any] = {
    "resources": [
        {"type": "aws_dynamodb_table", "action": "delete", "name": "acme-old", "hash_key": "id",
         "hash_key_type": "S", "target": "eu-west-1"},
        {"type": "aws_iam_role", "action": "delete", "name": "app-v1", "service": "ec2.amazonaws.com"},
        {"type": "aws_iam_role", "name": "app-v2", "service": "lambda.amazonaws.com"},
        {"type": "aws_s3_bucket", "name": "acme-logs", "tags": {"team": "alpha"}, "target": "eu-west-1"},
        {"type": "aws_sqs_queue", "action": "update", "name": "acme-jobs", "visibility_timeout": 60,
         "target": "eu-west-1"},
    ],
    "notes": [
        "from aws_dynamodb_table.old (delete): delete aws_dynamodb_table:acme-old",
        "from aws_iam_role.app (replace): delete aws_iam_role:app-v1, create aws_iam_role:app-v2",
        "from aws_s3_bucket.logs (create): create aws_s3_bucket:acme-logs",
        "from aws_sqs_queue.jobs (update): update aws_sqs_queue:acme-jobs",
    ],
}

HCL_NATIVE: dict[str, Any] = {
    "resources": [
        {"type": "aws_sqs_queue", "name": "acme-prod-jobs", "visibility_timeout": 45, "target": "us-east-1"},
        {"type": "aws_s3_bucket", "name": "acme-prod-logs", "tags": {"team": "alpha", "queue": "acme-prod-jobs"},
         "target": "us-east-1", "depends_on": ["aws_sqs_queue:acme-prod-jobs"]},
    ],
    "notes": [
        "from aws_sqs_queue.jobs (main.tf:13): create aws_sqs_queue:acme-prod-jobs",
        "from aws_s3_bucket.logs (main.tf:18): create aws_s3_bucket:acme-prod-logs",
    ],
}

MANIFEST_NATIVE: dict[str, Any] = {
    "resources": [
        {"type": "k8s_deployment", "name": "web", "namespace": "shop", "image": "nginx:1.27", "replicas": 3},
        {"type": "k8s_configmap", "name": "web-config", "namespace": "shop",
         "data": {"LOG_LEVEL": "info", "MODE": "prod"}},
        {"type": "k8s_namespace", "name": "shop"},
    ],
    "notes": [
        "from manifests.yaml document 1 Deployment/web: create k8s_deployment:shop/web "
        "(labels and annotations not carried)",
        "from manifests.yaml document 2 ConfigMap/web-config: create k8s_configmap:shop/web-config",
        "from manifests.yaml document 3 Namespace/shop: create k8s_namespace:shop",
    ],
}

CASES = [
    ("plan.json", (), (), PLAN_NATIVE),
    ("tf", ("visibility=45",), ("tf/prod.tfvars",), HCL_NATIVE),
    ("manifests.yaml", (), (), MANIFEST_NATIVE),
]


def _compile(spec: dict[str, Any]) -> Any:
    return compile_intent(CompileInput(spec=spec, tenant="acme", initiator="alice"), KEYED)




@pytest.mark.parametrize(("name", "variables", "var_files", "native"), CASES)
def test_fixture_translates_to_its_native_spec_and_the_same_plan_hash(
    name: str, variables: tuple[str, ...], var_files: tuple[str, ...], native: dict[str, Any], tmp_path: Path
) -> None:
    doc = load_input(FIXTURES / name, variables, [str(FIXTURES / f) for f in var_files])
    assert to_native(doc) == native
    written = tmp_path / "native.yaml"  # the same change written by hand as a native spec file
    written.write_text(yaml.safe_dump(native))
    assert _compile(doc).hash == _compile(load_input(written)).hash
    assert _compile(doc).hash == _compile(load_input(FIXTURES / name, variables,
                                                     [str(FIXTURES / f) for f in var_files])).hash


def test_plan_json_create_update_delete_replace(capsys: pytest.CaptureFixture[str]) -> None:
    assert upm(["plan", "--file", str(FIXTURES / "plan.json"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    by_id = {s["id"]: s for s in plan["steps"]}
    assert by_id["aws_s3_bucket:eu-west-1:acme-logs"]["action"] == "create"
    assert by_id["aws_sqs_queue:eu-west-1:acme-jobs"]["command"]["display"].startswith(
        "aws sqs set-queue-attributes")
    assert by_id["aws_dynamodb_table:eu-west-1:acme-old"]["action"] == "delete"
    assert by_id["aws_iam_role:global:app-v1"]["action"] == "delete"
    assert by_id["aws_iam_role:global:app-v2"]["action"] == "create"
    assert "aws_s3_bucket:eu-west-1:acme-keep" not in by_id  # no-op
    notes = plan["annotations"]["impact"]["notes"]
    assert "from aws_iam_role.app (replace): delete aws_iam_role:app-v1, create aws_iam_role:app-v2" in notes
    # The deleted table is re-created by the rollback with its key, as the plan's `before` had it.
    assert any("create-table --table-name acme-old" in c["display"] for c in plan["rollback"])


def test_hcl_reference_is_an_edge_of_the_dag() -> None:
    plan = _compile(load_input(FIXTURES / "tf", ["env=dev"]))
    edges = {(e.source, e.target) for e in plan.graph.edges}
    assert ("aws_sqs_queue:us-east-1:acme-dev-jobs", "aws_s3_bucket:us-east-1:acme-dev-logs") in edges
    assert plan.steps[0].id == "aws_sqs_queue:us-east-1:acme-dev-jobs"


def test_manifests_put_the_namespace_first() -> None:
    plan = _compile(load_input(FIXTURES / "manifests.yaml"))
    assert [s.command.display for s in plan.steps][:1] == ["kubectl-1.29 create namespace shop"]


def test_a_plan_document_on_the_bus_is_detected_by_content() -> None:
    raw = json.loads((FIXTURES / "plan.json").read_text())
    as_file = load_input(FIXTURES / "plan.json")
    assert as_file["format"] == "terraform-plan" and as_file["files"]["plan.json"] == (FIXTURES / "plan.json").read_text()
    assert to_native(raw)["resources"] == PLAN_NATIVE["resources"]
    # What the planner service compiles from an intent whose spec is the bare plan document.
    intent = IntentSubmitted(spec=raw, initiator="alice")
    from_bus = compile_intent(CompileInput(**intent.compile_fields("acme")), KEYED)
    assert from_bus.hash == _compile(PLAN_NATIVE).hash


# -- refusals -------------------------------------------------------------------------------


def _refusal(tmp_path: Path, files: dict[str, str], variables: tuple[str, ...] = ()) -> str:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    target = tmp_path if len(files) > 1 or next(iter(files)).endswith(".tf") else tmp_path / next(iter(files))
    with pytest.raises(PlanError) as err:
        _compile(load_input(target, variables))
    return err.value.message


def test_bad_json_names_the_file_and_line(tmp_path: Path) -> None:
    bad = '{"format_version": "1.2", "resource_changes": [\n  {"address": "x",,}\n]}'
    message = _refusal(tmp_path, {"plan.json": bad})
    assert "plan.json" in message and "line 2" in message


def test_bad_hcl_names_file_line_and_column(tmp_path: Path) -> None:
    message = _refusal(tmp_path, {"main.tf": 'resource "aws_sqs_queue" "q" {\n  name = \n}\n'})
    assert message.startswith("main.tf:2:") and "not valid HCL" in message


def test_unknown_types_are_listed_at_once_with_the_closest(tmp_path: Path) -> None:
    tf = ('resource "aws_s3_buckets" "a" {\n  bucket = "x-a"\n}\n'
          'resource "aws_lambda_function" "f" {\n  function_name = "f"\n}\n'
          'resource "aws_sqs_queue" "q" {\n  name = "q"\n}\n')
    (tmp_path / "main.tf").write_text(tf)
    with pytest.raises(UnknownResourceType) as err:
        _compile(load_input(tmp_path))
    message = err.value.message
    assert message.startswith("2 resource types in the configuration UPM cannot plan, so nothing was planned")
    assert "aws_s3_buckets (main.tf:1: resource aws_s3_buckets.a); closest supported: aws_s3_bucket" in message
    assert "aws_lambda_function (main.tf:4: resource aws_lambda_function.f)" in message


def test_module_and_data_source_are_refused_with_file_line(tmp_path: Path) -> None:
    tf = ('data "aws_caller_identity" "me" {}\n\n'
          'module "vpc" {\n  source = "terraform-aws-modules/vpc/aws"\n}\n\n'
          'resource "aws_sqs_queue" "q" {\n  name = "q"\n}\n')
    message = _refusal(tmp_path, {"main.tf": tf})
    assert "main.tf:1: data source data.aws_caller_identity.me" in message
    assert "main.tf:3: module 'vpc'" in message


def test_missing_variable_says_how_to_give_it(tmp_path: Path) -> None:
    message = _refusal(tmp_path, {"main.tf": 'variable "env" {}\nresource "aws_sqs_queue" "q" {\n  name = var.env\n}\n'})
    assert "variable(s) without a value: env (main.tf:1)" in message and "--var NAME=VALUE" in message


def test_function_calls_and_for_each_are_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, {"main.tf": 'resource "aws_sqs_queue" "q" {\n  name = upper("q")\n}\n'})
    assert "main.tf:1" in message and "function call 'upper(\"q\")'" in message
    message = _refusal(tmp_path, {"main.tf": 'resource "aws_sqs_queue" "q" {\n  for_each = toset(["a"])\n'
                                             '  name = each.key\n}\n'})
    assert "main.tf:1: for_each in resource aws_sqs_queue.q" in message


def test_an_attribute_upm_cannot_set_is_refused_by_name(tmp_path: Path) -> None:
    message = _refusal(tmp_path, {"main.tf": 'resource "aws_sqs_queue" "q" {\n  name = "q"\n  delay_seconds = 5\n}\n'})
    assert "aws_sqs_queue.q: UPM's aws_sqs_queue cannot set delay_seconds" in message


def test_a_value_known_only_after_apply_is_refused(tmp_path: Path) -> None:
    plan = json.loads((FIXTURES / "plan.json").read_text())
    logs = plan["resource_changes"][0]
    logs["change"]["after"].pop("bucket")
    logs["change"]["after_unknown"]["bucket"] = True
    plan["configuration"]["root_module"]["resources"] = []
    with pytest.raises(SpecError) as err:
        to_native(plan)
    assert err.value.message.startswith("terraform plan: aws_s3_bucket.logs: bucket is known only after apply")
    # ... unless the configuration gives it
    plan["configuration"]["root_module"]["resources"] = [
        {"address": "aws_s3_bucket.logs", "expressions": {"bucket": {"constant_value": "acme-logs"}}}]
    assert to_native(plan)["resources"] == PLAN_NATIVE["resources"]


def test_unsupported_kinds_are_listed_at_once(tmp_path: Path) -> None:
    docs = ("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n"
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    (tmp_path / "all.yaml").write_text(docs)
    with pytest.raises(UnknownResourceType) as err:
        _compile(load_input(tmp_path / "all.yaml"))
    assert "ServiceAccount (all.yaml document 1: ServiceAccount/web)" in err.value.message
    assert "Service (all.yaml document 2: Service/web)" in err.value.message


def test_a_deployment_setting_upm_would_not_carry_is_refused(tmp_path: Path) -> None:
    doc = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n"
           "      containers:\n        - {name: web, image: 'nginx:1.27', env: [{name: A, value: b}]}\n")
    message = _refusal(tmp_path, {"d.yaml": doc})
    assert "d.yaml document 1 Deployment/web: containers[0].env" in message


def test_same_identity_replace_is_refused(tmp_path: Path) -> None:
    plan = json.loads((FIXTURES / "plan.json").read_text())
    role = plan["resource_changes"][3]
    role["change"]["after"]["name"] = "app-v1"
    with pytest.raises(SpecError, match=r"aws_iam_role\.app is replaced under the same identity"):
        to_native(plan)


def test_cli_plans_a_tf_directory_with_vars(capsys: pytest.CaptureFixture[str]) -> None:
    assert upm(["plan", "--file", str(FIXTURES / "tf"), "--var", "env=qa", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in plan["steps"]][:2] == ["aws_sqs_queue:us-east-1:acme-qa-jobs",
                                                   "aws_s3_bucket:us-east-1:acme-qa-logs"]
    assert upm(["plan", "--file", str(FIXTURES / "tf")]) == 2
    assert "variable(s) without a value: env (variables.tf:1)" in capsys.readouterr().err


def test_count_of_a_known_number_is_expanded_and_plan_diff_reads_tf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "main.tf").write_text('variable "n" {\n  default = 2\n}\n'
                                      'resource "aws_sqs_queue" "q" {\n  count = var.n\n  name = "q-${count.index}"\n}\n')
    native = to_native(load_input(tmp_path))
    assert [r["name"] for r in native["resources"]] == ["q-0", "q-1"]
    assert native["notes"][1] == "from aws_sqs_queue.q[1] (main.tf:4): create aws_sqs_queue:q-1"
    assert upm(["plan", "diff", str(tmp_path), str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    assert upm(["plan", "diff", str(FIXTURES / "tf" / "main.tf"), str(tmp_path)]) == 2  # without variables.tf
    assert 'main.tf:1: var.region is not declared; add variable "region" {}' in capsys.readouterr().err


SETTINGS_TF = """\
resource "aws_s3_bucket" "logs" {
  bucket = "acme-logs"
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.bucket
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
  }
}

resource "aws_s3_bucket_versioning" "other" {
  bucket = "acme-existing"
  versioning_configuration {
    status = "Suspended"
  }
}
"""


def test_bucket_setting_resources_merge_into_their_bucket(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(SETTINGS_TF)
    native = to_native(load_input(tmp_path))
    assert native["resources"] == [
        {"type": "aws_s3_bucket", "name": "acme-logs", "versioning": True, "encryption": "aws:kms"},
        {"type": "aws_s3_bucket", "name": "acme-existing", "versioning": False, "action": "update"},
    ]
    assert "from aws_s3_bucket_versioning.logs (main.tf:5): set versioning of aws_s3_bucket:acme-logs" in native["notes"]
    plan = _compile(load_input(tmp_path))
    ids = [s.id for s in plan.steps]
    assert "aws_s3_bucket_versioning:us-east-1:acme-logs" in ids
    assert "aws_s3_bucket_encryption:us-east-1:acme-logs" in ids


def test_a_plan_destroying_a_bucket_setting_alone_is_refused_and_with_its_bucket_goes_along() -> None:
    plan = json.loads((FIXTURES / "plan.json").read_text())
    versioning = {"address": "aws_s3_bucket_versioning.gone", "mode": "managed", "type": "aws_s3_bucket_versioning",
                  "name": "gone", "change": {"actions": ["delete"], "after": None, "after_unknown": {},
                                             "before": {"bucket": "acme-gone", "id": "acme-gone",
                                                        "versioning_configuration": [{"status": "Enabled"}]}}}
    plan["resource_changes"].append(versioning)
    with pytest.raises(SpecError, match=r"aws_s3_bucket_versioning\.gone is destroyed while its bucket stays"):
        to_native(plan)
    plan["resource_changes"].append({
        "address": "aws_s3_bucket.gone", "mode": "managed", "type": "aws_s3_bucket", "name": "gone",
        "change": {"actions": ["delete"], "before": {"bucket": "acme-gone"}, "after": None, "after_unknown": {}}})
    native = to_native(plan)
    assert {"type": "aws_s3_bucket", "action": "delete", "name": "acme-gone", "target": "eu-west-1"} in native["resources"]


def test_an_update_of_only_what_upm_does_not_manage_plans_nothing_for_it() -> None:
    plan = json.loads((FIXTURES / "plan.json").read_text())
    jobs = plan["resource_changes"][1]["change"]
    jobs["after"]["visibility_timeout_seconds"] = 30
    jobs["after"]["arn"] = "arn:aws:sqs:eu-west-1:123456789012:acme-jobs"  # computed: not UPM's
    native = to_native(plan)
    assert not [r for r in native["resources"] if r["type"] == "aws_sqs_queue"]
    assert "from aws_sqs_queue.jobs (update): nothing UPM sets changes" in native["notes"]


def test_heredocs_counted_references_and_escapes(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(
        'resource "aws_sqs_queue" "q" {\n  count = 2\n  name  = "q-${count.index}"\n}\n'
        'resource "local_file" "f" {\n  filename = "/tmp/upm-iac/conf.txt"\n  file_permission = "0640"\n'
        '  content  = <<-EOT\n    queue=${aws_sqs_queue.q[1].name}\n    literal=$${kept}\n  EOT\n}\n')
    [*_, conf] = to_native(load_input(tmp_path))["resources"]
    assert conf == {"type": "local_file", "path": "/tmp/upm-iac/conf.txt", "mode": "0640",
                    "content": "queue=q-1\nliteral=${kept}\n", "depends_on": ["aws_sqs_queue:q-1"]}
