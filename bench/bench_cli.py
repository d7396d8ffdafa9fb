"""CLI start-up: ``upm --help`` and a subcommand's ``--help`` against a bare interpreter start.

    python bench/bench_cli.py [--rounds 30]

Every round runs each command once, in a rotating order, as a new process (``upm`` is the console
script of this venv); the wall time of each is taken with ``time.perf_counter``. Prints the median and
P95 in ms and the ratio of each median to ``python -c pass`` (issue 21's bar: within 4x).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, median, p95

UPM = str(Path(sys.executable).with_name("upm"))
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "upm --help": [UPM, "--help"],
    "upm submit --help": [UPM, "submit", "--help"],
    "upm status --help": [UPM, "status", "--help"],
    "upm evidence verify --help": [UPM, "evidence", "verify", "--help"],
}


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    names = list(COMMANDS)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm the page cache: the first start of each reads its files from disk
        timed(COMMANDS[name])
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(timed(COMMANDS[name]))
    base = median(samples["python -c pass"])
    print(f"# CLI start-up ({machine()}, load {os.getloadavg()[0]:.2f}, {rounds} rounds)")
    print("| command | median ms | P95 ms | × bare python |")
    print("|---|---:|---:|---:|")
    for name in names:
        print(f"| `{name}` | {median(samples[name]):.1f} | {p95(samples[name]):.1f} | {median(samples[name]) / base:.2f} |")


if __name__ == "__main__":
    main()
