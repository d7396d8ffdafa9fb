"""``python -m services.planner.recompile``: the determinism witness's compiler.

Reads :class:`CompileInput` objects as JSON, one per line, on stdin; compiles each with the
default configuration (the planner service's) and writes one line per input: ``{"hash": ...}``
or ``{"error": ...}``. The auditor keeps one such process, started with its own
``PYTHONHASHSEED``, and records for every closed change whether the same plan came out.
"""

from __future__ import annotations

import sys

import msgspec

from services.planner import CompileInput, PlanError, compile_intent

_decoder = msgspec.json.Decoder(CompileInput)


def answer(line: bytes) -> bytes:
    """The witness's answer to one input line."""
    try:
        reply = {"hash": compile_intent(_decoder.decode(line)).hash}
    except (msgspec.DecodeError, PlanError) as err:
        reply = {"error": str(err)}
    return msgspec.json.encode(reply) + b"\n"


def main() -> int:
    for line in sys.stdin.buffer:
        if line.strip():
            sys.stdout.buffer.write(answer(line))
            sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
