"""Under CI=true a real-part test that cannot run fails the suite; on a developer's machine it
skips and the summary lists it. Shown on a real test with its client hidden from PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.lab import ROOT

REAL_PART_TEST = "tests/test_runtimes.py::test_broken_auth_file_fails_like_podman"


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    bare = tmp_path / "bin"  # a PATH without podman (nor anything else)
    bare.mkdir(exist_ok=True)
    env["PATH"] = str(bare)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", REAL_PART_TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_client_fails_the_run_under_ci(tmp_path):
    run = _pytest(tmp_path, "true")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "1 failed" in out and "skipped" not in out.split("short test summary")[-1], out
    assert "CI=true and this test's real part or client is missing" in out, out
    assert "podman is not installed" in out, out


def test_a_missing_client_skips_on_a_developer_machine_and_is_listed(tmp_path):
    run = _pytest(tmp_path, None)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "1 skipped" in out and "failed" not in out, out
    assert "evidence skipped: real parts or clients missing" in out, out
    assert f"SKIPPED {REAL_PART_TEST}: podman is not installed" in out, out
    assert "would fail the run under CI=true" in out, out


def _apt_packages(line: str) -> list[str]:
    words = line.split("apt-get install", 1)[1].split("&&")[0].split(">")[0].split()
    return [w for w in words if not w.startswith("-")]


def test_ci_installs_the_readmes_package_list_and_runs_pytest_as_root():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    (ci_line,) = [x for x in ci.splitlines() if "apt-get install" in x]
    (readme_line,) = [x for x in readme.splitlines() if "apt-get install" in x]
    assert _apt_packages(ci_line) == _apt_packages(readme_line)
    assert {"curl", "iproute2", "docker.io", "skopeo"} <= set(_apt_packages(ci_line))
    assert 'sudo -E env "PATH=$PATH" "$PY" -m pytest' in ci
