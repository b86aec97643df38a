"""The runner and plugin mechanism, with a real third-party distribution on the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnose.models import Finding, Status, problem, worst
from tests import lab
from tests.conftest import validate_report

PLUGINS = Path(__file__).parent / "plugin_dist"


@pytest.fixture
def plugin_env(env):
    return {**env, "PYTHONPATH": str(PLUGINS)}


def test_third_party_checks_are_listed(plugin_env):
    r = lab.diagnose("list-checks", env=plugin_env)
    assert r.rc == 0
    for cid in ("sleepy", "crashy", "host-fact", "after-api", "login-server", "api"):
        assert cid in r.out
    assert "BROKEN" in r.out and "missing" in r.out


def test_a_hanging_check_times_out_and_the_rest_still_report(
    registry, pki, plugin_env, schema, host_root
):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        "--host-root",
        str(host_root),
        env=plugin_env,
    )
    assert r.rc == 1
    validate_report(r.report, schema)
    assert r.check("sleepy")["code"] == "CHECK_TIMEOUT"
    assert r.check("sleepy")["status"] == "error"
    crashy = r.check("crashy")
    assert (crashy["status"], crashy["code"]) == ("error", "CHECK_CRASHED")
    assert "boom in a plugin" in crashy["summary"]
    assert r.check("missing")["code"] == "PLUGIN_LOAD_ERROR"
    assert r.check("api")["status"] == "pass"
    assert r.check("after-api")["summary"] == "api said 200"
    host = [c for c in r.report["checks"] if c["id"] == "host-fact"]
    assert len(host) == 1 and host[0]["registry"] is None and host[0]["status"] == "pass"
    assert r.seconds < 2 + 5  # sleepy is abandoned at its 2 s limit, not waited for


def test_the_run_deadline_ends_the_process(registry, pki, plugin_env):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        "--timeout",
        "1",
        "--checks",
        "sleepy",
        env=plugin_env,
    )
    assert r.rc == 1
    assert r.check("sleepy")["summary"].startswith("did not finish within the run deadline")
    assert r.seconds < 1 + 3


def test_skip_and_checks_select(registry, pki, plugin_env):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        "--checks",
        "after-api",
        "--skip",
        "tls",
        env=plugin_env,
    )
    ids = [c["id"] for c in r.report["checks"]]
    assert "tls" not in ids and "after-api" in ids and "api" in ids and "sleepy" not in ids


def test_worst_status():
    assert worst([]) is Status.PASS
    assert worst([Status.SKIP, Status.PASS]) is Status.PASS
    assert worst([Status.WARN, Status.FAIL, Status.PASS]) is Status.FAIL
    assert worst([Status.ERROR, Status.FAIL]) is Status.ERROR


def test_problem_findings_must_cite_faq():
    with pytest.raises(ValueError):
        problem(Status.FAIL, "x", code="X", faq=[])
    f = problem(Status.FAIL, "x", code="X", faq=["tls12"], remediation=["do y"])
    assert f == Finding(Status.FAIL, "x", "X", ("tls12",), ("do y",), {})


def test_urllib3_never_gets_a_handshake_context():
    # urllib3 turns check_hostname off on contexts it is given; a context shared with it made
    # the tls check accept a wrong-host certificate whenever the api check ran at that moment.
    # Contexts are kept for the process (loading the store is costly), those of HTTP sessions
    # apart from those of handshakes.
    from diagnose.context import Options, RunState

    state, other = RunState(Options()), RunState(Options())
    handshake, http = state.ssl_context(), state.http_context(True)
    assert handshake is not http
    assert other.ssl_context() is handshake  # kept: the store is loaded once
    session = state.session(True)
    assert session.ssl_context is http
    http.check_hostname = False  # what urllib3 does to it
    assert handshake.check_hostname is True


def test_a_check_can_apply_to_acr_only(plugin_env, registry, pki, dns_server, host_root):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        f"testacr1.azurecr.io:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(host_root),
        "--checks",
        "acr-only",
        "-f",
        "json",
        env=plugin_env,
    )
    plain = r.check("acr-only", f"127.0.0.1:{registry.port}")
    acr = r.check("acr-only", f"testacr1.azurecr.io:{registry.port}")
    assert plain["status"] == "skip" and "Azure Container Registry" in plain["summary"]
    assert acr["status"] == "pass" and acr["summary"].startswith("ran for testacr1.azurecr.io")


def test_shared_run_options_match_the_settings():
    import inspect

    from diagnose.cli import bundle, check_health, preflight
    from diagnose.options import SPECS

    shared = {s.name for s in SPECS}
    for command in (check_health, preflight, bundle):
        assert shared <= set(inspect.signature(command).parameters), command.__name__


def test_once_computes_a_value_once_for_concurrent_callers():
    import threading
    import time

    from diagnose.context import Options, RunState

    state = RunState(Options())
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return {"value": 42}

    got = []
    threads = [
        threading.Thread(target=lambda: got.append(state.once("r", "k", slow))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and got == [{"value": 42}] * 8

    def broken():
        calls.append(2)
        raise ValueError("nope")

    for _ in range(3):
        with pytest.raises(ValueError):
            state.once("r", "bad", broken)
    assert calls.count(2) == 1
