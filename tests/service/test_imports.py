"""The service's modules import one way: no module imports another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _imports(path: Path) -> set[str]:
    """rnntune.service modules this file imports, at module level or inside functions (a deferred
    import is still a dependency), leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnntune.service"):
            if node.module == "rnntune.service":
                out.update(f"rnntune.service.{alias.name}" for alias in node.names)
            else:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("rnntune.service."))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in SERVICE.rglob("*.py"):
        rel = path.relative_to(SERVICE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        graph[".".join(["rnntune.service", *parts])] = _imports(path)
    return graph


def test_no_import_circles():
    """spec.py and search.py used to import each other; config.py reached up into the API."""
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            assert state.get(dep) != 1, "import circle: " + " -> ".join([*path, module, dep])
            if dep in graph and dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_settings_do_not_import_the_api():
    assert not {m for m in _graph()["rnntune.service.config"] if m.startswith("rnntune.service.api")}
