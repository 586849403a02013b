"""The layers hold: imports point down only (trainers <- ensemble <- paper_trader <- daemon),
no import circle among the modules of a package, and views never import the command line.

Every module's imports are read with :mod:`ast` (module-level and function-level imports
alike, and those under ``if TYPE_CHECKING:`` too: a circle there still ties the modules
together).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RANK = {"trainers": 0, "ensemble": 1, "paper_trader": 2, "daemon": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for top in RANK for p in sorted((REPO / top).rglob("*.py"))}


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the four packages that ``name`` imports (``from pkg import sub`` names the
    submodule when there is one)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in targets:
            if target.split(".")[0] not in RANK:
                continue
            while target not in modules and "." in target:  # a name inside a module
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{src} imports {dst}"
        for src, dsts in graph.items()
        for dst in dsts
        if RANK[dst.split(".")[0]] > RANK[src.split(".")[0]]
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles among modules of the same top-level package (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def same(a: str, b: str) -> bool:
        return a.split(".")[0] == b.split(".")[0]

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if not same(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_point_down_only() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_circle_inside_a_package() -> None:
    assert circles(import_graph()) == []


def test_views_never_import_the_command_line() -> None:
    graph = import_graph()
    bad = sorted(
        f"{src} imports {dst}"
        for src, dsts in graph.items()
        if src.startswith("daemon.views")
        for dst in dsts
        if dst == "daemon.cli" or dst.startswith("daemon.cli.")
    )
    assert bad == []


def test_the_checks_see_an_upward_import_and_a_circle() -> None:
    graph = {"trainers.a": {"daemon.b"}, "daemon.b": {"daemon.c"}, "daemon.c": {"daemon.b"}}
    assert upward_imports(graph) == ["trainers.a imports daemon.b"]
    assert circles(graph) == [["daemon.b", "daemon.c"]]
