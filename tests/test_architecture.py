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


MAX_LINES = 700


def test_no_module_over_700_lines():
    big = {
        str(path.relative_to(ROOT)): n
        for pkg in ("diagnose", "checks", "reports")
        for path in (ROOT / pkg).glob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"split these along their responsibilities: {big}"


def test_codes_are_enumerations_not_strings():
    """Our checks pass diagnose.codes.Code members, so that mypy catches a misspelt code."""
    from diagnose import plugins
    from diagnose.codes import Code

    found, _ = plugins.load_checks()
    ours = [c for c in found if type(c).__module__.startswith("checks.")]
    assert ours
    for check in ours:
        assert all(isinstance(code, Code) for code in check.codes), check.id
    for path in (ROOT / "checks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "code":
                assert not isinstance(node.value, ast.Constant), f"{path.name}:{node.lineno}"


def test_no_check_reads_another_checks_evidence():
    """Evidence is report output: what checks share goes through typed facts."""
    for path in (ROOT / "checks").glob("*.py"):
        text = path.read_text()
        assert ".kept(" not in text and ".keep(" not in text, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr == "evidence":
                owner = node.value
                # a result's evidence (ctx.result(...).evidence, or a name bound to a result)
                assert not (
                    isinstance(owner, ast.Call)
                    and isinstance(owner.func, ast.Attribute)
                    and owner.func.attr == "result"
                ), f"{path.name}:{node.lineno}"
