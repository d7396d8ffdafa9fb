"""Evidence packs: one deterministic tar per change, signed, verifiable offline.

    events.jsonl           the change's stored events, one per line, byte for byte
    proof.json             the signed log head + each event's RFC 6962 inclusion proof against it
    plan.json              the latest compiled plan (with its dependency graph)
    plan.graph.dot         the dependency graph in Graphviz DOT
    plan.diff.json         every plan revision, and each revision's diff against the one before
    approvals.json         the approval trail (requests, grants, denials, the approving lane)
    policy.json            the policy decisions
    execution.log.jsonl    the execution log (steps, waves, credentials refs), redacted once more
    verify.json            the change's verification reports
    drift.json             drift detected / resolved, the last baseline and current hashes, and
                           the desired state (events/desired.py) of each resource the change
                           acts on as of the pack's last event (null: not desired/managed)
    rollback.plan.json     the rollback plan
    rollback.evidence.json the rollback run and its verification (only where one ran)
    source/NAME            the infrastructure code the intent carried (.tf, plan JSON, manifests), as given
    source.json            its format, each file's sha256 and the variables (only for such intents)
    neutral_event.json     the change as the spec's neutral provisioning event
    manifest.json          sha256 of every file above, sequence range, chain head, log head, key
    manifest.sig           ed25519 signature (hex) over manifest.json

:func:`build_pack` is pure (ed25519 is deterministic, tar headers are fixed, JSON is canonical):
the same records, head and proofs give a byte-identical pack. :func:`verify_pack` checks, with
nothing but the pack: every file's sha256, the manifest signature, the hash chain, the log
head's signature and every inclusion proof; the first failure names the file.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from events import chain, jsonbounds, merkle, neutral, signing
from events.codec import canonical_json
from events.desired import EMPTY, Inventory, resource_key
from events.errors import ChainBroken, InvalidEvent
from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    ChangeScheduled,
    CredentialsIssued,
    CredentialsRevoked,
    DriftDetected,
    DriftResolved,
    Event,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    IntentSubmitted,
    LogHeadSigned,
    PlanCompiled,
    PolicyEvaluated,
    PreflightFailed,
    PreflightPassed,
    RollbackApproved,
    RollbackCompleted,
    RollbackFailed,
    RollbackPlanned,
    RollbackStarted,
    RollbackStepCompleted,
    RollbackStepFailed,
    RollbackStepSkipped,
    RollbackStepStarted,
    StepCompleted,
    StepFailed,
    StepRetried,
    StepSkipped,
    StepStarted,
    TlsFallbackUsed,
    VerificationFailed,
    VerificationPassed,
    WaveCompleted,
    WaveStarted,
    decode_event,
)
from events.plan import Plan
from services.auditor.errors import EvidenceInvalid, EvidenceUntrusted
from services.guard.redact import Redactor

FORMAT = "upm-evidence/1"
EVIDENCE_BUCKET = "UPM_EVIDENCE"  # the JetStream object store the auditor publishes packs to
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"

APPROVAL_TYPES = (ApprovalRequested, ApprovalGranted, ApprovalDenied, ChangeApproved, ChangeScheduled)
EXECUTION_TYPES = (
    ExecutionStarted, StepStarted, StepCompleted, StepSkipped, StepFailed, ExecutionCompleted, ExecutionFailed,
    WaveStarted, WaveCompleted, ExecutionPaused, ExecutionResumed, CredentialsIssued, CredentialsRevoked,
    TlsFallbackUsed, StepRetried, ExecutionCancelled,
)
ROLLBACK_TYPES = (
    RollbackApproved, RollbackStarted, RollbackStepStarted, RollbackStepCompleted, RollbackStepSkipped,
    RollbackStepFailed, RollbackCompleted, RollbackFailed,
)


class LogHead(msgspec.Struct, frozen=True, kw_only=True):
    """A signed log head as stored (``seq`` is where it is stored in the stream)."""

    seq: int
    size: int
    root: str
    signed_at: str
    key_id: str
    signature: str


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    """One event's inclusion proof: its sequence, leaf index and audit path (hex)."""

    seq: int
    index: int
    path: list[str]


class PackReport(msgspec.Struct, frozen=True, kw_only=True):
    """What `upm evidence verify` checked."""

    tenant: str
    change_id: str
    files: int
    events: int
    seq_range: list[int]
    chain_head: str
    key_id: str
    log_head_size: int
    trusted: bool = False


def _json(value: Any) -> bytes:
    return canonical_json(value) + b"\n"


def _entry(event: Event) -> dict[str, Any]:
    return {"id": event.id, "ts": event.ts, "type": event.type, "actor": event.actor,
            "payload": msgspec.to_builtins(event.payload)}


def _policy_decisions(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Every policy decision: ``policy.evaluated`` events and the per-pack decisions pre-flight
    records inside ``preflight.passed`` / ``preflight.failed``."""
    out: list[dict[str, Any]] = []
    for e in events:
        if isinstance(e.payload, PolicyEvaluated):
            out.append(_entry(e))
        elif isinstance(e.payload, PreflightPassed | PreflightFailed):
            out += [{"id": e.id, "ts": e.ts, "type": "policy.evaluated", "actor": e.actor,
                     "payload": msgspec.to_builtins(decision)} for decision in e.payload.policy]
    return out


def _plans(events: Sequence[Event]) -> list[tuple[int, Plan]]:
    return [(e.payload.revision, e.payload.plan) for e in events if isinstance(e.payload, PlanCompiled)]


def _dot(plan: Plan) -> str:
    lines = ["digraph plan {", "  rankdir=LR;"]
    lines += [f'  "{n.id}" [label="{n.label} ({n.action})"];' for n in plan.graph.nodes]
    lines += [f'  "{e.source}" -> "{e.target}";' for e in plan.graph.edges]
    return "\n".join([*lines, "}", ""])


def plan_diff(plans: Sequence[tuple[int, Plan]]) -> dict[str, Any]:
    """Each revision against the one before: steps (by resource and action) added, removed, changed."""
    revisions = [{"revision": r, "plan_hash": p.hash, "steps": len(p.steps)} for r, p in plans]
    diffs = []
    for (r0, old), (r1, new) in itertools.pairwise(plans):
        before = {f"{s.resource.key} {s.action}": s.command.display for s in old.steps}
        after = {f"{s.resource.key} {s.action}": s.command.display for s in new.steps}
        diffs.append({
            "from": r0, "to": r1,
            "added": [after[k] for k in sorted(after.keys() - before.keys())],
            "removed": [before[k] for k in sorted(before.keys() - after.keys())],
            "changed": [{"step": k, "from": before[k], "to": after[k]}
                        for k in sorted(before.keys() & after.keys()) if before[k] != after[k]],
        })
    return {"revisions": revisions, "diffs": diffs}


def _verifications(events: Sequence[Event], scope: str) -> list[tuple[Event, VerificationPassed | VerificationFailed]]:
    out: list[tuple[Event, VerificationPassed | VerificationFailed]] = []
    for e in events:
        p = e.payload
        if isinstance(p, VerificationPassed | VerificationFailed) and p.scope == scope:
            out.append((e, p))
    return out


def desired_of(plan: Plan | None, inventory: Inventory) -> dict[str, Any]:
    """The desired state ``inventory`` holds for each resource ``plan`` acts on (``None``: none)."""
    keys = sorted({resource_key(step) for step in (plan.steps if plan else ())})
    found = {key: inventory.resources.get(key) for key in keys}
    return {key: None if r is None else r.desired for key, r in found.items()}


def sections(events: Sequence[Event], inventory: Inventory = EMPTY) -> dict[str, bytes]:
    """Every content file of the pack (all but events, proof and manifest), from the events and
    the desired-state ``inventory`` as of the last of them."""
    plans = _plans(events)
    plan = plans[-1][1] if plans else None
    redactor = Redactor()
    last_change = [v for _, v in _verifications(events, "change")]
    planned = [e for e in events if isinstance(e.payload, RollbackPlanned)]
    ran = any(isinstance(e.payload, RollbackStarted) for e in events)
    files: dict[str, bytes] = {
        "plan.json": _json({"revision": plans[-1][0], "plan": msgspec.to_builtins(plan)} if plans else {}),
        "plan.graph.dot": _dot(plan).encode() if plan else b"digraph plan {\n}\n",
        "plan.diff.json": _json(plan_diff(plans)),
        "approvals.json": _json([_entry(e) for e in events if isinstance(e.payload, APPROVAL_TYPES)]),
        "policy.json": _json(_policy_decisions(events)),
        "execution.log.jsonl": b"".join(
            redactor.redact(canonical_json(_entry(e)).decode()).encode() + b"\n"
            for e in events if isinstance(e.payload, EXECUTION_TYPES)
        ),
        "verify.json": _json([_entry(e) for e, _ in _verifications(events, "change")]),
        "drift.json": _json({
            "events": [_entry(e) for e in events if isinstance(e.payload, DriftDetected | DriftResolved)],
            "baseline_hash": last_change[-1].baseline_hash if last_change else "",
            "current_hash": last_change[-1].current_hash if last_change else "",
            "desired": desired_of(plan, inventory),
        }),
        "rollback.plan.json": _json(
            {"planned": [_entry(e) for e in planned],
             "commands": [c.display for c in (plan.rollback if plan else ())]}
        ),
        "neutral_event.json": _json(neutral.render(events)),
    }
    files.update(source_files(events))
    if ran:
        files["rollback.evidence.json"] = _json({
            "events": [_entry(e) for e in events if isinstance(e.payload, ROLLBACK_TYPES)],
            "verifications": [_entry(e) for e, _ in _verifications(events, "rollback")],
        })
    return files


def source_files(events: Sequence[Event]) -> dict[str, bytes]:
    """The original infrastructure code of the change's latest intent, when it came as files
    (``source/<name>``, byte for byte as submitted) with ``source.json``: the format, each file's
    sha256 and the variables; nothing for a request in words or a native spec."""
    intents = [e.payload for e in events if isinstance(e.payload, IntentSubmitted)]
    spec = intents[-1].spec if intents else None
    if spec is None or "format" not in spec or not isinstance(spec.get("files"), Mapping):
        return {}
    given = spec["files"]
    out: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    for name, text in sorted(given.items()):
        if not isinstance(text, str):
            continue
        body = text.encode("utf-8", "surrogatepass")
        safe = "source/" + (re.sub(r"[^\w.-]", "_", str(name)).lstrip(".") or "file")
        out[safe] = body
        digests[str(name)] = "sha256:" + hashlib.sha256(body).hexdigest()
    out["source.json"] = _json({"format": spec.get("format"), "files": digests,
                                "variables": spec.get("variables") or {}})
    return out


def _tar(files: Mapping[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def build_pack(
    records: Sequence[tuple[int, bytes]], events: Sequence[Event], head: LogHead, proofs: Mapping[int, Sequence[bytes]],
    signer: signing.Signer, inventory: Inventory = EMPTY,
) -> bytes:
    """The pack of one change: its stored ``records`` and decoded ``events`` (same order), the
    signed ``head`` the ``proofs`` (by sequence) lead to, signed by ``signer``; ``inventory``:
    the desired state as of the last record."""
    first, last = events[0], events[-1]
    files = sections(events, inventory)
    files["events.jsonl"] = b"".join(data + b"\n" for _, data in records)
    leaves = [Leaf(seq=seq, index=seq - 1, path=[p.hex() for p in proofs[seq]]) for seq, _ in records]
    files["proof.json"] = _json({"head": head, "leaves": leaves})
    manifest = {
        "format": FORMAT,
        "tenant": first.tenant,
        "change_id": first.change_id,
        "seq_range": [records[0][0], records[-1][0]],
        "events": len(records),
        "chain_head": last.hash,
        "log_head": head,
        "key_id": signer.key_id,
        "public_key": signer.public_hex,
        "files": {name: "sha256:" + hashlib.sha256(body).hexdigest() for name, body in sorted(files.items())},
    }
    files[MANIFEST] = _json(manifest)
    files[SIGNATURE] = (signer.sign(files[MANIFEST]) + "\n").encode()
    return _tar(files)


def sign_head(signer: signing.Signer, tree: merkle.MerkleTree, signed_at: str) -> LogHeadSigned:
    """A signed head of ``tree`` as it is now (``signed_at``: the time of its latest event)."""
    root = tree.root().hex()
    message = signing.head_message(tree.size, root, signed_at, signer.key_id)
    return LogHeadSigned(size=tree.size, root=root, signed_at=signed_at, key_id=signer.key_id,
                         signature=signer.sign(message))


def pack_from_log(
    records: Sequence[tuple[int, bytes]], tree: merkle.MerkleTree, head: LogHead, signer: signing.Signer,
    inventory: Inventory = EMPTY,
) -> bytes:
    """The pack of the change whose stored ``records`` are given, proven against ``head`` of ``tree``;
    ``inventory``: the desired state folded from the whole log up to the last record."""
    events = [decode_event(data) for _, data in records]
    proofs = {seq: tree.inclusion(seq - 1, head.size) for seq, _ in records}
    return build_pack(records, events, head, proofs, signer, inventory)


def read_pack(data: bytes) -> dict[str, bytes]:
    """The files of a pack, by name."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            out: dict[str, bytes] = {}
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is None:
                    raise EvidenceInvalid(f"{member.name} in the pack is not a regular file", file=member.name,
                                          check="layout")
                out[member.name] = handle.read()
            return out
    except tarfile.TarError as exc:
        raise EvidenceInvalid(f"the pack is not a readable tar archive ({exc}); download it again",
                              check="layout") from exc


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`verify_pack` reads of ``manifest.json`` (other fields are kept, not checked)."""

    tenant: str
    change_id: str
    seq_range: list[int]
    chain_head: str
    log_head: LogHead
    key_id: str
    public_key: str
    files: dict[str, str]


class Proofs(msgspec.Struct, frozen=True, kw_only=True):
    """``proof.json``: the signed log head and one inclusion proof per event."""

    head: LogHead
    leaves: list[Leaf]


def _decode(files: Mapping[str, bytes], name: str, kind: type[msgspec.Struct]) -> Any:
    """Member ``name`` of a pack as ``kind``; :class:`EvidenceInvalid` (check ``layout``) if it is not one."""
    if name not in files:
        raise EvidenceInvalid(f"the pack has no {name}; it is not a UPM evidence pack", file=name, check="layout")
    try:
        jsonbounds.check(files[name], what=name)
        return msgspec.json.decode(files[name], type=kind)
    except (InvalidEvent, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
        raise EvidenceInvalid(f"{name} is not a UPM {name}: {exc}", file=name, check="layout") from exc


def verify_pack(data: bytes, trusted_keys: Mapping[str, str] | None = None) -> PackReport:
    """Verify a pack offline (see the module docstring); raise :class:`EvidenceInvalid` naming the file.

    Everything is checked against the key the pack names. Whether that key is one to believe is
    the last check: with ``trusted_keys`` (key id → public hex) a pack that is intact but signed by
    another key raises :class:`EvidenceUntrusted`; without them (``None``) the report says
    ``trusted=False`` — anyone can make an intact pack with a key of their own."""
    files = read_pack(data)
    manifest: Manifest = _decode(files, MANIFEST, Manifest)
    if SIGNATURE not in files:
        raise EvidenceInvalid(f"the pack has no {SIGNATURE}; it is not a UPM evidence pack", file=SIGNATURE,
                              check="layout")
    for name, expected in sorted(manifest.files.items()):
        if name not in files:
            raise EvidenceInvalid(f"{name} is listed in the manifest but missing from the pack", file=name,
                                  check="missing")
        actual = "sha256:" + hashlib.sha256(files[name]).hexdigest()
        if actual != expected:
            raise EvidenceInvalid(f"{name} was changed: its sha256 is {actual}, the manifest says {expected}",
                                  file=name, check="sha256")
    extra = sorted(set(files) - set(manifest.files) - {MANIFEST, SIGNATURE})
    if extra:
        raise EvidenceInvalid(f"{extra[0]} is in the pack but not in the manifest", file=extra[0], check="unlisted")
    public, key = manifest.public_key.lower(), manifest.key_id
    if not signing.is_public_key(public) or signing.key_id(public) != key:
        raise EvidenceInvalid(f"the manifest's public key does not match its key id {key}", file=MANIFEST,
                              check="key")
    if not signing.verify(public, files[MANIFEST], files[SIGNATURE].decode("ascii", "replace").strip()):
        raise EvidenceInvalid(f"the manifest signature does not verify with {key}", file=SIGNATURE, check="signature")
    proof: Proofs = _decode(files, "proof.json", Proofs)
    head, leaves = proof.head, proof.leaves
    if "events.jsonl" not in manifest.files:
        raise EvidenceInvalid("the pack has no events.jsonl; it is not a UPM evidence pack", file="events.jsonl",
                              check="layout")
    lines = files["events.jsonl"].splitlines()
    if len(lines) != len(leaves):
        raise EvidenceInvalid(f"events.jsonl has {len(lines)} events but proof.json proves {len(leaves)}",
                              file="proof.json", check="inclusion")
    stored = [(leaf.seq, line) for leaf, line in zip(leaves, lines, strict=True)]
    try:
        chain_head = chain.verify(manifest.change_id, stored)
    except ChainBroken as broken:
        raise EvidenceInvalid(str(broken), file="events.jsonl", check="chain") from broken
    if chain_head != manifest.chain_head:
        raise EvidenceInvalid(f"the chain ends at {chain_head}, not at the manifest's {manifest.chain_head}",
                              file="events.jsonl", check="chain")
    if manifest.log_head != head:
        raise EvidenceInvalid("proof.json proves against another head than the manifest's", file="proof.json",
                              check="head")
    if not signing.verify(public, signing.head_message(head.size, head.root, head.signed_at, head.key_id),
                          head.signature):
        raise EvidenceInvalid(f"the log head's signature does not verify with {head.key_id}", file="proof.json",
                              check="head-signature")
    for leaf, (_, line) in zip(leaves, stored, strict=True):
        if leaf.index != leaf.seq - 1 or not merkle.verify_inclusion(
            merkle.leaf_hash(line), leaf.index, head.size, _hex_list(leaf.path), _hex(head.root)
        ):
            raise EvidenceInvalid(f"event at sequence {leaf.seq} is not proven included in the log head of size "
                                  f"{head.size}", file="proof.json", check="inclusion")
    if trusted_keys is not None and trusted_keys.get(key, "").lower() != public:
        raise EvidenceUntrusted(key)
    return PackReport(
        tenant=manifest.tenant, change_id=manifest.change_id, files=len(files), events=len(stored),
        seq_range=manifest.seq_range, chain_head=chain_head, key_id=key, log_head_size=head.size,
        trusted=trusted_keys is not None,
    )


def _hex(text: str) -> bytes:
    """Hex as bytes; ``b""`` (which no proof accepts) for anything else."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def _hex_list(texts: Sequence[str]) -> list[bytes]:
    return [_hex(t) for t in texts]
