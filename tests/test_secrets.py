"""Planted secrets never reach any output: terminal, JSON, stderr."""

from __future__ import annotations

import base64
import json

from tests import lab

SECRETS = ["PLANTED-pw-7f3a9", "PLANTED-identity-token-51c2", "PLANTED-cookie-88e1"]


def _assert_clean(*texts: str) -> None:
    blob = "\n".join(texts)
    for s in SECRETS:
        assert s not in blob, f"secret {s} leaked"
    b64 = base64.b64encode(f"bob:{SECRETS[0]}".encode()).decode()
    assert b64 not in blob


def test_secrets_in_name_config_and_headers_never_leak(pki, env, home):
    cookie = {
        "Set-Cookie": f"session={SECRETS[2]}",
        "Docker-Distribution-API-Version": "registry/2.0",
    }
    with lab.http_server(
        {"/v2/": (200, cookie, b"{}")}, lab.server_context(*pki.leaf("good", *lab.GOOD_NAMES))
    ) as srv:
        cfg = home / ".docker"
        cfg.mkdir()
        auth = base64.b64encode(f"bob:{SECRETS[0]}".encode()).decode()
        (cfg / "config.json").write_text(
            json.dumps(
                {"auths": {f"127.0.0.1:{srv.port}": {"auth": auth, "identitytoken": SECRETS[1]}}}
            )
        )
        outputs = []
        for fmt in ("json", "terminal"):
            r = lab.diagnose("check-health", "--ca-bundle", str(pki.ca_file), "-f", fmt, env=env)
            assert r.rc == 0, r.out + r.err
            outputs += [r.out, r.err]
        r = lab.diagnose(
            "check-health",
            f"https://bob:{SECRETS[0]}@127.0.0.1:{srv.port}",
            "--ca-bundle",
            str(pki.ca_file),
            "-f",
            "json",
            env=env,
        )
        assert r.rc == 0
        outputs += [r.out, r.err]
    _assert_clean(*outputs)


def test_auth_flow_secrets_never_leak(tokens, pki, env, home, tmp_path):
    """Password on stdin, refresh, access and identity tokens: none in any output."""
    from tests.conftest import USERS

    server, reg = tokens
    planted_identity = server.issue_refresh("alice")
    outputs = []
    common = ("--ca-bundle", str(pki.ca_file), "--repository", "team/app", "--require", "push")
    for fmt in ("json", "terminal"):
        r = lab.diagnose(
            "check-health",
            f"127.0.0.1:{reg.port}",
            *common,
            "-f",
            fmt,
            "-u",
            "alice",
            "--password-stdin",
            env=env,
            stdin=USERS["alice"],
        )
        assert r.rc == 0, r.out + r.err
        outputs += [r.out, r.err]
        r = lab.diagnose(
            "check-health",
            f"127.0.0.1:{reg.port}",
            *common,
            "-f",
            fmt,
            "--password-stdin",
            "-u",
            "alice",
            env=env,
            stdin="wrong-PLANTED-pw",
        )
        outputs += [r.out, r.err]
        r = lab.diagnose(
            "check-health",
            f"127.0.0.1:{reg.port}",
            *common,
            "-f",
            fmt,
            env={**env, "REGISTRY_DIAGNOSE_IDENTITY_TOKEN": planted_identity},
        )
        outputs += [r.out, r.err]
    with server.lock:
        issued = list(server.refresh_tokens)
    blob = "\n".join(outputs)
    for secret in [USERS["alice"], "wrong-PLANTED-pw", planted_identity, *issued]:
        assert secret not in blob, f"leaked {secret[:6]}..."
    assert "eyJ" not in blob  # no JWT (access token) anywhere
    assert "Bearer ey" not in blob
