"""Local read-backs in one ``stat`` for many paths: what it shows, and the absent paths it names."""

from __future__ import annotations

from pathlib import Path

import anyio

from providers import Absent, Present
from services.guard.steps import batch_observe, observe_many, run_command
from services.planner import CompileInput, compile_intent


async def test_one_stat_reads_many_directories_and_the_absent_ones_it_names(tmp_path: Path) -> None:
    names = [tmp_path / f"d{i}:odd" for i in range(12)]  # a ':' in the path: the name is parsed last
    plan = compile_intent(CompileInput(request="Create " + " and ".join(f"directory {n} with mode 0750" for n in names)))
    for step in plan.steps[:10]:
        assert (await run_command(step.command)).rc == 0
    steps = list(plan.steps)
    await anyio.Path(steps[3].resource.name).chmod(0o700)
    batched = await batch_observe(steps)
    assert sorted(batched) == list(range(12))
    assert batched[10] == batched[11] == Absent("No such file or directory")  # stat named them on stderr
    assert batched[3] == Present({"exists": True, "kind": "directory", "mode": "0700", "owner": "root"})
    observed = await observe_many(steps)
    assert observed[10] == observed[11] == Absent("No such file or directory")
    assert [o.fields["mode"] for o in observed[:10] if isinstance(o, Present)] == ["0750"] * 3 + ["0700"] + ["0750"] * 6


async def test_a_missing_path_stat_quotes_another_way_is_read_back_alone(tmp_path: Path) -> None:
    """GNU ``stat`` quotes a name holding a quote differently (``"it's"``): the batch does not guess at
    it (unknown, left out), and its own read-back proves it absent."""
    names = [tmp_path / "plain", tmp_path / "it's"]
    plan = compile_intent(CompileInput(spec={"resources": [
        {"type": "local_directory", "path": str(n), "mode": "0750"} for n in names]}))
    steps = sorted(plan.steps, key=lambda s: s.resource.name)
    batched = await batch_observe(steps)
    quoted = next(i for i, s in enumerate(steps) if "'" in s.resource.name)
    assert quoted not in batched and batched[1 - quoted] == Absent("No such file or directory")
    assert (await observe_many(steps))[quoted] == Absent("No such file or directory")
