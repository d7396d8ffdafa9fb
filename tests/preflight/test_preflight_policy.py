"""Policy packs with regopy: every violation listed, custom packs, broken files refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest
from preflight_helpers import MONDAY_NOON, config, plan_of

from services.preflight.config import BUILTIN_PACK
from services.preflight.errors import PolicyLoadError
from services.preflight.policy import build_pack, load_pack
from services.preflight.risk import Subject, score
from services.preflight.verdict import SAMPLES, evaluate, packs_for, policy_input

GOOD = """package upm.preflight

import rego.v1

deny contains {"rule": "no-tmp", "message": sprintf("%s is under /tmp", [r.name])} if {
	some r in input.resources
	startswith(r.name, "/tmp/forbidden")
}
"""


def _verdict(request: str, environment: str = "dev", folders: tuple[Path, ...] = (BUILTIN_PACK,), **extra: object):
    cfg = config(**extra)
    plan = plan_of(request)
    subject = Subject(tenant="acme", change_id="c", environment=environment, initiator="alice", plan=plan)
    risk = score(subject, cfg, MONDAY_NOON)
    packs = [load_pack(f, samples=SAMPLES) for f in folders]
    return evaluate(packs, policy_input(subject, risk, cfg, MONDAY_NOON), plan.hash, risk)


def test_every_violation_is_listed_with_its_rule_and_message() -> None:
    verdict, records = _verdict("Create S3 bucket logs-acme in us-east-1 and S3 bucket plain-bucket in us-east-1",
                                budgets={"*": 0.5}, limits={"max_resources": 1})
    rules = sorted(v.rule for v in verdict.violations)
    assert rules == ["blast-radius", "bucket-encrypted", "bucket-encrypted", "budget"]
    assert all(v.message for v in verdict.violations)
    assert not verdict.allowed
    (record,) = records
    assert record.pack == "policies" and record.pack_hash.startswith("sha256:")
    assert record.input["resources"] and record.input_digest.startswith("sha256:")
    assert {d["rule"] for d in record.output["deny"]} == set(rules)


def test_a_low_risk_dev_change_takes_the_auto_lane_with_its_rule() -> None:
    verdict, _ = _verdict("Create directory /srv/app with mode 0750")
    assert verdict.allowed and verdict.lane == "auto"
    assert verdict.auto[0].rule == "low-risk-auto"
    assert verdict.requirements() == ()


def test_a_destructive_prod_change_needs_two_approvers_and_the_window() -> None:
    verdict, _ = _verdict("Delete directory /srv/old", environment="prod")
    assert verdict.lane == "manual"
    (req,) = verdict.requirements()
    assert (req.rule, req.groups, req.count) == ("prod-two-approvers", ("platform-owners",), 2)
    window = verdict.window_rule()
    assert window is not None and window.rule == "destructive-prod-window"


def test_a_custom_pack_from_a_folder_changes_the_outcome(tmp_path: Path) -> None:
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "tmp.rego").write_text(GOOD)
    request = "Create directory /tmp/forbidden/x with mode 0750"
    before, _ = _verdict(request)
    after, records = _verdict(request, folders=(BUILTIN_PACK, tmp_path / "custom"))
    assert before.allowed
    assert not after.allowed and [v.rule for v in after.violations] == ["no-tmp"]
    assert [r.pack for r in records] == ["policies", "custom"]


def test_the_tenant_packs_come_from_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "acme-pack").mkdir()
    (tmp_path / "acme-pack" / "p.rego").write_text(GOOD)
    cfg = config(policies={"*": ["builtin"], "acme": ["builtin", str(tmp_path / "acme-pack")]})
    assert [p.name for p in packs_for(cfg, "acme")] == ["policies", "acme-pack"]
    assert [p.name for p in packs_for(cfg, "other")] == ["policies"]


def test_a_broken_rego_file_is_refused_at_load_naming_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "ok.rego").write_text(GOOD)
    (tmp_path / "broken.rego").write_text("package upm.preflight\n\nimport rego.v1\n\ndeny contains x if {\n"
                                          "\tx := input.n +\n}\n")
    with pytest.raises(PolicyLoadError) as err:
        load_pack(tmp_path)
    assert err.value.file == str(tmp_path / "broken.rego")
    assert err.value.line == 6
    assert "broken.rego:6" in str(err.value)


def test_a_call_to_an_unknown_function_is_refused_at_load_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "fn.rego").write_text("package upm.preflight\n\nimport rego.v1\n\ndeny contains v if {\n"
                                      "\tsome r in input.resources\n\tv := {\"rule\": no_such_fn(r), \"message\": \"m\"}\n}\n")
    with pytest.raises(PolicyLoadError, match="no_such_fn") as err:
        load_pack(tmp_path, samples=SAMPLES)
    assert (err.value.file, err.value.line) == (str(tmp_path / "fn.rego"), 7)


def test_the_wrong_package_and_the_wrong_answer_shape_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match=r"declare `package upm\.preflight`") as err:
        build_pack("p", tmp_path, [("a.rego", "# x\npackage other\n")])
    assert err.value.line == 2
    shapeless = 'package upm.preflight\n\nimport rego.v1\n\ndeny contains "just a string" if { true }\n'
    with pytest.raises(PolicyLoadError, match="wrong shape"):
        build_pack("p", tmp_path, [("a.rego", shapeless)], samples=SAMPLES)


def test_an_empty_or_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match=r"holds no \.rego file"):
        load_pack(tmp_path)
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_pack(tmp_path / "nope")


def test_a_pack_is_cached_until_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(GOOD)
    first = load_pack(tmp_path)
    assert load_pack(tmp_path) is first
    (tmp_path / "p.rego").write_text(GOOD + "\n# changed\n")
    second = load_pack(tmp_path)
    assert second is not first and second.hash != first.hash


def test_a_public_bucket_is_refused_and_a_private_encrypted_one_allowed() -> None:
    from services.planner import CompileInput, compile_intent
    from services.preflight.verdict import summarize

    public = compile_intent(CompileInput(spec={"resources": [
        {"type": "aws_s3_bucket", "name": "open-data", "encryption": "AES256", "public_access_block": False}]},
        tenant="acme"))
    (bucket,) = summarize(public)
    assert bucket["fields"] == {"encryption": "AES256"}  # the planner adds no public access block step
    pack = load_pack(BUILTIN_PACK, samples=SAMPLES)
    cfg = config()
    for plan, expected in ((public, ["bucket-not-public"]), (plan_of("Create S3 bucket logs-acme in us-east-1 "
                                                                      "with encryption"), [])):
        subject = Subject(tenant="acme", change_id="c", environment="dev", initiator="alice", plan=plan)
        risk = score(subject, cfg, MONDAY_NOON)
        verdict, _ = evaluate([pack], policy_input(subject, risk, cfg, MONDAY_NOON), plan.hash, risk)
        assert [v.rule for v in verdict.violations] == expected
