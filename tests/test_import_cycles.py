"""No import cycles among detlight's modules, counting imports inside functions too.

A module-level cycle breaks at import time; a cycle through a function-level import still ties two modules together
(neither can be read, tested or moved alone). Imports under ``if TYPE_CHECKING:`` count too: they are not executed,
but the two modules still cannot be read or moved apart, and a type checker follows them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detlight"

#: Edges another change removes; each must still exist (so this list cannot go stale) and is left out of the search.
PENDING: set[tuple[str, str]] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    """``module -> detlight modules it imports`` (at any depth of the module's code)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in modules.items():
        package = module if is_package else module.rpartition(".")[0]
        edges: set[str] = set()
        stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Import):
                edges.update(t for a in node.names if a.name.startswith("detlight") and (t := resolve(a.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                if base.startswith("detlight"):
                    for alias in node.names:
                        full = f"{base}.{alias.name}"
                        target = full if full in modules else resolve(base)
                        if target:
                            edges.add(target)
            stack.extend(ast.iter_child_nodes(node))
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_type_only_and_relative_imports_are_edges():
    graph = import_graph()
    assert "detlight.check" in graph["detlight.cli"]  # imported inside _main
    assert "detlight.exceptions" in graph["detlight.errors"]
    assert "detlight.cli_app" in graph["detlight.cli"]  # imported under `if TYPE_CHECKING:` only
    assert _has_type_checking_import(PACKAGE / "cli.py")


def _has_type_checking_import(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.If) and _is_type_checking(node)
               and any(isinstance(child, (ast.Import, ast.ImportFrom)) for child in node.body)
               for node in ast.walk(tree))


def test_no_import_cycles_among_detlight_modules():
    graph = import_graph()
    for source, target in PENDING:
        assert target in graph.get(source, set()), f"{source} no longer imports {target}: drop it from PENDING"
        graph[source] = graph[source] - {target}
    assert cycles(graph) == []
