"""``upm conformance [--json] [--out DIR]``: play the conformance change set and print the UPM level."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.output import emit


def cmd_conformance(args: argparse.Namespace) -> int:
    from upm import conformance

    out_dir = Path(args.out).resolve()
    manifest = conformance.load_manifest()
    if args.only:
        manifest = conformance.subset(manifest, [x.strip() for x in args.only.split(",") if x.strip()])
    report = conformance.run(out_dir, extras=tuple(args.with_targets.split(",")) if args.with_targets else (),
                             manifest=manifest)
    if args.json:
        emit(report, args)
        return 0
    lines = [f"UPM conformance ({report.manifest}): overall L{report.level}"
             + (f" (L{report.uncapped} before the evidence gates)" if report.uncapped != report.level else "")]
    lines += [f"  {phase:<22} L{level}" for phase, level in report.phases.items()]
    lines += [f"  gate {'met' if g.met else 'NOT met'}: {g.name} (else cap L{g.cap})" for g in report.gates]
    held = sum(j.status == "held" for j in report.clauses)
    failed = [j.id for j in report.clauses if j.status == "not held"]
    lines.append(f"  clauses: {held} held, {len(failed)} not held{': ' + ', '.join(failed) if failed else ''}; "
                 f"{len(report.not_exercised)} not exercised: {', '.join(report.not_exercised) or '-'}")
    lines.append(f"  report: {out_dir / 'report.html'} ({out_dir / 'report.json'}), evidence packs in "
                 f"{out_dir / 'evidence'}; took {report.seconds:g} s")
    emit(report, args, text="\n".join(lines))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("conformance", help="play the conformance change set on embedded defaults and score UPM "
                                           "clause by clause (report, evidence packs)")
    p.add_argument("--out", metavar="DIR", default="conformance-report",
                   help="where the report, the evidence packs and the run's data go (default ./conformance-report)")
    p.add_argument("--with", dest="with_targets", default="aws,postgres", metavar="TARGETS",
                   help="emulated targets to start (default aws,postgres; empty: local changes only)")
    p.add_argument("--only", metavar="IDS", help="play only these changes of the set (and those they come after): "
                                                 "for trying one story; the level of a partial set is not UPM's")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_conformance)
