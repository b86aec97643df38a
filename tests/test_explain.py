"""explain: real-looking error lines from docker, containerd, podman, az acr and CI logs."""

from __future__ import annotations

import json

import pytest

from tests import lab

# Lines written for these tests. Two that named entries without evidence moved to
# tests/data/explain_regression.toml.
CORPUS = [
    (
        'Error response from daemon: Get "https://myreg.azurecr.io/v2/": net/http: request '
        "canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)",
        "client-timeout",
    ),
    (
        'failed to do request: Head "https://myreg.azurecr.io/v2/app/manifests/1.0": dial tcp '
        "20.1.2.3:443: i/o timeout",
        "client-timeout",
    ),
    ("Trying to pull repository myreg.azurecr.io/myimage ...", "signature-verification"),
    (
        "<Error><Code>InvalidAuthenticationInfo</Code><Message>Authentication information is not "
        "given in the correct format. Check the value of Authorization header.",
        "redirect-auth-header",
    ),
    (
        "Error response from daemon: denied: client with IP '203.0.113.7' is not allowed access. "
        "Refer https://aka.ms/acr/firewall to grant access.",
        "firewall-propagation",
    ),
    (
        "docker: Error response from daemon: Get https://old.example.com/v2/: remote error: tls: "
        "protocol version not supported.",
        "tls12",
    ),
    ("invalid reference format: repository name must be lowercase", "repository-format"),
    (
        "Error: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
        "daemon running?",
        "cli-in-container",
    ),
    (
        "ERROR: The admin user is disabled. Use 'az acr update -n myreg --admin-enabled true'",
        "admin-credentials",
    ),
    (
        "error: remote trust data does not exist for myreg.azurecr.io/app: notary server",
        "content-trust",
    ),
    (
        "Error response from daemon: Get https://registry.local:5000/v2/: http: server gave HTTP "
        "response to HTTPS client",
        "insecure-registry",
    ),
    (
        "x509: certificate has expired or is not yet valid: current time 2019-01-01",
        "certificate-expired",
    ),
    ("dial tcp: lookup registry.local on 127.0.0.53:53: no such host", "network-connectivity"),
]


@pytest.mark.parametrize(("line", "key"), CORPUS)
def test_corpus_line_maps_to_the_right_entry_first(env, line, key):
    r = lab.diagnose("explain", "--format", "json", line, env=env)
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert doc["candidates"][0]["key"] == key, [c["key"] for c in doc["candidates"]]


def test_unauthorized_lists_the_candidates_and_the_checks_to_tell_them_apart(env):
    r = lab.diagnose(
        "explain", "--format", "json", "unauthorized: authentication required", env=env
    )
    doc = json.loads(r.out)
    keys = {c["key"] for c in doc["candidates"]}
    assert {
        "lowercase-login-server",
        "signature-verification",
        "permission-propagation",
        "pull-push-roles",
    } <= keys
    checks = {cid for c in doc["candidates"] for cid in c["checks"]}
    assert {"login-server", "credentials", "scope"} <= checks
    assert doc["command"].startswith("diagnose check-health <registry> --checks ")


def test_a_log_from_stdin_and_from_a_file(env, tmp_path):
    log = (
        "2026-11-23T10:00:00Z building\n"
        "2026-11-23T10:00:01Z Pulling from team/app on myreg.azurecr.io\n"
        "2026-11-23T10:00:31Z Error response from daemon: Get https://myreg.azurecr.io/v2/: "
        "net/http: request canceled (Client.Timeout exceeded while awaiting headers)\n"
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBsYW50ZWQ "
        "unauthorized: authentication required\n"
    )
    r = lab.diagnose("explain", env=env, stdin=log)
    assert r.rc == 0
    assert "myreg.azurecr.io --checks" in r.out
    assert "eyJzdWIiOiJ4In0" not in r.out  # a token in the log is not echoed back
    f = tmp_path / "ci.log"
    f.write_text(log)
    r2 = lab.diagnose("explain", "--file", str(f), "-f", "json", env=env)
    doc = json.loads(r2.out)
    assert doc["lines_read"] == 4 and doc["matched_lines"] == 2
    assert doc["candidates"][0]["key"] == "client-timeout"


def test_nothing_known_exits_1(env):
    r = lab.diagnose("explain", "everything is fine", env=env)
    assert r.rc == 1 and "No known registry error" in r.out


def test_explain_bad_input(env, tmp_path):
    assert lab.diagnose("explain", "--file", str(tmp_path / "none.log"), env=env).rc == 2
    binary = tmp_path / "bin.log"
    binary.write_bytes(bytes(range(256)) * 100)
    r = lab.diagnose("explain", "--file", str(binary), env=env)
    assert r.rc in (0, 1) and "Traceback" not in r.err
