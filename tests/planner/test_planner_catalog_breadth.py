"""The catalog's breadth as the planner compiles it (issue 24 item 4): refusals of what a target cannot
do, secrets by reference, dependencies between the new types, and updates done by facets alone."""

from __future__ import annotations

import pytest

from services.planner import CompileInput, compile_intent
from services.planner.errors import UnrecognisedPhrase, UnsupportedAction
from services.planner.nl import parse_request
from tests.planner.keyed import KEYED


def plan_of(request: str) -> list[str]:
    return [s.command.display for s in compile_intent(CompileInput(request=request), KEYED).steps]


def test_renaming_a_bucket_is_refused_at_plan_time_saying_why_and_what_to_do() -> None:
    with pytest.raises(UnsupportedAction) as caught:
        compile_intent(CompileInput(request="Rename bucket logs-old to logs-new"), KEYED)
    message = caught.value.message
    assert "S3 cannot rename a bucket" in message
    assert "aws s3 sync s3://logs-old s3://logs-new" in message and "delete bucket logs-old" in message
    spec = {"resources": [{"type": "aws_s3_bucket", "name": "logs-old", "action": "rename", "new_name": "logs-new"}]}
    with pytest.raises(UnsupportedAction, match="S3 cannot rename a bucket"):
        compile_intent(CompileInput(spec=spec), KEYED)


def test_renaming_a_type_without_advice_of_its_own_gets_the_generic_one() -> None:
    with pytest.raises(UnsupportedAction, match="create sns topic b and delete a"):
        compile_intent(CompileInput(request="rename the sns topic a to b"), KEYED)


@pytest.mark.timeout(20)
def test_a_setting_word_out_of_place_is_refused_not_looped_on() -> None:
    """'nodes' is a word the type knows (a suffix: '3 nodes'); alone it was 'corrected' to itself forever."""
    with pytest.raises(UnrecognisedPhrase, match="could not understand 'nodes'"):
        parse_request("create aks cluster aks-x in eastus nodes")


def test_a_unit_after_a_value_is_read_with_it() -> None:
    (item,) = parse_request("create log group /app/web with retention 30 days").resources
    assert item.fields["retention_days"] == "30"


def test_an_ssm_parameter_holds_its_secret_as_a_reference_fed_on_stdin_never_in_argv() -> None:
    plan = compile_intent(CompileInput(request="create ssm parameter /app/db/password with value secret:DB_PASS"), KEYED)
    (step,) = plan.steps
    assert step.stdin == "secret:DB_PASS"
    assert "--value file:///dev/stdin" in step.command.display and "DB_PASS" not in step.command.display
    assert step.desired == {"exists": True, "parameter_type": "SecureString"}
    assert step.guard is None  # re-putting is harmless; the read-back cannot see the value


def test_a_login_user_created_in_the_same_plan_satisfies_a_grant_to_that_role() -> None:
    plan = compile_intent(CompileInput(
        request="grant role bob read access to table items in database shop and create postgres user bob"), KEYED)
    assert [s.resource.type for s in plan.steps] == ["pg_user", "pg_table_grant"]
    assert [p.resource.key for p in plan.resources_needed] == ["pg_database:default:shop"]


def test_an_ingress_rule_on_a_group_by_name_needs_the_group_and_by_id_does_not() -> None:
    by_name = compile_intent(CompileInput(request="open port 443 on security group web-sg"), KEYED)
    assert [p.resource.key for p in by_name.resources_needed] == ["aws_security_group:us-east-1:web-sg"]
    assert "--group-name web-sg" in by_name.steps[0].command.display
    by_id = compile_intent(CompileInput(request="open port 443 on sg-0123abcd"), KEYED)
    assert by_id.resources_needed == () and "--group-id sg-0123abcd" in by_id.steps[0].command.display
    assert by_id.rollback[0].display.startswith("aws ec2 revoke-security-group-ingress --group-id sg-0123abcd")


def test_an_update_naming_only_the_dead_letter_queue_does_not_reset_the_queue_to_defaults() -> None:
    steps = plan_of("update sqs queue jobs with dead letter queue jobs-dlq")
    assert len(steps) == 1 and "RedrivePolicy" in steps[0] and "VisibilityTimeout" not in steps[0]
    both = plan_of("update sqs queue jobs with visibility timeout 60 and dead letter queue jobs-dlq")
    assert len(both) == 2 and any("VisibilityTimeout=60" in s for s in both)


def test_a_node_pool_needs_its_cluster_and_scales_in_place() -> None:
    plan = compile_intent(CompileInput(request="scale node pool gpu for cluster aks-demo to 5 nodes"), KEYED)
    assert [s.command.display for s in plan.steps] == [
        "az aks nodepool scale --cluster-name aks-demo --name gpu --resource-group rg-demo --node-count 5"]
    created = compile_intent(CompileInput(request="create aks cluster aks-demo in eastus and node pool gpu for "
                                                  "cluster aks-demo"), KEYED)
    assert [s.resource.type for s in created.steps][-1] == "az_aks_nodepool" and created.resources_needed == ()


def test_no_catalog_field_is_named_like_a_spec_key_it_could_never_be_given_as() -> None:
    """An SSM parameter's field was called `type`: a native spec (and every drift reconcile, which writes
    one) could not set it, because `type` names the resource type (the reconcile was rejected:
    "unknown resource type 'SecureString'")."""
    from providers import CATALOG
    from services.planner.spec import _RESERVED_BUT_TARGET

    clashes = [(t.name, f) for t in CATALOG.values() for f in t.field_names if f in _RESERVED_BUT_TARGET]
    assert clashes == []


def test_an_ssm_parameter_type_is_set_from_a_spec() -> None:
    spec = {"resources": [{"type": "aws_ssm_parameter", "name": "/app/flag", "value": "on",
                           "parameter_type": "String"}]}
    (step,) = compile_intent(CompileInput(spec=spec)).steps
    assert step.desired["parameter_type"] == "String" and "String" in step.command.argv
