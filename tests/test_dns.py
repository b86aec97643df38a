"""DNS failures from a real DNS server (dnsmasq) and a server that never answers."""

from __future__ import annotations

from tests import lab


def _args(dns_server, host_root, *more):
    return ("--nameserver", dns_server.nameserver, "--host-root", str(host_root), *more)


def test_nxdomain_fails_and_blocks_dependants(dns_server, host_root, run_json):
    r = run_json("nope.test:5000", *_args(dns_server, host_root))
    assert r.rc == 1
    dns = r.check("dns")
    assert (dns["status"], dns["code"]) == ("fail", "CONNECTIVITY_DNS_ERROR")
    assert dns["evidence"]["error"] == "nxdomain"
    assert "network-connectivity" in dns["faq"]
    for dep in ("tcp", "tls", "api", "clock"):
        c = r.check(dep)
        assert c["status"] == "skip", c
    assert r.check("tcp")["summary"] == "blocked by dns"
    assert r.check("tls")["summary"] == "blocked by tcp"


def test_servfail_is_told_apart(dns_servfail, host_root, run_json):
    r = run_json(
        "x.signed.test:5000",
        "--nameserver",
        dns_servfail.nameserver,
        "--host-root",
        str(host_root),
        "--tries",
        "2",
    )
    dns = r.check("dns")
    assert (dns["status"], dns["code"]) == ("fail", "CONNECTIVITY_DNS_ERROR")
    assert dns["evidence"]["error"] == "servfail", dns
    assert "SERVFAIL" in dns["summary"]
    assert dns["evidence"]["attempts"] >= 2  # SERVFAIL is transient: it was retried


def test_refused_is_told_apart(dns_refusing, host_root, run_json):
    r = run_json(
        "registry.test:5000", "--nameserver", dns_refusing.nameserver, "--host-root", str(host_root)
    )
    dns = r.check("dns")
    assert (dns["status"], dns["code"]) == ("fail", "CONNECTIVITY_DNS_ERROR")
    assert dns["evidence"]["error"] == "refused", dns
    assert "REFUSED" in dns["summary"]


def test_timeout_is_told_apart_and_bounded(host_root, run_json):
    with lab.silent_udp() as port:
        r = run_json(
            "registry.test:5000",
            "--nameserver",
            f"127.0.0.1:{port}",
            "--host-root",
            str(host_root),
            "--timeout",
            "5",
        )
    dns = r.check("dns")
    assert (dns["status"], dns["code"]) == ("fail", "CONNECTIVITY_DNS_ERROR")
    assert dns["evidence"]["error"] == "timeout"
    assert "client-timeout" in dns["faq"]
    assert r.seconds < 5 + 3


def test_private_endpoint_is_reported(dns_server, host_root, run_json):
    # only the DNS check: the private address belongs to no test host and is never contacted
    r = run_json("myacr.test:5000", *_args(dns_server, host_root, "--checks", "dns"))
    dns = r.check("dns")
    assert dns["status"] == "pass"
    assert dns["evidence"]["private_endpoint"] is True
    assert dns["evidence"]["address_kinds"] == {"10.20.30.40": "private"}
    assert "privatelink" in dns["summary"]
    assert {c["id"] for c in r.report["checks"]} == {"dns"}


def test_private_address_without_privatelink(dns_server, host_root, run_json):
    r = run_json("internal.test:5000", *_args(dns_server, host_root, "--checks", "dns"))
    dns = r.check("dns")
    assert dns["evidence"]["private_endpoint"] is True
    assert "private address" in dns["summary"]


def test_hosts_file_disagreeing_with_dns_warns_and_is_what_connects(
    registry, dns_server, host_root, pki, run_json
):
    # the hosts file pins the name to an address where no registry listens
    (host_root / "etc" / "hosts").write_text("127.0.0.2 registry.test\n")
    r = run_json(
        f"registry.test:{registry.port}",
        *_args(dns_server, host_root, "--ca-bundle", str(pki.ca_file)),
    )
    dns = r.check("dns")
    assert (dns["status"], dns["code"]) == ("warn", "CONNECTIVITY_DNS_MISMATCH")
    assert dns["evidence"]["system_addresses"] == ["127.0.0.2"]
    tcp = r.check("tcp")
    assert (tcp["status"], tcp["code"]) == ("fail", "CONNECTIVITY_TCP_REFUSED")
    assert r.rc == 1


def test_system_resolver_path_without_nameserver(registry, pki, run_json, tmp_path):
    # "localhost" never goes to DNS; the system resolver finds it
    r = run_json(f"localhost:{registry.port}", "--ca-bundle", str(pki.ca_file))
    assert r.rc == 0
    assert r.check("dns")["status"] == "skip"
    assert r.check("tcp")["status"] == "pass"
