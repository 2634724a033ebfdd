"""The import rules of DESIGN.md §2: no import cycle anywhere in ``recon``, arrows between folders point one way,
and nothing imports ``cli``, or ``viewer`` but the command line. Read from the source (ast), so a rule broken by a lazy import inside a
function is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recon"

TRAIN_MAY_IMPORT = {
    "data",
    "render",
    "fields",
    "models",
    "losses",
    "regularizers",
    "ot",
    "sparsity",
    "eval",
    "export",
}

# Which top-level folders of recon each folder may import (besides itself); DESIGN.md §2's arrows.
ALLOWED = {
    "data": set(),
    "render": {"data"},
    "fields": {"data"},
    "ot": set(),
    "sparsity": {"ot"},
    "models": {"data", "render", "fields"},
    "losses": {"data", "render"},
    "regularizers": {"data", "render"},
    "eval": {"data", "render", "fields", "models", "ot", "losses"},
    "export": {"data", "render", "fields", "models", "ot", "sparsity"},
    "slices": {"data", "fields", "export", "models", "render"},
    "train": TRAIN_MAY_IMPORT,
    "distributed": TRAIN_MAY_IMPORT | {"train"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The recon modules an ``from X import a, b`` names (a and b when they are modules themselves)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return names or ([target] if target in MODULES else [])


def imports(module: str, top_level_only: bool) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in ("recon", "viewer")}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == "viewer":
                found.add(node.module)
            found |= set(_resolve(node, module, path.name == "__init__.py"))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n in graph and state.get(n) is None and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if state.get(m) is None and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle_anywhere():
    graph = {m: imports(m, top_level_only=True) for m in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_arrows_point_one_way(module):
    parts = module.split(".")
    folder = parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None
    for target in imports(module, top_level_only=False):
        tparts = target.split(".")
        assert tparts[0] != "viewer" or module == "recon.cli", f"{module} imports the viewer ({target})"
        assert target != "recon.cli", f"{module} imports recon.cli; nothing may"
        if folder is None or len(tparts) < 2 or tparts[1] == folder or not (PACKAGE / tparts[1]).is_dir():
            continue
        assert tparts[1] in ALLOWED[folder], f"recon/{folder} may not import {target} (DESIGN.md §2)"
