"""``python -m services.planner.recompile``: the determinism witness's compiler.

Reads :class:`CompileInput` objects as JSON, one per line, on stdin; compiles each with the
planner service's configuration (the file ``$UPM_PLANNER_CONFIG`` names, else the default) and writes one line per input: ``{"hash": ...}``
or ``{"error": ...}``. The auditor keeps one such process, started with its own
``PYTHONHASHSEED``, and records for every closed change whether the same plan came out.
"""

from __future__ import annotations

import sys

import msgspec

from services.planner import CompileInput, PlanError, PlannerConfig, compile_intent
from services.planner.config import DEFAULT_CONFIG, config_from_environment

_decoder = msgspec.json.Decoder(CompileInput)


def answer(line: bytes, config: PlannerConfig = DEFAULT_CONFIG) -> bytes:
    """The witness's answer to one input line."""
    try:
        reply = {"hash": compile_intent(_decoder.decode(line), config).hash}
    except (msgspec.DecodeError, PlanError) as err:
        reply = {"error": str(err)}
    return msgspec.json.encode(reply) + b"\n"


def main() -> int:
    config = config_from_environment()
    for line in sys.stdin.buffer:
        if line.strip():
            sys.stdout.buffer.write(answer(line, config))
            sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
