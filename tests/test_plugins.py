"""Plugins are checked when they load, as pluggy checks a plugin against its hooks: a wiring
that cannot work is refused with a PLUGIN_LOAD_ERROR naming the problem; a check that returns a
code it does not declare fails this suite; a crash keeps its last frames, scrubbed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diagnose import plugins, runner
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.models import Finding, Status, problem
from tests import lab
from tests.conftest import validate_report

WIRING = Path(__file__).parent / "plugin_wiring"


@pytest.fixture
def wiring_env(env):
    return {**env, "PYTHONPATH": str(WIRING)}


def test_unknown_dependency_and_cycles_are_refused_at_load(wiring_env):
    r = lab.diagnose("list-checks", "--format", "json", env=wiring_env)
    assert r.rc == 0, r.err
    data = json.loads(r.out)
    broken = {b["name"]: b["error"] for b in data["broken"]}
    assert "unknown check id no-such-check" in broken["needs-nothing-real"]
    assert "dependency cycle" in broken["cycle-a"] and "cycle-b" in broken["cycle-a"]
    assert "dependency cycle" in broken["cycle-b"]
    assert "cycle-a, which could not be loaded" in broken["after-cycle"]
    loaded = {c["id"] for c in data["checks"]}
    assert {"undeclared", "leaky-crash", "api"} <= loaded
    assert not loaded & {"needs-nothing-real", "cycle-a", "cycle-b", "after-cycle"}


def test_refused_plugins_are_plugin_load_errors_in_the_report(wiring_env, schema):
    r = lab.diagnose("check-health", "--format", "json", "--checks", "login-server", env=wiring_env)
    assert r.rc == 1
    validate_report(r.report, schema)
    for name, words in (
        ("needs-nothing-real", "no-such-check"),
        ("cycle-a", "cycle-a -> cycle-b -> cycle-a"),
        ("cycle-b", "dependency cycle"),
    ):
        c = r.check(name)
        assert (c["status"], c["code"]) == ("error", "PLUGIN_LOAD_ERROR")
        assert words in c["summary"], c["summary"]


def test_a_crash_keeps_its_last_frames_scrubbed(wiring_env, schema):
    r = lab.diagnose("check-health", "--format", "json", "--checks", "leaky-crash", env=wiring_env)
    c = r.check("leaky-crash")
    assert (c["status"], c["code"]) == ("error", "CHECK_CRASHED")
    frames = c["evidence"]["traceback"]
    assert frames and frames[-1].startswith("plugin_wiring/wiring_checks.py:")
    assert " in run: raise RuntimeError(" in frames[-1]
    assert "PLANTEDtracebacktoken0123" not in r.out
    assert "<redacted>" in frames[-1]
    assert "attach the report" in c["remediation"][0]


def test_an_undeclared_code_is_an_error_under_strict_codes(wiring_env):
    r = lab.diagnose("check-health", "--format", "json", "--checks", "undeclared", env=wiring_env)
    c = r.check("undeclared")
    assert (c["status"], c["code"]) == ("error", "CHECK_CRASHED")
    assert "WIRING_NOT_DECLARED" in c["summary"] and "does not declare" in c["summary"]
    relaxed = {k: v for k, v in wiring_env.items() if k != "REGISTRY_DIAGNOSE_STRICT_CODES"}
    r = lab.diagnose("check-health", "--format", "json", "--checks", "undeclared", env=relaxed)
    c = r.check("undeclared")  # a user keeps the verdict as the check gave it
    assert (c["status"], c["code"]) == ("warn", "WIRING_NOT_DECLARED")


class _Sloppy(Check):
    id = "sloppy"
    title = "declares one code, returns another"
    scope = "host"
    codes = (Code.CLOCK_SKEW,)

    def run(self, ctx: CheckContext) -> Finding:
        return problem(Status.WARN, "x", code=Code.TLS_CERT_EXPIRING, faq=["check-health"])


def test_the_suites_own_check_catches_an_undeclared_code(schema):
    """What the autouse fixture and validate_report do for every test: one, seen failing."""
    seen: list[tuple[str, str]] = []
    old, runner.on_undeclared_code = runner.on_undeclared_code, lambda i, c: seen.append((i, c))
    try:
        report = runner.run([_Sloppy()], [], runner.Options(environ={}))
    finally:
        runner.on_undeclared_code = old
    assert seen == [("sloppy", "TLS_CERT_EXPIRING")]
    data = report.to_dict()
    data["checks"][0]["id"] = "clock"  # a built-in check id that declares only CLOCK_SKEW
    with pytest.raises(AssertionError, match="undeclared TLS_CERT_EXPIRING"):
        validate_report(data, schema)


def test_validate_unit():
    class A(Check):
        id = "a"
        depends_on = ("b",)

    class B(Check):
        id = "b"
        depends_on = ("a",)

    class C(Check):
        id = "c"
        starts_after = ("zzz",)

    class D(Check):
        id = "d"
        depends_on = ("c",)

    class E(Check):
        id = "e"

    good, broken = plugins.validate([A(), B(), C(), D(), E()], {})
    assert [c.id for c in good] == ["e"]
    why = {b.name: b.error for b in broken}
    assert why["a"].startswith("dependency cycle: a -> b -> a")
    assert why["c"] == "depends on unknown check id zzz"
    assert why["d"] == "depends on c, which could not be loaded"


def test_the_suite_fails_on_an_undeclared_code(tmp_path):
    """Seen from outside: a test whose run meets an undeclared code fails."""
    test = tmp_path / "test_sloppy.py"
    test.write_text(
        "from tests.test_plugins import _Sloppy\n"
        "from diagnose import runner\n"
        "def test_it():\n"
        "    runner.run([_Sloppy()], [], runner.Options(environ={}))\n"
    )
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         str(test), "--rootdir", str(lab.ROOT), "-c", str(lab.ROOT / "pyproject.toml")],
        cwd=lab.ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 1, p.stdout[-2000:]
    assert "checks returned codes they do not declare" in p.stdout
