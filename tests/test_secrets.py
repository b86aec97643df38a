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
