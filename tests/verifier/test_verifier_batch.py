"""Local read-backs in one ``stat`` for many paths, with absent paths left to single read-backs."""

from __future__ import annotations

from pathlib import Path

import anyio

from providers import Absent, Present
from services.guard.steps import batch_observe, observe_many, run_command
from services.planner import CompileInput, compile_intent


async def test_one_stat_reads_many_directories_and_absent_ones_fall_back(tmp_path: Path) -> None:
    names = [tmp_path / f"d{i}:odd" for i in range(12)]  # a ':' in the path: the name is parsed last
    plan = compile_intent(CompileInput(request="Create " + " and ".join(f"directory {n} with mode 0750" for n in names)))
    for step in plan.steps[:10]:
        assert (await run_command(step.command)).rc == 0
    steps = list(plan.steps)
    await anyio.Path(steps[3].resource.name).chmod(0o700)
    batched = await batch_observe(steps)
    assert sorted(batched) == list(range(10))  # the two absent ones are not guessed at
    assert batched[3] == Present({"exists": True, "kind": "directory", "mode": "0700", "owner": "root"})
    observed = await observe_many(steps)
    assert observed[10] == observed[11] == Absent("No such file or directory")
    assert [o.fields["mode"] for o in observed[:10] if isinstance(o, Present)] == ["0750"] * 3 + ["0700"] + ["0750"] * 6
