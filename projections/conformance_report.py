"""The conformance report: the comparison-template row on top, every clause with its evidence. Pure.

:func:`build` turns a :class:`~projections.score.Score` (clauses judged from the log) and what the
run played into a :class:`Report`; :func:`html` renders it as one self-contained page where every
cell of the row links to its evidence (a phase cell to its clauses, a KPI cell to its figure and
sample, a clause's exercises to the evidence packs bundled beside the report).
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from events.subjects import SYSTEM_TENANT
from projections import kpi
from projections.clauses import PHASES, Judgement
from projections.score import Gate, Score


class KpiLine(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    column: str
    value: float | None
    n: int
    l3: str
    l4: str
    formula: str


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the conformance run claims, and where the evidence is."""

    manifest: str
    level: int
    uncapped: int
    row: dict[str, object]
    phases: dict[str, int]
    clauses: list[Judgement]
    not_exercised: list[str]
    gates: list[Gate]
    kpis: list[KpiLine]
    excluded: dict[str, list[str]]
    played: list[dict[str, Any]]
    packs: dict[str, str]
    public_key: str
    seconds: float


def cited(score: Score, played: Iterable[str]) -> set[str]:
    """Every change the report cites: the played ones and each clause's or gate's evidence (the
    signed log heads of the system tenant have no pack)."""
    evidence = [e for j in score.clauses for e in j.evidence] + [e for g in score.gates for e in g.evidence]
    return set(played) | {e.change_id for e in evidence if e.tenant != SYSTEM_TENANT}


def build(*, manifest: str, score: Score, played: Sequence[dict[str, Any]], packs: Mapping[str, str],
          excluded: Mapping[str, Sequence[str]], seconds: float, public_key: str) -> Report:
    row = dict(score.row)
    row["Evidence Links"] = [packs[c] for c in sorted(packs)][:20]
    lines = [KpiLine(name=k.name, column=k.column, value=score.kpis.get(k.name),
                     n=score.kpi_samples[k.name].n if k.name in score.kpi_samples else 0,
                     l3=str(k.l3), l4=str(k.l4), formula=k.formula) for k in kpi.KPIS]
    return Report(manifest=manifest, level=score.overall, uncapped=score.uncapped, row=row,
                  phases={p.phase: p.level for p in score.phases}, clauses=score.clauses,
                  not_exercised=score.not_exercised, gates=score.gates, kpis=lines,
                  excluded={k: sorted(v) for k, v in excluded.items()},
                  played=list(played), packs=dict(packs), public_key=public_key, seconds=seconds)


def _e(text: object) -> str:
    return _html.escape(str(text))


def _anchor(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower())


def _link(change_id: str, packs: Mapping[str, str]) -> str:
    if change_id in packs:
        return f'<a href="{_e(packs[change_id])}" title="{_e(change_id)}">{_e(_short(change_id))}</a>'
    return f'<span title="{_e(change_id)}">{_e(_short(change_id))}</span>'


def _short(change_id: str) -> str:
    return f"{change_id[:8]}…{change_id[-6:]}"


def _evidence(j: Judgement | Gate, packs: Mapping[str, str]) -> str:
    items = [f'<span class="{"ok" if e.ok else "bad"}">{_link(e.change_id, packs)} '
             f'<code title="event id">{_e(e.event_id[:8])}</code></span>' for e in j.evidence]
    return " ".join(items)


def html(report: Report) -> str:
    """The report as one HTML page (no scripts, no external resources)."""
    packs = report.packs
    head = "".join(f"<th>{_e(c)}</th>" for c in report.row)
    cells = []
    for column, value in report.row.items():
        phase = next((p for p in PHASES if column.startswith(p + " ")), None)
        k = next((k for k in kpi.KPIS if k.column == column), None)
        if phase is not None:
            cells.append(f'<td><a href="#{_anchor(phase)}">L{_e(value)}</a></td>')
        elif k is not None:
            shown = "—" if value is None else f"{value:g}" if isinstance(value, float | int) else _e(value)
            cells.append(f'<td><a href="#kpi-{k.name}">{shown}</a></td>')
        elif column == "Evidence Links":
            links = value if isinstance(value, list) else []
            cells.append("<td>" + " ".join(f'<a href="{_e(x)}">{i + 1}</a>' for i, x in enumerate(links)) + "</td>")
        elif column.startswith("Overall"):
            cells.append(f'<td><a href="#gates"><b>L{_e(value)}</b></a></td>')
        else:
            cells.append(f"<td>{_e(value)}</td>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>UPM conformance</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:4px 6px;font-size:13px;vertical-align:top}"
        ".held{background:#dfd}.not-held{background:#fdd}.not-exercised{background:#eee}"
        ".ok a{color:#060}.bad a{color:#a00;font-weight:bold}</style></head><body>",
        f"<h1>UPM conformance — {_e(report.manifest)}: overall L{report.level}</h1>",
        f"<table><tr>{head}</tr><tr>{''.join(cells)}</tr></table>",
        f"<p>Level by the spec's gating rule: L{report.uncapped} before the evidence gates, L{report.level} after. "
        f"A clause holds only where the set exercised it and every exercise passed; "
        f"{len(report.not_exercised)} clauses were not exercised and count as not held. Run took "
        f"{report.seconds:g} s. Evidence packs are in <code>evidence/</code>; verify each offline with "
        f"<code>upm evidence verify FILE --public-key $(cat {_e(report.public_key or 'ed25519.pub')})</code>.</p>",
        "<h2 id='gates'>Evidence gates</h2><table><tr><th>gate</th><th>caps at</th><th>met</th><th>evidence</th></tr>",
    ]
    for g in report.gates:
        parts.append(f"<tr class='{'held' if g.met else 'not-held'}'><td>{_e(g.name)}</td><td>L{g.cap}</td>"
                     f"<td>{'yes' if g.met else 'no: ' + _e(g.reason)}</td><td>{_evidence(g, packs)}</td></tr>")
    parts.append("</table>")
    for phase in PHASES:
        parts.append(f"<h2 id='{_anchor(phase)}'>{_e(phase)}: L{report.phases[phase]}</h2><table><tr><th>level</th>"
                     "<th>clause</th><th>status</th><th>exercises</th><th>failed</th><th>evidence (change, event)"
                     "</th></tr>")
        for j in (j for j in report.clauses if j.phase == phase):
            parts.append(f"<tr class='{_anchor(j.status)}'><td>L{j.level}</td><td><code>{_e(j.id)}</code><br>"
                         f"{_e(j.text)}</td><td>{_e(j.status)}</td><td>{j.exercises}</td><td>{j.failed}</td>"
                         f"<td>{_evidence(j, packs)}<br><small>{_e(j.note)}</small></td></tr>")
        parts.append("</table>")
    parts.append("<h2>KPIs over the set</h2><table><tr><th>KPI</th><th>value</th><th>sample</th><th>L3</th>"
                 "<th>L4</th><th>formula</th></tr>")
    for line in report.kpis:
        shown = "—" if line.value is None else f"{line.value:g}"
        parts.append(f"<tr id='kpi-{line.name}'><td>{_e(line.column)}</td><td>{shown}</td><td>{line.n}</td>"
                     f"<td>{_e(line.l3)}</td><td>{_e(line.l4)}</td><td><small>{_e(line.formula)}</small></td></tr>")
    left = "; ".join(f"{_e(k)}: {len(v)}" for k, v in report.excluded.items())
    parts.append(f"</table><p>Left out of the KPIs that name changes, the changes the set makes fail on purpose "
                 f"({left}); their failures are judged by their own clauses.</p>")
    parts.append("<h2>The change set as played</h2><table><tr><th>id</th><th>change</th><th>expected</th>"
                 "<th>outcome</th><th>people and faults</th><th>title</th></tr>")
    for p in report.played:
        cid = p.get("change_id") or ""
        bad = p.get("outcome") != p.get("expect") and not (p.get("expect") == "rejected" and p.get("outcome") == "refused")
        parts.append(f"<tr class='{'not-held' if bad else ''}'><td>{_e(p['id'])}</td>"
                     f"<td>{_link(cid, packs) if cid else _e(p.get('refused', ''))}</td><td>{_e(p['expect'])}</td>"
                     f"<td>{_e(p.get('outcome'))}</td><td>{_e('; '.join(p.get('people', [])))}</td>"
                     f"<td>{_e(p['title'])}</td></tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)
