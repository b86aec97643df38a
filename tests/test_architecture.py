"""The arrows point one way: checks and reports depend on diagnose, never on each other, and
diagnose never imports a concrete check or report."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_layers():
    for pkg, forbidden in (
        ("diagnose", {"checks", "reports"}),
        ("checks", {"reports"}),
        ("reports", {"checks"}),
    ):
        for path in (ROOT / pkg).glob("*.py"):
            bad = _imports(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_checks_do_not_import_each_other():
    for path in (ROOT / "checks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("checks"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("checks") for a in node.names), path


def test_no_project_code_imports_tests():
    for pkg in ("diagnose", "checks", "reports"):
        for path in (ROOT / pkg).glob("*.py"):
            assert "tests" not in _imports(path)
