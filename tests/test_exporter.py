"""`diagnose serve`: the limits that make it safe to point at a registry (probes in flight,
minimum interval per target), the metrics of real probes (every phase, certificate expiry, the
rate limit read with a HEAD), credentials from a module, bad input, and the exporter as the
container's process 1."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from diagnose.context import Options
from diagnose.exporter import ExporterServer, Prober
from diagnose.probe import Module, ProbeResult, for_probes, target_key
from tests import lab
from tests.conftest import USERS
from tests.monitoring import fetch, flaky_front, probe, samples, start_serve, value


def fake_result(target: str, success: bool = True) -> ProbeResult:
    return ProbeResult(
        target=target,
        module="default",
        success=success,
        started_at=time.time(),
        finished=time.monotonic(),
        duration_s=0.01,
        checks=(("dns", "pass"),),
        phases={"dns": 0.001},
        cert_expiry=None,
        rate_limit=None,
        problems=(),
    )


@contextlib.contextmanager
def exporter(run: Any, **limits: Any) -> Any:
    """The exporter in this process on a loopback port, its probes done by run."""
    modules = {"default": Module("default", (), for_probes(Options()))}
    server = ExporterServer(("127.0.0.1", 0), Prober(modules, run=run, **limits))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ the limits
def test_probes_in_flight_never_exceed_the_bound():
    lock = threading.Lock()
    running = [0, 0]  # now, most

    def run(module, registry, timeout):
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return fake_result(target_key(registry))

    with exporter(run, max_in_flight=3, min_interval_s=0) as server:
        port = server.server_address[1]
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda i: probe(port, f"r{i}.test"), range(24)))
        assert [a[0] for a in answers] == [200] * 24
        assert running[1] == 3
        assert server.prober.peak_in_flight == 3
        assert server.prober.outcomes[("default", "probed")] == 24


def test_a_target_is_probed_at_most_once_per_interval_and_the_age_is_served():
    calls: Counter[str] = Counter()

    def run(module, registry, timeout):
        calls[target_key(registry)] += 1
        return fake_result(target_key(registry))

    with exporter(run, min_interval_s=1.5) as server:
        port = server.server_address[1]
        first = samples(probe(port, "a.test")[1])
        time.sleep(0.4)
        again = [samples(probe(port, "a.test")[1]) for _ in range(5)]
        other = samples(probe(port, "b.test")[1])
        assert calls == {"https://a.test": 1, "https://b.test": 1}
        assert value(first, "registry_diagnose_probe_result_age_seconds") == 0.0
        ages = [value(s, "registry_diagnose_probe_result_age_seconds") for s in again]
        assert all(a is not None and 0.35 < a < 1.5 for a in ages), ages
        assert value(other, "registry_diagnose_probe_result_age_seconds") == 0.0
        time.sleep(1.2)
        fresh = samples(probe(port, "a.test")[1])
        assert calls["https://a.test"] == 2
        assert value(fresh, "registry_diagnose_probe_result_age_seconds") == 0.0
        own = samples(fetch(f"http://127.0.0.1:{port}/metrics"))
        assert value(own, "registry_diagnose_exporter_probes_total", outcome="cached") == 5
        assert value(own, "registry_diagnose_exporter_min_interval_seconds") == 1.5


def test_scrapes_of_a_target_being_probed_share_that_probe():
    calls: Counter[str] = Counter()

    def run(module, registry, timeout):
        calls[target_key(registry)] += 1
        time.sleep(1.0)
        return fake_result(target_key(registry))

    with exporter(run, min_interval_s=0) as server:
        port = server.server_address[1]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: probe(port, "same.test"), range(8)))
    assert [a[0] for a in answers] == [200] * 8
    assert calls == {"https://same.test": 1}


def test_no_free_slot_within_the_scrape_timeout_is_503_not_a_failed_probe():
    release = threading.Event()

    def run(module, registry, timeout):
        release.wait(10)
        return fake_result(target_key(registry))

    with exporter(run, max_in_flight=1, min_interval_s=0) as server:
        port = server.server_address[1]
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(probe, port, "slow.test")
            time.sleep(0.2)
            t0 = time.monotonic()
            status, body = probe(port, "other.test", **{"X-Prometheus-Scrape-Timeout-Seconds": "2"})
            waited = time.monotonic() - t0
            release.set()
            assert first.result()[0] == 200
    assert status == 503 and "busy" in body, body
    assert waited < 2.0  # answered within the scrape timeout


@pytest.mark.parametrize(
    ("query", "status", "fragment"),
    [
        ("target=alice:pw@registry.test/team/app", 400, "never from the URL"),
        ("target=https://alice:pw@registry.test", 400, "never from the URL"),
        ("target=registry.test&password=x", 400, "only target= and module="),
        ("target=registry.test&target=other.test", 400, "once each"),
        ("target=", 400, "no target"),
        ("target=registry.test&module=nope", 400, "unknown module"),
        ("target=x.io//app", 400, "target:"),
        ("target=%00%ff", 400, "target:"),
    ],
)
def test_bad_probe_requests_are_one_line_400s(query, status, fragment):
    with exporter(lambda *a: pytest.fail("no probe may run")) as server:
        from tests.monitoring import get

        got, body = get(f"http://127.0.0.1:{server.server_address[1]}/probe?{query}")
    assert got == status, body
    assert fragment in body and body.count("\n") == 1
    assert "pw" not in body


# ------------------------------------------------------------------------ real probes


def test_every_phase_with_credentials_from_the_module(
    tokens, pki, good_cert, env, dns_server, tmp_path
):
    _server, reg = tokens
    secret_file = tmp_path / "password"
    secret_file.write_text(USERS["alice"] + "\n")
    (tmp_path / "diagnose.toml").write_text(
        f"""[modules.from-env]
username = "alice"
password-env = "PROBE_PASSWORD"

[modules.from-file]
username = "alice"
password-file = "{secret_file}"
timeout = 20
"""
    )
    env = {**env, "PROBE_PASSWORD": USERS["alice"]}
    args = ("--ca-bundle", str(pki.ca_file), "--nameserver", dns_server.nameserver)
    serve = start_serve(tmp_path, env, *args, "--min-interval", "0")
    try:
        target = f"registry.test:{reg.port}/team/app:1.0"
        answers = {m: probe(serve.port, target, m) for m in ("from-env", "from-file")}
        anonymous = probe(serve.port, target)
    finally:
        lab.stop_process(serve.proc)
    for module, (status, body) in answers.items():
        assert status == 200, body
        got = samples(body)
        assert value(got, "registry_diagnose_probe_success") == 1.0, (module, body)
        phases = {lab_["phase"]: v for n, lab_, v in got if n.endswith("phase_duration_seconds")}
        assert set(phases) == {"dns", "connect", "tls", "token", "manifest", "blob_first_byte"}
        assert all(0 < v < 10 for v in phases.values()), phases
        expiry = value(got, "registry_diagnose_tls_cert_expiry_timestamp_seconds")
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(good_cert[0].read_bytes())
        assert expiry == pytest.approx(cert.not_valid_after_utc.timestamp(), abs=1)
        assert value(got, "registry_diagnose_check_status", check="access-token", status="pass")
        assert USERS["alice"] not in body
    # without the module's credentials the same image is refused, and the finding says why
    status, body = anonymous
    got = samples(body)
    assert value(got, "registry_diagnose_probe_success") == 0.0
    codes = {lab_["code"] for n, lab_, _ in got if n == "registry_diagnose_finding"}
    assert codes & {"IMAGE_UNAUTHORIZED", "REGISTRY_AUTH_ERROR", "TOKEN_SCOPE_ERROR"}, codes
    assert USERS["alice"] not in serve.log.read_text()


def test_every_metric_has_help_text(image_registry, pki, env, tmp_path):
    serve = start_serve(tmp_path, env, "--ca-bundle", str(pki.ca_file))
    try:
        status, body = probe(serve.port, f"127.0.0.1:{image_registry.port}/team/app:1.0")
        own = fetch(f"http://127.0.0.1:{serve.port}/metrics")
    finally:
        lab.stop_process(serve.proc)
    assert status == 200, body
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name in (
        "registry_diagnose_probe_success",
        "registry_diagnose_probe_duration_seconds",
        "registry_diagnose_check_status",
        "registry_diagnose_phase_duration_seconds",
        "registry_diagnose_tls_cert_expiry_timestamp_seconds",
        "registry_diagnose_finding",
        "registry_diagnose_probe_result_age_seconds",
    ):
        assert name in families and families[name].documentation.strip(), name
    # one-hot: exactly one status per check
    per_check = Counter(
        s.labels["check"] for s in families["registry_diagnose_check_status"].samples if s.value
    )
    assert per_check and set(per_check.values()) == {1}
    assert "process_resident_memory_bytes" in own and "registry_diagnose_exporter" in own
    assert "process_resident_memory_bytes" not in body  # a probe's answer holds its own only


def test_the_rate_limit_is_read_with_a_head_and_no_pull_is_spent(
    image_registry, pki, good_cert, env, tmp_path
):
    with flaky_front(image_registry.port, pki.ca_file, *good_cert) as front:
        front.state["ratelimit"] = (7, 100)
        serve = start_serve(tmp_path, env, "--ca-bundle", str(pki.ca_file))
        try:
            status, body = probe(serve.port, f"127.0.0.1:{front.port}/team/app:1.0")
        finally:
            lab.stop_process(serve.proc)
        manifest_calls = [r["method"] for r in front.requests if "/manifests/" in r["path"]]
    assert status == 200, body
    got = samples(body)
    assert value(got, "registry_diagnose_rate_limit_remaining") == 7
    assert value(got, "registry_diagnose_rate_limit_limit") == 100
    assert value(got, "registry_diagnose_finding", code="RATE_LIMIT_LOW", status="warn") == 1
    assert value(got, "registry_diagnose_probe_success") == 1.0  # a warning is not a failure
    assert manifest_calls == ["HEAD"]


def test_bound_holds_with_real_probes(dns_server, env, tmp_path):
    """20 scrapes at once of names that fail at DNS (real dnsmasq), two probes at a time."""
    serve = start_serve(
        tmp_path,
        env,
        "--nameserver",
        dns_server.nameserver,
        "--max-in-flight",
        "2",
        "--min-interval",
        "0",
    )
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda i: probe(serve.port, f"gone{i}.test"), range(20)))
        own = samples(fetch(f"http://127.0.0.1:{serve.port}/metrics"))
    finally:
        lab.stop_process(serve.proc)
    assert [a[0] for a in answers] == [200] * 20
    for _, body in answers:
        got = samples(body)
        assert value(got, "registry_diagnose_probe_success") == 0.0
        assert value(got, "registry_diagnose_finding", code="CONNECTIVITY_DNS_ERROR") == 1
    assert value(own, "registry_diagnose_exporter_probes_in_flight_peak") <= 2
    assert value(own, "registry_diagnose_exporter_probes_total", outcome="probed") == 20


# -------------------------------------------------------------------- the process itself
@pytest.mark.parametrize(
    ("args", "settings", "fragment"),
    [
        (("--require", "push"), "", "a probe only reads"),
        (("--push-test",), "", "a probe only reads"),
        (("--listen", "nowhere"), "", "HOST:PORT"),
        ((), '[modules.m]\npassword = "hunter2"\n', "does not belong in a settings file"),
        ((), '[modules.m]\nrequire = "push"\n', "would write to the registry"),
        ((), '[modules.m]\nusername = "u"\n', "needs password-env or password-file"),
        ((), '[modules.m]\nusername = "u"\npassword-env = "UNSET_VAR_X"\n', "UNSET_VAR_X"),
        ((), "[modules.m]\ncolour = 1\n", "unknown key"),
        ((), '[modules.m]\nchecks = ["nope"]\n', "unknown check nope"),
    ],
)
def test_bad_settings_stop_serve_with_one_line(args, settings, fragment, env, tmp_path):
    if settings:
        (tmp_path / "diagnose.toml").write_text(settings)
    p = subprocess.run(
        [sys.executable, "-m", "diagnose", "serve", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 2, p.stderr
    assert fragment in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert "hunter2" not in p.stderr and "Traceback" not in p.stderr


def test_serve_is_a_container_command_and_stops_on_sigterm_as_process_1(env, tmp_path):
    """In a PID namespace of its own, as in a container, serve is process 1: the kernel gives
    process 1 no default signal actions, so only its own handler makes `docker stop` quick."""
    port = lab.free_port()
    proc = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-m",
            "diagnose",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--host-root",
            str(lab.empty_root()),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        lab.wait_port(port, 20)
        children = psutil.Process(proc.pid).children()
        assert len(children) == 1
        inner = children[0]
        status = Path(f"/proc/{inner.pid}/status").read_text().splitlines()
        ns_pid = next(line for line in status if line.startswith("NSpid:")).split()
        assert ns_pid[-1] == "1"  # process 1 in its namespace
        assert fetch(f"http://127.0.0.1:{port}/metrics")
        t0 = time.monotonic()
        os.kill(inner.pid, signal.SIGTERM)
        rc = proc.wait(10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert rc == 0, err
    assert took < 5
    assert "listening on http://127.0.0.1" in err and "Traceback" not in err


def test_cert_expiry_is_a_timestamp(tmp_path):
    """The expiry is read from the evidence the tls check writes (ISO time) as Unix time."""
    from diagnose.models import CheckResult, Finding, Status
    from diagnose.probe import _cert_expiry

    when = dt.datetime(2031, 5, 4, 3, 2, 1, tzinfo=dt.UTC)
    finding = Finding(Status.PASS, "ok", evidence={"certificate": {"not_after": when.isoformat()}})
    result = CheckResult.from_finding(
        "tls", "TLS", finding, duration_s=0.0, registry=None, started_s=0.0
    )
    assert _cert_expiry(result) == when.timestamp()
