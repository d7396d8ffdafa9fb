"""The layout is layers, each importing only downward (ARCHITECTURE.md).

Every import counts: at module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# lowest first: a package may import only packages of a lower rank (and itself)
RANK = {"events": 0, "providers": 1, "upm_localfs": 1, "services": 2, "projections": 3, "upm": 4}
BUILDING_BLOCKS = ("services.common", "services.security", "services.guard")
PIPELINE = ("services.planner", "services.preflight", "services.executor", "services.verifier",
            "services.auditor", "services.gateway")


def modules() -> Iterator[tuple[str, Path]]:
    for top in RANK:
        folder = ROOT / top
        paths = sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{top}.py"]
        for path in paths:
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(path: Path) -> set[str]:
    """Every absolute import of UPM's own packages in ``path``, wherever it stands in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in RANK}


EDGES = {module: imports_of(path) for module, path in modules()}


def top(name: str) -> str:
    return name.split(".")[0]


def test_every_import_points_down_or_within_its_own_package() -> None:
    upward = sorted(f"{module} imports {target}" for module, targets in EDGES.items() for target in targets
                    if RANK[top(target)] > RANK[top(module)])
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_two_top_level_packages_import_each_other_even_through_others() -> None:
    graph: dict[str, set[str]] = {name: set() for name in RANK}
    for module, targets in EDGES.items():
        graph[top(module)] |= {top(t) for t in targets} - {top(module)}

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    cycles = sorted(f"{a} ⇄ {b}" for a in RANK for b in reach(a) if a < b and a in reach(b))
    assert not cycles, f"top-level packages that import each other: {cycles}"


@pytest.mark.parametrize("package", PIPELINE)
def test_no_pipeline_service_imports_the_composition_root_or_the_cli(package: str) -> None:
    wrong = sorted(f"{m} imports {t}" for m, ts in EDGES.items() if m.startswith(package) for t in ts
                   if top(t) in ("upm", "projections"))
    assert not wrong, "\n".join(wrong)


def test_building_blocks_know_no_pipeline_service() -> None:
    wrong = sorted(f"{m} imports {t}" for m, ts in EDGES.items() if m.startswith(BUILDING_BLOCKS) for t in ts
                   if t.startswith(PIPELINE))
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_top() -> None:
    wrong = sorted(f"{m} imports {t}" for m, ts in EDGES.items() if top(m) != "upm" for t in ts if top(t) == "upm")
    assert not wrong, "\n".join(wrong)


def test_the_walk_sees_function_level_imports() -> None:
    """The checks above would pass vacuously if the walk missed imports inside functions."""
    assert "upm.app" in EDGES["upm.supervisor"]  # imported inside a function only
    assert len(EDGES) > 150
