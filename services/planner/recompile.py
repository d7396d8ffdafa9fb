"""``python -m services.planner.recompile``: the determinism witness's compiler.

Reads one :class:`CompileInput` as JSON on stdin, compiles it with the default configuration (the
planner service's), and prints ``{"hash": ...}`` — or ``{"error": ...}`` with exit 2. The auditor
runs it in a fresh process with another ``PYTHONHASHSEED`` after a change closes, and records
whether the same plan came out.
"""

from __future__ import annotations

import sys

import msgspec

from services.planner import CompileInput, PlanError, compile_intent


def main() -> int:
    try:
        inp = msgspec.json.decode(sys.stdin.buffer.read(), type=CompileInput)
        plan = compile_intent(inp)
    except (msgspec.DecodeError, PlanError) as err:
        sys.stdout.write(msgspec.json.encode({"error": str(err)}).decode() + "\n")
        return 2
    sys.stdout.write(msgspec.json.encode({"hash": plan.hash}).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
