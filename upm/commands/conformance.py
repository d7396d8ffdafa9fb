"""``upm conformance [--json] [--out DIR]``: play the conformance change set and print the UPM level."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import click

from upm import cliargs
from upm.commands.core import guarded
from upm.output import emit


def cmd_conformance(args: argparse.Namespace) -> int:
    from upm import conformance, emulators

    out_dir = Path(args.out).resolve()
    manifest = conformance.load_manifest()
    if args.only:
        manifest = conformance.subset(manifest, [x.strip() for x in args.only.split(",") if x.strip()])
    extras = emulators.parse_extras(args.with_targets)
    data = Path(args.data) if args.data else None
    if args.print_config:
        folder = Path(args.print_config)
        command = conformance.print_config(folder, manifest, extras, data)
        emit({"config": str(folder.resolve()), "up": command}, args,
             text=f"the set's configuration is in {folder.resolve()}; start an instance with it:\n  {command}\n"
                  f"then: upm conformance --data {data or 'DATA'} --with {shlex.quote(','.join(extras))}")
        return 0
    report = conformance.run(out_dir, extras=extras, manifest=manifest, data=data)
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


@click.command(help="Play the conformance change set (conformance/changeset-v1) on embedded defaults (or, with --data, "
                    "against a running instance) and score UPM "
                    "clause by clause: the comparison row, every clause held / not held / not exercised with its "
                    "evidence, the KPIs, the gates and the level; the report (HTML, JSON) and the evidence packs go "
                    "to --out.")
@click.option("--out", metavar="DIR", default="conformance-report",
              help="where the report, the evidence packs and the run's data go (default ./conformance-report)")
@click.option("--with", "with_targets", default="aws,postgres", metavar="TARGETS",
              help="targets the set plays on, started on embedded defaults (with --data the instance must have them; "
                   "default aws,postgres; empty: local changes only)")
@click.option("--data", metavar="DIR", help="play against the instance `upm up --data DIR` runs instead of starting one "
                                            "(it must have the set's configuration, targets and secret: see --print-config)")
@click.option("--print-config", metavar="DIR", help="write the set's configuration files into DIR and print the `upm up` "
                                                    "command that starts an instance --data can play against; plays nothing")
@click.option("--only", metavar="IDS", help="play only these changes of the set (and those they come after): for "
                                            "trying one story; the level of a partial set is not UPM's")
@cliargs.output_options
def conformance_command(**params: Any) -> int:
    return cliargs.run(guarded(cmd_conformance), params)
