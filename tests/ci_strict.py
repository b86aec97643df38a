"""Evidence that cannot quietly disappear. A test that needs a real part (a registry, dnsmasq,
dockerd, containerd, skopeo, podman, chromium, root for a network namespace) skips when the part
is missing or does not start. On a developer's machine that stays a skip, and the run's summary
lists every one of them. Under CI=true it fails the run: a machine without the parts must not
pass with the evidence gone.

A test whose skip is not missing evidence (built for another CPU, or needing documents that are
not part of the repository) says so with `@pytest.mark.may_skip("why")`; CI keeps it a skip.

The hooks are imported into tests/conftest.py, so they apply to the whole suite at once."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

SKIPPED = pytest.StashKey[list[tuple[str, str]]]()


def under_ci() -> bool:
    """CI=true (GitHub Actions, GitLab, most CI systems set it), or 1 / yes."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "may_skip(reason): this test's skip is not missing evidence (another CPU, documents "
        "outside the repository); it stays a skip under CI=true",
    )
    config.stash[SKIPPED] = []


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or item.get_closest_marker("may_skip"):
        return
    reason = _reason(report)
    item.config.stash[SKIPPED].append((item.nodeid, reason))
    if under_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true and this test's real part or client is missing, so its evidence would "
            f"vanish as a skip: {reason}"
        )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    skipped = config.stash.get(SKIPPED, [])
    if not skipped or under_ci():
        return
    terminalreporter.section("evidence skipped: real parts or clients missing", yellow=True)
    for nodeid, reason in skipped:
        terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
    terminalreporter.line(f"{len(skipped)} test(s) above would fail the run under CI=true.")
