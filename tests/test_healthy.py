"""Against a healthy local registry every check passes and the run exits 0."""

from __future__ import annotations

from tests import lab


def test_healthy_registry_by_dns_name(registry, dns_server, pki, run_json, host_root):
    r = run_json(
        f"registry.test:{registry.port}",
        "--nameserver",
        dns_server.nameserver,
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        str(host_root),
    )
    assert r.rc == 0, r.out
    statuses = {c["id"]: c["status"] for c in r.report["checks"]}
    for cid in ("login-server", "dns", "tcp", "tls", "api", "clock", "credentials"):
        assert statuses.pop(cid) == "pass", cid
    # an open registry: the authentication steps have nothing to do; on a host without docker
    # the docker checks skip, and what they can read (files, environment) passes
    assert set(statuses.values()) <= {"pass", "skip"}, statuses
    assert r.check("docker-daemon")["status"] == "skip"
    assert r.report["summary"]["status"] == "pass"
    dns = r.check("dns")
    assert dns["evidence"]["addresses"] == ["127.0.0.1"]
    tls = r.check("tls")
    assert tls["evidence"]["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert tls["evidence"]["legacy_tls"]["accepted"] is False
    assert "registry-diagnose test CA" in tls["evidence"]["certificate"]["issuer"]
    api = r.check("api")
    assert api["evidence"]["status"] == 200
    assert api["evidence"]["api_version"] == "registry/2.0"


def test_healthy_registry_by_ip(registry, pki, run_json):
    r = run_json(f"127.0.0.1:{registry.port}", "--ca-bundle", str(pki.ca_file))
    assert r.rc == 0, r.out
    assert r.check("dns")["status"] == "skip"
    assert all(c["status"] in ("pass", "skip") for c in r.report["checks"])


def test_cname_chain_is_followed_and_reported(registry, dns_server, pki, run_json, host_root):
    r = run_json(
        f"alias.test:{registry.port}",
        "--nameserver",
        dns_server.nameserver,
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        str(host_root),
    )
    assert r.rc == 0, r.out
    chain = r.check("dns")["evidence"]["cname_chain"]
    assert chain == ["alias.test -> hop.test", "hop.test -> registry.test"]


def test_terminal_report_is_plain_lines_when_not_a_tty(registry, pki, env):
    r = lab.diagnose(
        "check-health", f"127.0.0.1:{registry.port}", "--ca-bundle", str(pki.ca_file), env=env
    )
    assert r.rc == 0, r.out + r.err
    lines = r.out.splitlines()
    assert any(line.strip().startswith("✔ PASS  api") for line in lines), r.out
    assert "\x1b[" not in r.out
    assert r.out.strip().splitlines()[-1].startswith("PASS:")


def test_json_to_output_file(registry, pki, env, tmp_path, schema):
    out = tmp_path / "report.json"
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{registry.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        "-o",
        str(out),
        env=env,
    )
    assert r.rc == 0 and r.out == ""
    import json

    from tests.conftest import validate_report

    validate_report(json.loads(out.read_text()), schema)
