"""Lint and strict typing are part of the suite, so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.lab import ROOT


def test_ruff_clean():
    if shutil.which("ruff") is None:
        pytest.skip("ruff not installed")
    p = subprocess.run(
        ["ruff", "check", "diagnose", "checks", "reports", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_mypy_strict_clean():
    p = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    if "No module named mypy" in p.stderr:
        pytest.skip("mypy not installed")
    assert p.returncode == 0, p.stdout + p.stderr


def test_version_matches_pyproject():
    import tomllib

    import diagnose

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["version"] == diagnose.__version__
