"""The house's size limits: no module over 400 lines and no function over 60 in the packages
(``service/``, ``models/``, ``rnntune/``), so each file reads top to bottom in one sitting.

Exempt, and only these: ``service/store/migrations/`` (each revision is schema history, written once and
never edited after it ships) and the scripts outside the packages (``benchmarks/``, ``scripts/``,
``tests/``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "models", "rnntune")
EXEMPT = ("service/store/migrations/",)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    out = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if not relative.startswith(EXEMPT):
                out.append(path)
    return out


def _long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    """Every function or method of ``source`` longer than ``limit`` lines (its ``def`` line to its
    last line), as (qualified name, lines)."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > limit:
                        out.append((name, lines))
                visit(child, f"{name}.")

    visit(ast.parse(source), "")
    return out


def test_the_checks_see_a_long_module_and_a_long_function():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"class C:\n    @staticmethod\n    def f():\n{body}\n\n\ndef g():\n    return 1\n"
    assert _long_functions(source, MAX_FUNCTION_LINES) == [("C.f", MAX_FUNCTION_LINES + 1)]
    assert _long_functions(source, MAX_FUNCTION_LINES + 1) == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it by concern (limit {MAX_MODULE_LINES})"
    too_long = _long_functions(source, MAX_FUNCTION_LINES)
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
