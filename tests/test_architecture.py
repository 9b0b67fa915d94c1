"""The tree reads like the pipeline: docs/architecture.md lists every module, and no module imports
another that imports it back (counting imports inside functions; ``if TYPE_CHECKING:`` ones aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "steth_hub"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """Every import node outside ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    continue
                targets = [f"{node.module}.{a.name}" for a in node.names]
                # "from steth_hub.x import y" imports steth_hub.x; "from steth_hub.corpus import kauh" a submodule
                targets = [t for t in targets if t in modules] or [node.module]
            else:
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_module_of_steth_hub_imports_one_that_imports_it_back():
    graph = import_graph()
    assert graph["steth_hub.torch_classifier"] and graph["steth_hub.hub"]  # the parser sees imports at all
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (move the shared code into a module both can import): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def _table_paths() -> set[str]:
    """Backticked ``steth_hub/...`` paths in the module table of docs/architecture.md."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("| stage | module | what it does |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`(steth_hub/[A-Za-z0-9_./*-]*)`", table))


def test_the_module_table_of_the_architecture_doc_matches_the_tree():
    listed = _table_paths()
    missing_files = sorted(p for p in listed if not ((REPO / p).exists() if "*" not in p else any(REPO.glob(p))))
    assert not missing_files, f"docs/architecture.md names files that do not exist: {missing_files}"
    # a glob (steth_hub/commands/*.py) covers its folder
    covered = {(p.rsplit("/", 1)[0] if "*" in p else p).rstrip("/") for p in listed}
    unlisted = []
    for path in sorted(PACKAGE.iterdir()):
        rel = path.relative_to(REPO).as_posix()
        if path.name.startswith(("_", ".")) or path.name in ("models", "examples", "templates"):
            continue  # package data and __init__/__main__ are not pipeline stages
        if path.is_dir() and not (path / "__init__.py").exists():
            continue
        if path.suffix not in (".py", "") or rel in covered:
            continue
        if path.is_dir() and all(f.relative_to(REPO).as_posix() in covered for f in path.glob("*.py")
                                 if f.name != "__init__.py"):
            continue  # every module of the sub-package is listed on its own
        unlisted.append(rel + ("/" if path.is_dir() else ""))
    assert not unlisted, f"add these modules to the table in docs/architecture.md: {unlisted}"
