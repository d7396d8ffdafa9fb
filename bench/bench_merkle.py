"""Merkle proofs at any log size: inclusion and consistency proof time at 1k, 10k, 100k and 1M leaves.

    python bench/bench_merkle.py [--sizes 1000,10000,100000,1000000] [--proofs 2000]

For each size a tree is grown leaf by leaf through ``MerkleTree.append`` (what the witness does per
stored event; leaves are 200 random bytes) and the append rate is reported, as is the time to
rebuild the same tree from its leaf hashes (``MerkleTree.from_leaf_hashes``: a restarted witness).
Then ``--proofs`` inclusion proofs of random leaves against the full size, and as many consistency
proofs from a random older size, are timed one by one (median / P95 µs), each checked with the
strict verifier once per size. The ratio is each size's median over the 1k median. Results go to
bench/RESULTS.md by hand (section "Merkle proofs").
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, median, p95

from events import merkle


def timed(samples: list[float], fn: object, *args: int) -> list[bytes]:
    start = time.perf_counter()
    out = fn(*args)  # type: ignore[operator]
    samples.append((time.perf_counter() - start) * 1e6)
    return out  # type: ignore[no-any-return]


def run(size: int, proofs: int, rng: random.Random) -> dict[str, float]:
    payloads = [os.urandom(200) for _ in range(min(size, 10_000))]
    tree = merkle.MerkleTree()
    start = time.perf_counter()
    for i in range(size):
        tree.append(payloads[i % len(payloads)] + i.to_bytes(8, "big"))
    append_s = time.perf_counter() - start
    start = time.perf_counter()
    rebuilt = merkle.MerkleTree.from_leaf_hashes(tree.leaf_bytes(0, size))
    rebuild_s = time.perf_counter() - start
    assert rebuilt.root() == tree.root()
    root = tree.root()
    inclusion: list[float] = []
    consistency: list[float] = []
    for _ in range(proofs):
        index = rng.randrange(size)
        timed(inclusion, tree.inclusion, index, size)
        timed(consistency, tree.consistency, rng.randint(1, size), size)
    index, old = rng.randrange(size), rng.randint(1, size - 1)
    assert merkle.verify_inclusion(tree.leaves[index], index, size, tree.inclusion(index), root)
    assert merkle.verify_consistency(old, size, tree.root_at(old), root, tree.consistency(old))
    return {"size": size, "append_per_s": size / append_s, "append_s": append_s, "rebuild_s": rebuild_s,
            "incl_med": median(inclusion), "incl_p95": p95(inclusion),
            "cons_med": median(consistency), "cons_p95": p95(consistency)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--proofs", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(6962)
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}")
    rows = [run(int(size), args.proofs, rng) for size in args.sizes.split(",")]
    base = rows[0]
    print("| leaves | append (leaves/s, total) | rebuild from leaf hashes | inclusion median / P95 µs | ratio | "
          "consistency median / P95 µs | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']:,.0f} | {r['append_per_s']:,.0f}/s, {r['append_s']:.2f} s | {r['rebuild_s']:.2f} s | "
              f"{r['incl_med']:.1f} / {r['incl_p95']:.1f} | {r['incl_med'] / base['incl_med']:.2f}× | "
              f"{r['cons_med']:.1f} / {r['cons_p95']:.1f} | {r['cons_med'] / base['cons_med']:.2f}× |")


if __name__ == "__main__":
    main()
