"""Pure tamper evidence: `audit verify` over raw records, evidence packs built and verified offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from upm_history import History, failed, happy, ts

from events import merkle, neutral, signing
from events.model import IntentSubmitted, decode_event
from events.subjects import LOG_HEADS_CHANGE_ID, SYSTEM_TENANT
from services.auditor import audit, evidence, heads
from services.auditor.errors import AuditFailed, EvidenceInvalid

SPEC_EXAMPLE = json.loads((Path(__file__).parent / "spec_neutral_event.json").read_text())


def sign_head(h: History, signer: signing.Signer) -> evidence.LogHead:
    """Append a signed head of everything so far to ``h``; return it as stored."""
    tree = merkle.MerkleTree()
    for _, data in h.records:
        tree.append(data)
    payload = evidence.sign_head(signer, tree, ts(10_000))
    h.append(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID, payload, 10_000, "auditor", "team")
    return evidence.LogHead(seq=len(h.records), size=payload.size, root=payload.root, signed_at=payload.signed_at,
                            key_id=payload.key_id, signature=payload.signature)


def pack(h: History, change_id: str, head: evidence.LogHead, signer: signing.Signer) -> bytes:
    tree = merkle.MerkleTree()
    for _, data in h.records:
        tree.append(data)
    mine = [(seq, data) for seq, data in h.records[: head.size] if decode_event(data).change_id == change_id]
    return evidence.pack_from_log(mine, tree, head, signer)


@pytest.fixture
def signer(tmp_path: Path) -> signing.Signer:
    return signing.load_or_create(tmp_path)


def test_audit_verify_accepts_an_untouched_log(signer: signing.Signer) -> None:
    h = History()
    happy(h)
    sign_head(h, signer)
    failed(h, "other", at=100)
    sign_head(h, signer)
    report = audit.verify_log(h.records, {signer.key_id: signer.public_hex}, require_signatures=True)
    assert (report.heads, report.heads_signature_checked, report.changes) == (2, 2, 3)
    assert report.head_size == len(h.records) - 1


def test_a_rewritten_event_fails_audit_verify_naming_the_event(signer: signing.Signer) -> None:
    h = History()
    happy(h)
    sign_head(h, signer)
    i = next(i for i, (_, data) in enumerate(h.records) if b'"rc":0' in data)
    seq, data = h.records[i]
    victim = decode_event(data)
    tampered = list(h.records)
    tampered[i] = (seq, data.replace(b'"rc":0', b'"rc":7'))
    with pytest.raises(AuditFailed) as err:
        audit.verify_log(tampered, {signer.key_id: signer.public_hex})
    assert err.value.event_id == victim.id
    assert err.value.seq == seq
    assert victim.id in str(err.value)


def test_a_head_that_does_not_match_the_log_is_named(signer: signing.Signer) -> None:
    h = History()
    happy(h)
    sign_head(h, signer)
    records = list(h.records)
    # Re-seal a rewritten change consistently: the chain verifies, but the signed head does not.
    forged = History()
    happy(forged, at=1)
    forged_records = [(seq, data) for seq, data in forged.records] + records[len(forged.records):]
    with pytest.raises(AuditFailed) as err:
        audit.verify_log(forged_records, {signer.key_id: signer.public_hex})
    assert err.value.check == "head-root"
    assert err.value.seq == len(records)


def test_a_gap_in_sequences_is_refused() -> None:
    h = History()
    happy(h)
    with pytest.raises(AuditFailed, match="sequence 3 is missing"):
        audit.verify_log(h.records[:2] + h.records[3:])


def test_the_same_log_gives_a_byte_identical_pack_that_verifies(signer: signing.Signer) -> None:
    h = History()
    c = failed(h, published=False)
    head = sign_head(h, signer)
    first = pack(h, c.change_id, head, signer)
    assert first == pack(h, c.change_id, head, signer)
    report = evidence.verify_pack(first, {signer.key_id: signer.public_hex})
    assert report.change_id == c.change_id
    files = evidence.read_pack(first)
    assert {"plan.json", "plan.graph.dot", "plan.diff.json", "approvals.json", "policy.json", "execution.log.jsonl",
            "verify.json", "drift.json", "rollback.plan.json", "rollback.evidence.json", "neutral_event.json",
            "events.jsonl", "proof.json", "manifest.json", "manifest.sig"} == set(files)
    manifest = json.loads(files["manifest.json"])
    assert manifest["seq_range"] == [1, len(h.records) - 1]
    assert manifest["chain_head"] == decode_event(h.records[-2][1]).hash


def test_no_rollback_file_where_none_ran(signer: signing.Signer) -> None:
    h = History()
    c = happy(h)
    head = sign_head(h, signer)
    assert "rollback.evidence.json" not in evidence.read_pack(pack(h, c.change_id, head, signer))


@pytest.mark.parametrize("name", ["events.jsonl", "plan.json", "neutral_event.json", "approvals.json"])
def test_one_changed_byte_fails_verify_naming_the_file(signer: signing.Signer, name: str) -> None:
    h = History()
    c = happy(h)
    head = sign_head(h, signer)
    data = pack(h, c.change_id, head, signer)
    files = evidence.read_pack(data)
    body = bytearray(files[name])
    body[len(body) // 2] ^= 0x01
    files[name] = bytes(body)
    with pytest.raises(EvidenceInvalid) as err:
        evidence.verify_pack(evidence._tar(files))
    assert err.value.file == name
    assert name in str(err.value)


def test_a_re_signed_manifest_still_fails_on_chain_or_inclusion(signer: signing.Signer, tmp_path: Path) -> None:
    h = History()
    c = happy(h)
    head = sign_head(h, signer)
    files = evidence.read_pack(pack(h, c.change_id, head, signer))
    # An attacker with their own key rewrites an event and re-signs the manifest.
    lines = files["events.jsonl"].splitlines()
    i = next(i for i, line in enumerate(lines) if b'"rc":0' in line)
    lines[i] = lines[i].replace(b'"rc":0', b'"rc":9')
    files["events.jsonl"] = b"\n".join(lines) + b"\n"
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["events.jsonl"] = "sha256:" + hashlib.sha256(files["events.jsonl"]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    files["manifest.sig"] = signer.sign(files["manifest.json"]).encode()
    with pytest.raises(EvidenceInvalid) as err:
        evidence.verify_pack(evidence._tar(files))
    assert (err.value.file, err.value.check) == ("events.jsonl", "chain")
    other = signing.load_or_create(tmp_path / "other")
    with pytest.raises(EvidenceInvalid, match="not one of the trusted keys"):
        evidence.verify_pack(pack(h, c.change_id, head, signer), {other.key_id: other.public_hex})


def test_plan_diff_against_earlier_revisions() -> None:
    from upm_history import make_plan

    diff = evidence.plan_diff([(1, make_plan(("a", "b"))), (2, make_plan(("b", "c")))])
    assert [r["revision"] for r in diff["revisions"]] == [1, 2]
    assert diff["diffs"] == [{"from": 1, "to": 2, "added": ["mkdir -p /tmp/c"], "removed": ["mkdir -p /tmp/a"],
                              "changed": []}]


def test_the_spec_example_and_every_rendered_change_validate_against_the_schema() -> None:
    assert neutral.validate(SPEC_EXAMPLE) == []
    h = History()
    happy(h)
    failed(h, at=100)
    by_change: dict[str, list[object]] = {}
    for _, data in h.records:
        e = decode_event(data)
        by_change.setdefault(e.change_id, []).append(e)
    for events in by_change.values():
        doc = neutral.render(events)  # type: ignore[arg-type]
        assert neutral.validate(doc) == []
        assert set(doc["provisioning_event"]) == set(SPEC_EXAMPLE["provisioning_event"])
        for key, value in SPEC_EXAMPLE["provisioning_event"].items():
            if isinstance(value, dict):
                assert set(doc["provisioning_event"][key]) >= set(value) - {"resources_needed"}, key


def test_the_validator_names_what_is_wrong() -> None:
    bad = json.loads(json.dumps(SPEC_EXAMPLE))
    del bad["provisioning_event"]["intent"]["tenant"]
    bad["provisioning_event"]["phase"] = "deploy"
    bad["provisioning_event"]["execution"]["steps"][0]["rc"] = "0"
    errors = neutral.validate(bad)
    assert "/provisioning_event/intent: missing required field 'tenant'" in errors
    assert any(e.startswith("/provisioning_event/phase:") for e in errors)
    assert "/provisioning_event/execution/steps/0/rc: expected integer, got str" in errors


def test_an_undecodable_record_is_named_from_the_projection_or_said_to_be_unnamed() -> None:
    h = History()
    c = happy(h)
    seq, data = h.records[2]
    victim = decode_event(data)
    damaged = [*h.records[:2], (seq, data[:40] + b"\xff" + data[41:]), *h.records[3:]]
    report = audit.check_log(damaged)
    decode = next(p for p in report.problems if p.check == "decode")
    assert (decode.first, decode.last) == (seq, seq)
    names = {seq: audit.EventName(seq=seq, tenant="acme", change_id=c.change_id, event_id=victim.id, type=victim.type)}
    assert f"sequence {seq}: change {c.change_id} (acme), event {victim.id} ({victim.type})" in audit.render(
        report, names, "")
    assert f"sequence {seq}: cannot be named, no projection here" in audit.render(report, {}, "no projection here")


def test_known_heads_catch_a_truncated_or_rewritten_log(signer: signing.Signer) -> None:
    h = History()
    happy(h)
    head = sign_head(h, signer)
    kept = audit.KnownHead(size=head.size, root=head.root, origin="kept", seq=head.seq, signed_at=head.signed_at,
                           key_id=head.key_id, signature=head.signature)
    keys = {signer.key_id: signer.public_hex}
    assert audit.check_log(h.records, keys, known=[kept]).newest_head == audit.pin(head.size, head.root)

    truncated = audit.check_log(h.records[:3], keys, stream_last_seq=3, known=[kept])
    missing = truncated.problems[0]
    assert (missing.check, missing.first, missing.last) == ("missing", 4, head.seq)
    assert f"sequences 4–{head.seq} are missing: the stream ends at sequence 3" in missing.message
    assert [p.check for p in truncated.problems[1:]] == ["head-size"]

    wrong = audit.KnownHead(size=head.size, root="0" * 64, origin="--expect-head")
    with pytest.raises(AuditFailed) as err:
        audit.verify_log(h.records, keys, known=[kept, wrong])
    assert err.value.check == "head-root" and "(--expect-head)" in str(err.value)


def test_the_heads_file_skips_a_torn_last_line_and_refuses_an_edited_one(signer: signing.Signer,
                                                                        tmp_path: Path) -> None:
    h = History()
    happy(h)
    head = sign_head(h, signer)
    heads.append(tmp_path, head)
    with heads.path(tmp_path).open("ab") as out:
        out.write(b'{"seq": 9, "si')  # a crash mid-write
    assert [(k.size, k.root) for k in heads.read(tmp_path)] == [(head.size, head.root)]
    heads.path(tmp_path).write_bytes(b"not a head\n")
    with pytest.raises(AuditFailed, match="line 1 is not a signed head"):
        heads.read(tmp_path)


def test_a_pack_keeps_the_infrastructure_code_the_intent_carried_and_its_sha256(signer: signing.Signer) -> None:
    text = 'resource "aws_sqs_queue" "q" {\n  name = "q"\n}\n'
    h = History()
    c = h.change("acme")
    c.add(IntentSubmitted(spec={"format": "hcl", "files": {"main.tf": text}, "variables": {"env": "dev"}},
                          initiator="alice"), 0, "alice")
    c.compiled(1).preflight(2).execute(3)
    head = sign_head(h, signer)
    data = pack(h, c.change_id, head, signer)
    evidence.verify_pack(data, {signer.key_id: signer.public_hex})
    files = evidence.read_pack(data)
    assert files["source/main.tf"] == text.encode()
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert json.loads(files["source.json"]) == {"format": "hcl", "files": {"main.tf": digest},
                                                "variables": {"env": "dev"}}
    assert json.loads(files["manifest.json"])["files"]["source/main.tf"] == digest
    files["source/main.tf"] = text.replace("q", "x").encode()  # the original, and only it, verifies
    with pytest.raises(EvidenceInvalid, match=r"source/main\.tf"):
        evidence.verify_pack(evidence._tar(files), {signer.key_id: signer.public_hex})
