"""The service's modules import one way: no module imports another that imports it back.

Every import counts: at module level, deferred inside a function, and under ``if TYPE_CHECKING:``.
A deferred or type-only import is still a dependency; written on one side of a circle, it only
hides the circle from Python, not from the next reader."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
PACKAGE = "rnntune.service"


def _module(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join([PACKAGE, *(p for p in rel.parts if p != "__init__")])


def _imports(path: Path, root: Path) -> dict[str, int]:
    """The rnntune.service modules ``path`` imports, each with the line of its first import,
    wherever the import statement stands (relative imports resolved)."""
    name = _module(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == PACKAGE or (node.level and not node.module):
                targets = [f"{module}.{alias.name}" for alias in node.names]
            else:
                targets = [module]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target.startswith(PACKAGE + "."):
                found.setdefault(target, node.lineno)
    return found


def _graph(root: Path = SERVICE) -> dict[str, dict[str, int]]:
    graph = {_module(path, root): _imports(path, root) for path in root.rglob("*.py")}
    # ``from rnntune.service.api import app`` names a module or a name in a package: keep modules
    return {m: {d: line for d, line in deps.items() if d in graph} for m, deps in graph.items()}


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each import circle once, as a path ``a -> b -> … -> a`` (a depth-first search)."""
    found, state = [], {}  # state 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep] if dep in path else [module, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_import_circles():
    graph = _graph()
    shown = [
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:], strict=False)) + f" -> {c[-1]}"
        for c in circles(graph)
    ]
    assert not shown, "import circles:\n" + "\n".join(shown)


def test_the_search_sees_deferred_and_type_only_imports(tmp_path):
    """The three kinds of import that hid circles here: a deferred one, a TYPE_CHECKING one and a
    relative one; each closes a circle the test must report."""
    pkg = tmp_path / "service"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from rnntune.service import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rnntune.service.a import f\n"
    )
    (pkg / "c.py").write_text("from . import d\n")
    (pkg / "d.py").write_text("from .c import x\n")
    (pkg / "e.py").write_text("from rnntune.service import a\n")
    found = {tuple(c) for c in circles(_graph(pkg))}
    assert found == {
        ("rnntune.service.a", "rnntune.service.b", "rnntune.service.a"),
        ("rnntune.service.c", "rnntune.service.d", "rnntune.service.c"),
    }


def test_settings_do_not_import_the_api():
    assert not {m for m in _graph()["rnntune.service.config"] if m.startswith("rnntune.service.api")}
