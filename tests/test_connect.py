"""TCP and TLS failures from real servers on loopback."""

from __future__ import annotations

import datetime as dt

from tests import lab


def test_refused(run_json):
    port = lab.closed_port()
    r = run_json(f"127.0.0.1:{port}")
    tcp = r.check("tcp")
    assert (tcp["status"], tcp["code"]) == ("fail", "CONNECTIVITY_TCP_REFUSED")
    assert "network-connectivity" in tcp["faq"]
    assert tcp["evidence"]["connections"]["127.0.0.1"]["error"] == "refused"
    for dep in ("tls", "api", "clock"):
        assert r.check(dep)["status"] == "skip"
    assert r.check("tls")["summary"] == "blocked by tcp"
    assert r.rc == 1


def test_connect_timeout(run_json):
    with lab.full_backlog() as port:
        r = run_json(f"127.0.0.1:{port}", "--timeout", "6", "--tries", "1")
    tcp = r.check("tcp")
    assert (tcp["status"], tcp["code"]) == ("fail", "CONNECTIVITY_TCP_TIMEOUT"), tcp
    assert "client-timeout" in tcp["faq"]
    assert r.seconds < 6 + 3


def test_tls_legacy_only_server(pki, run_json):
    cert, key = pki.leaf("legacy", *lab.GOOD_NAMES, rsa=True)
    ctx = lab.server_context(cert, key, legacy_only=True)
    with lab.http_server({"/v2/": (200, {}, b"{}")}, ctx) as srv:
        r = run_json(f"127.0.0.1:{srv.port}", "--ca-bundle", str(pki.ca_file))
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_TLS_VERSION_ERROR"), tls
    assert tls["faq"] == ["tls12"]
    assert tls["evidence"]["legacy_tls"]["accepted"] is True
    assert tls["evidence"]["legacy_tls"]["protocol"] in ("TLSv1", "TLSv1.1")
    assert r.check("api")["summary"] == "blocked by tls"


def test_tls_expired_certificate(pki, expired_cert, run_json):
    ctx = lab.server_context(*expired_cert)
    with lab.http_server({"/v2/": (200, {}, b"{}")}, ctx) as srv:
        r = run_json(f"127.0.0.1:{srv.port}", "--ca-bundle", str(pki.ca_file))
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_SSL_ERROR")
    assert "expired" in tls["summary"]
    assert "clock-skew" in tls["faq"]
    assert tls["evidence"]["certificate"]["days_left"] < 0
    assert tls["evidence"]["verify"]["reason"] == "expired"


def test_tls_not_yet_valid_certificate(pki, run_json):
    now = dt.datetime.now(dt.UTC)
    cert = pki.leaf(
        "future",
        *lab.GOOD_NAMES,
        not_before=now + dt.timedelta(days=3),
        not_after=now + dt.timedelta(days=300),
    )
    with lab.http_server({"/v2/": (200, {}, b"{}")}, lab.server_context(*cert)) as srv:
        r = run_json(f"127.0.0.1:{srv.port}", "--ca-bundle", str(pki.ca_file))
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_SSL_ERROR")
    assert "not valid yet" in tls["summary"]
    assert tls["faq"][0] == "clock-skew"


def test_tls_expiring_soon_warns(pki, run_json):
    now = dt.datetime.now(dt.UTC)
    cert = pki.leaf("soon", *lab.GOOD_NAMES, not_after=now + dt.timedelta(days=5))
    with lab.http_server({"/v2/": (200, {}, b"{}")}, lab.server_context(*cert)) as srv:
        r = run_json(f"127.0.0.1:{srv.port}", "--ca-bundle", str(pki.ca_file))
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == ("warn", "TLS_CERT_EXPIRING")
    assert r.rc == 0  # warnings alone do not fail the run...
    assert r.check("api")["status"] == "pass"


def test_fail_on_warn(pki, env):
    now = dt.datetime.now(dt.UTC)
    cert = pki.leaf("soon", *lab.GOOD_NAMES, not_after=now + dt.timedelta(days=5))
    with lab.http_server({"/v2/": (200, {}, b"{}")}, lab.server_context(*cert)) as srv:
        r = lab.diagnose(
            "check-health",
            f"127.0.0.1:{srv.port}",
            "--ca-bundle",
            str(pki.ca_file),
            "--fail-on",
            "warn",
            "-q",
            env=env,
        )
    assert r.rc == 1  # ...unless asked to


def test_tls_wrong_host_certificate(pki, dns_server, host_root, run_json):
    cert = pki.leaf("wronghost", "somewhere-else.example")
    args = [
        "--ca-bundle",
        str(pki.ca_file),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(host_root),
    ]
    with lab.http_server({"/v2/": (200, {}, b"{}")}, lab.server_context(*cert)) as srv:
        for _ in range(4):  # it once passed now and then (a shared, mutated SSL context)
            r = run_json(f"registry.test:{srv.port}", *args)
            tls = r.check("tls")
            assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_SSL_ERROR")
            assert "somewhere-else.example" in tls["summary"]
            assert tls["evidence"]["verify"]["reason"] == "hostname"


def test_tls_untrusted_ca_then_trusted_with_ca_bundle(registry, run_json, pki):
    r = run_json(f"127.0.0.1:{registry.port}")
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_SSL_ERROR")
    assert "does not trust" in tls["summary"]
    assert any("certs.d" in step for step in tls["remediation"])
    r2 = run_json(f"127.0.0.1:{registry.port}", "--ca-bundle", str(pki.ca_file))
    assert r2.check("tls")["status"] == "pass"


def test_tls_handshake_never_answered(run_json):
    with lab.tcp_server("silent") as port:
        r = run_json(f"127.0.0.1:{port}", "--timeout", "10", "--tries", "1")
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_SSL_ERROR"), tls
    assert tls["evidence"]["error"] == "timeout"
    assert "client-timeout" in tls["faq"]
    assert r.seconds < 10 + 3


def test_tls_reset_during_handshake(run_json):
    with lab.tcp_server("reset") as port:
        r = run_json(f"127.0.0.1:{port}")
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_SSL_ERROR"), tls
    assert tls["evidence"]["error"] in ("reset", "eof")
    assert "firewall-propagation" in tls["faq"]


def test_plain_http_registry_fails_without_insecure_and_warns_with_it(run_json):
    with lab.http_server(
        {"/v2/": (200, {"Docker-Distribution-API-Version": "registry/2.0"}, b"{}")}, None
    ) as srv:
        r = run_json(f"127.0.0.1:{srv.port}")
        tls = r.check("tls")
        assert (tls["status"], tls["code"]) == ("fail", "CONNECTIVITY_SSL_ERROR")
        assert "plain HTTP" in tls["summary"]
        r2 = run_json(f"127.0.0.1:{srv.port}", "--insecure")
    tls2 = r2.check("tls")
    assert (tls2["status"], tls2["code"]) == ("warn", "INSECURE_REGISTRY")
    api = r2.check("api")
    assert api["status"] == "pass" and api["evidence"]["url"].startswith("http://")
    assert r2.rc == 0


def test_http_sessions_also_refuse_a_wrong_host_certificate(pki, dns_server, host_root, run_json):
    # with the tls check skipped, the api check's own HTTPS client must still match host names,
    # on the pinned path (--nameserver) and the system-resolver path alike
    cert = pki.leaf("wronghost", "somewhere-else.example")
    with lab.http_server({"/v2/": (200, {}, b"{}")}, lab.server_context(*cert)) as srv:
        pinned = run_json(
            f"registry.test:{srv.port}",
            "--ca-bundle",
            str(pki.ca_file),
            "--nameserver",
            dns_server.nameserver,
            "--host-root",
            str(host_root),
            "--skip",
            "tls",
        )
        direct = run_json(f"localhost:{srv.port}", "--ca-bundle", str(pki.ca_file), "--skip", "tls")
        insecure = run_json(
            f"localhost:{srv.port}", "--ca-bundle", str(pki.ca_file), "--skip", "tls", "--insecure"
        )
    for r in (pinned, direct):
        api = r.check("api")
        assert (api["status"], api["code"]) == ("fail", "CONNECTIVITY_ERROR"), api
        assert "TLS" in api["summary"]
    assert insecure.check("api")["status"] == "pass"
