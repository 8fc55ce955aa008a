"""The layout's promises, checked: mithridate's modules import each other without cycles (module-level
imports, the ones that run when a module loads), and results never import the renderers."""

from __future__ import annotations

import ast
from pathlib import Path

import mithridate

ROOT = Path(mithridate.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """mithridate modules imported when ``path`` loads (not those imported inside functions)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mithridate"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mithridate"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    return {name: {m for m in top_level_imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``edges`` (a package importing its own parts does not count), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    edges = graph()
    assert sum(map(len, edges.values())) > 100  # the graph is really read
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)
    planted = {**edges, "mithridate.data.io": edges["mithridate.data.io"] | {"mithridate.vault.core"}}
    assert find_cycle(planted) is not None  # and a cycle would be found


def test_results_do_not_import_the_renderers():
    for path in [*(ROOT / "detect").rglob("*.py"), *(ROOT / "validate").rglob("*.py")]:
        imported = {n.module for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.ImportFrom) and n.module}  # anywhere, functions included
        assert not {m for m in imported if m.startswith("mithridate.report")}, f"{path.relative_to(ROOT)}"


FENCES = {"vault/primitives.py", "federated/secagg/protocol.py"}


def test_cryptographic_primitives_stay_behind_their_fences():
    """Only the fenced modules import ``cryptography``'s primitives (hazmat): one per package."""
    for path in ROOT.rglob("*.py"):
        imported = {n.module for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)
                     for a in n.names}
        if any(m.startswith("cryptography.hazmat") for m in imported):
            assert path.relative_to(ROOT).as_posix() in FENCES, path.relative_to(ROOT)
