"""`upm audit verify`: every hash chain and every signed log head, from the stored records alone.

:func:`check_log` takes the raw ``(stream sequence, stored bytes)`` records — exactly what
``EventStore.read_raw("upm.evt.>")`` returns — rather than reading the stream itself, plus what is
known from outside the stream: the stream's own last sequence and :class:`KnownHead` s (the heads
the auditor kept in the data folder, heads pinned with ``--expect-head``). The stream denies delete
and purge, so a rewritten event cannot be stored there; a test (or a forensic copy) simulates one
by passing a copy of the records with one altered. It reports every problem it finds, not only the
first:

1. sequences run 1, 2, 3 … up to the longest length anything vouches for (the stream's last
   sequence, the newest known head), each gap named as a range (``missing``; leaf ``i`` of the
   Merkle tree is sequence ``i + 1``, so no root past a gap can be recomputed);
2. every record decodes (``decode``) and each change's hash chain verifies (``chain``), naming
   the first event that breaks;
3. each ``log.head`` in the stream: it covers only events stored before it, its root is the RFC
   6962 root of the first ``size`` events, a consistency proof from the previous head verifies
   (append-only), and its ed25519 signature verifies when its key is known (``require_signatures``
   makes an unknown key a failure);
4. each known head: the stream holds at least its ``size`` events (``head-size``: truncated), the
   root of those is its root (``head-root``), and its signature verifies when its key is known.

:func:`verify_log` is the same, raising :class:`AuditFailed` at the first problem.
The newest head that verified is reported as ``SIZE:ROOT`` (:func:`pin`), for an auditor to keep
and pass back with ``--expect-head``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import msgspec

from events import chain, merkle, signing
from events.codec import decode_json_object
from events.errors import ChainBroken
from services.auditor.errors import AuditFailed


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing wrong with the log: ``check`` its kind; ``first``–``last`` the stream sequences it
    is about (0 when none); ``change_id`` / ``event_id`` where the stored record names them."""

    check: str
    message: str
    first: int = 0
    last: int = 0
    change_id: str = ""
    event_id: str = ""


class KnownHead(msgspec.Struct, frozen=True, kw_only=True):
    """A signed head known from outside the stream; ``origin`` says from where. ``seq`` (where the
    head itself was stored) and the signature fields are empty for a head pinned as ``SIZE:ROOT``."""

    size: int
    root: str
    origin: str
    seq: int = 0
    signed_at: str = ""
    key_id: str = ""
    signature: str = ""


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    """What was checked and found: counts, the newest verified head, and every problem."""

    events: int
    expected_events: int
    changes: int
    heads: int
    heads_signature_checked: int
    head_size: int
    head_root: str
    newest_head: str
    keys: list[str]
    problems: list[Problem] = msgspec.field(default_factory=list)


class _Head(msgspec.Struct, frozen=True):
    seq: int
    event_id: str
    size: int
    root: str
    signed_at: str
    key_id: str
    signature: str


def pin(size: int, root: str) -> str:
    """A head as an auditor pins it: ``SIZE:ROOT``."""
    return f"{size}:{root}"


def seq_range(first: int, last: int) -> str:
    """``sequence 7`` or ``sequences 6374–7708``."""
    return f"sequence {first}" if first == last else f"sequences {first}–{last}"


def check_log(
    records: Sequence[tuple[int, bytes]], public_keys: Mapping[str, str] | None = None, *,
    require_signatures: bool = False, stream_last_seq: int = 0, known: Sequence[KnownHead] = (),
) -> AuditReport:
    """Check the whole log (see the module docstring); every problem is in the report."""
    keys = dict(public_keys or {})
    changes: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    heads: list[_Head] = []
    problems: list[Problem] = []
    for seq, data in records:
        try:
            doc = decode_json_object(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(Problem(check="decode", first=seq, last=seq,
                                    message=f"stream sequence {seq} cannot be decoded ({exc}): its stored bytes were "
                                            "altered"))
            continue
        changes[str(doc.get("change_id"))].append((seq, data))
        payload = doc.get("payload") or {}
        if isinstance(payload, dict) and payload.get("type") == "log.head":
            heads.append(_Head(seq, str(doc.get("id")), int(payload["size"]), str(payload["root"]),
                               str(payload["signed_at"]), str(payload["key_id"]), str(payload["signature"])))
    last_read = records[-1][0] if records else 0
    expected = max([stream_last_seq, last_read, *(max(k.size, k.seq) for k in known)])
    problems[:0] = _gaps(records, expected, stream_last_seq, known)
    for change_id, stored in changes.items():
        try:
            chain.verify(change_id, stored)
        except ChainBroken as broken:
            problems.append(Problem(check="chain", message=str(broken), first=broken.seq, last=broken.seq,
                                    change_id=change_id, event_id=broken.event_id))
    tree, roots = _prefix_tree(records, {h.size for h in heads} | {k.size for k in known})
    verified: list[tuple[int, str]] = []
    checked = _check_stream_heads(heads, tree, roots, keys, require_signatures, problems, verified)
    _check_known_heads(known, tree.size, roots, keys, problems, verified)
    newest = max(verified, default=(0, ""))
    return AuditReport(
        events=len(records), expected_events=expected, changes=len(changes), heads=len(heads),
        heads_signature_checked=checked, head_size=newest[0], head_root=newest[1],
        newest_head=pin(*newest) if newest[0] else "",
        keys=sorted({h.key_id for h in heads if h.key_id in keys}), problems=problems,
    )


def verify_log(
    records: Sequence[tuple[int, bytes]], public_keys: Mapping[str, str] | None = None, *,
    require_signatures: bool = False, stream_last_seq: int = 0, known: Sequence[KnownHead] = (),
) -> AuditReport:
    """:func:`check_log`, raising :class:`AuditFailed` at its first problem (saying how many more there are)."""
    report = check_log(records, public_keys, require_signatures=require_signatures, stream_last_seq=stream_last_seq,
                       known=known)
    if report.problems:
        first = report.problems[0]
        more = len(report.problems) - 1
        raise AuditFailed(first.message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""),
                          event_id=first.event_id, seq=first.first, check=first.check)
    return report


def _gaps(
    records: Sequence[tuple[int, bytes]], expected: int, stream_last_seq: int, known: Sequence[KnownHead]
) -> list[Problem]:
    """Every run of sequences in ``1..expected`` that is not among ``records``, with what vouches for it."""
    ranges: list[tuple[int, int]] = []
    following = 1
    for seq, _ in records:
        if seq > following:
            ranges.append((following, seq - 1))
        following = max(following, seq + 1)
    if following <= expected:
        ranges.append((following, expected))
    last_read = following - 1
    out: list[Problem] = []
    for first, last in ranges:
        plural = first != last
        where = f"stream {seq_range(first, last)} {'are' if plural else 'is'} missing"
        if first <= last_read or last <= stream_last_seq:
            why = "the server holds later events but did not return these: they are lost or unreadable"
        else:
            longest = max(known, key=lambda k: max(k.size, k.seq))
            why = (f"the stream ends at sequence {last_read}, but the signed head {pin(longest.size, longest.root)} "
                   f"({longest.origin}) vouches for {max(longest.size, longest.seq)}: the stream was truncated")
        out.append(Problem(check="missing", message=f"{where}: {why}", first=first, last=last))
    return out


def _prefix_tree(records: Sequence[tuple[int, bytes]], sizes: set[int]) -> tuple[merkle.MerkleTree, dict[int, bytes]]:
    """The tree over the records contiguous from sequence 1, and its roots at ``sizes``."""
    tree = merkle.MerkleTree()
    roots: dict[int, bytes] = {}
    for seq, data in records:
        if seq != tree.size + 1:
            break
        tree.append(data)
        if tree.size in sizes:
            roots[tree.size] = tree.root()
    return tree, roots


def _check_stream_heads(
    heads: list[_Head], tree: merkle.MerkleTree, roots: Mapping[int, bytes], keys: Mapping[str, str], require_signatures: bool,
    problems: list[Problem], verified: list[tuple[int, str]],
) -> int:
    checked = 0
    previous: _Head | None = None
    beyond: list[_Head] = []
    for head in heads:
        where = f"signed log head {head.event_id} (stream sequence {head.seq}, size {head.size})"

        def fault(check: str, message: str, head: _Head = head) -> None:
            problems.append(Problem(check=check, message=message, first=head.seq, last=head.seq,
                                    event_id=head.event_id))

        ok = True
        if not 0 < head.size < head.seq:
            fault("head-size", f"{where} claims events not stored before it")
            continue
        if head.size > tree.size:
            beyond.append(head)
            continue
        if roots[head.size].hex() != head.root:
            ok = False
            fault("head-root", f"{where}: its root {head.root[:16]}… is not the root {roots[head.size].hex()[:16]}… "
                               f"of the first {head.size} stored events; an event it covers was altered after it "
                               "was signed")
        if previous is not None and ok:
            old, new = sorted((previous, head), key=lambda h: h.size)
            if not merkle.verify_consistency(old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root),
                                             tree.consistency(old.size, new.size)):
                ok = False
                fault("consistency", f"{where} is not consistent with the previous head (size {previous.size}): "
                                     "the log was rewritten between them")
        public = keys.get(head.key_id)
        if public is not None:
            if not signing.verify(public, signing.head_message(head.size, head.root, head.signed_at, head.key_id),
                                  head.signature):
                ok = False
                fault("head-signature", f"{where}: the signature does not verify with key {head.key_id}")
            else:
                checked += 1
        elif require_signatures:
            ok = False
            fault("head-key", f"{where} is signed by {head.key_id}, which is not a known key; pass its public key")
        if ok:
            verified.append((head.size, head.root))
            previous = head
    if beyond:
        newest = max(beyond, key=lambda h: h.size)
        others = f" (and {len(beyond) - 1} older heads in the stream)" if len(beyond) > 1 else ""
        problems.append(Problem(
            check="head-size", first=newest.seq, last=newest.seq, event_id=newest.event_id,
            message=f"signed log head {newest.event_id} (stream sequence {newest.seq}, size {newest.size}) covers "
                    f"{newest.size} events, but only the first {tree.size} are readable in order{others}: their roots "
                    "cannot be recomputed; see the missing sequences",
        ))
    return checked


def _check_known_heads(
    known: Sequence[KnownHead], readable: int, roots: Mapping[int, bytes], keys: Mapping[str, str],
    problems: list[Problem], verified: list[tuple[int, str]],
) -> None:
    beyond = [h for h in known if h.size > readable]
    if beyond:
        newest = max(beyond, key=lambda h: h.size)
        others = f" (and {len(beyond) - 1} older known heads are beyond it too)" if len(beyond) > 1 else ""
        problems.append(Problem(
            check="head-size", first=readable + 1, last=newest.size,
            message=f"the signed head {pin(newest.size, newest.root)} ({newest.origin}) covers {newest.size} events, "
                    f"but only the first {readable} are readable in order: the stream is shorter than a head it "
                    f"had{others}; see the missing sequences",
        ))
    for head in known:
        where = f"the signed head {pin(head.size, head.root)} ({head.origin})"
        if head.size > readable:
            continue
        actual = roots[head.size].hex()
        if actual != head.root:
            problems.append(Problem(
                check="head-root", first=1, last=head.size,
                message=f"the root of the first {head.size} stored events is {actual}, not the root of {where}: "
                        "events it covers were altered or replaced after it was signed (or the pinned head is wrong)",
            ))
            continue
        public = keys.get(head.key_id)
        if head.signature and public is not None and not signing.verify(
            public, signing.head_message(head.size, head.root, head.signed_at, head.key_id), head.signature
        ):
            problems.append(Problem(check="head-signature", message=f"{where}: the signature does not verify with key "
                                                                     f"{head.key_id}; the heads file was edited"))
            continue
        verified.append((head.size, head.root))


# -- naming what could not be read: the projection remembers what was stored there ---------

UNREADABLE = ("missing", "decode")
NAMES_SHOWN = 10


class EventName(msgspec.Struct, frozen=True, kw_only=True):
    """What the projection recorded at one stream sequence."""

    seq: int
    tenant: str
    change_id: str
    event_id: str
    type: str


def unreadable(report: AuditReport) -> list[tuple[int, int]]:
    """The sequence ranges whose events could not be read: to be named from the projection."""
    return [(p.first, p.last) for p in report.problems if p.check in UNREADABLE]


def names_query(first: int, last: int) -> str:
    """The SELECT naming the events the projection holds at sequences ``first``–``last``."""
    return (f"SELECT seq, tenant, change_id, id AS event_id, type FROM events "
            f"WHERE seq BETWEEN {int(first)} AND {int(last)} ORDER BY seq")


def spans(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending ``seqs`` as runs ``(first, last)``."""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def render(report: AuditReport, names: Mapping[int, EventName], unnamed: str) -> str:
    """Every problem for people, each unreadable sequence with the change and event it held where the
    projection knows them; ``unnamed`` says why the projection could not be asked (empty if it was)."""
    count = len(report.problems)
    lines = [f"{count} problem{'s' if count > 1 else ''} in the log ({report.events} events read, "
             f"{report.expected_events} expected):"]
    for problem in report.problems:
        lines.append(f"  - {problem.message}")
        if problem.check in UNREADABLE:
            lines += _named(problem, names, unnamed)
    lines.append(f"newest verified head: {report.newest_head or 'none'}")
    return "\n".join(lines)


def _named(problem: Problem, names: Mapping[int, EventName], unnamed: str) -> list[str]:
    seqs = range(problem.first, problem.last + 1)
    found = [names[s] for s in seqs if s in names]
    out = [f"      sequence {n.seq}: change {n.change_id} ({n.tenant}), event {n.event_id} ({n.type})"
           for n in found[:NAMES_SHOWN]]
    if len(found) > NAMES_SHOWN:
        changes = list(dict.fromkeys(n.change_id for n in found))
        shown = ", ".join(changes[:NAMES_SHOWN]) + (", …" if len(changes) > NAMES_SHOWN else "")
        out.append(f"      … and {len(found) - NAMES_SHOWN} more; {len(changes)} changes lost events: {shown} "
                   "(--json lists every one)")
    why = unnamed or "not in the projection (the projector is behind, or was rebuilt after the loss)"
    for first, last in spans([s for s in seqs if s not in names]):
        out.append(f"      {seq_range(first, last)}: cannot be named, {why}")
    return out
