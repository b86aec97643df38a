"""Credentials and the token flow against the real registry in token mode and a token server."""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests import lab
from tests.conftest import USERS, validate_report

FLOW = (
    "credentials",
    "auth-challenge",
    "refresh-token",
    "access-token",
    "scope",
    "authorized-request",
)


def run_auth(env, schema, reg, pki, *args, stdin=None, extra_env=None, timeout=90):
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        "-q",
        *args,
        env={**env, **(extra_env or {})},
        stdin=stdin,
        timeout=timeout,
    )
    assert r.rc in (0, 1), r.err
    assert "Traceback" not in r.err
    validate_report(r.report, schema)
    return r


def statuses(r):
    return {c: r.check(c)["status"] for c in FLOW}


@pytest.mark.parametrize("need", ["pull", "push"])
def test_password_on_stdin_healthy(tokens, pki, env, schema, need):
    _server, reg = tokens
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "--require",
        need,
        "-u",
        "alice",
        "--password-stdin",
        stdin=USERS["alice"],
    )
    assert r.rc == 0, r.out
    assert set(statuses(r).values()) == {"pass"}, statuses(r)
    assert r.check("credentials")["evidence"]["source"] == "argument"
    assert "password grant" in r.check("refresh-token")["summary"]
    granted = r.check("scope")["evidence"]["granted"]
    # the token asks for what the run needs, and the token server grants no more than asked
    assert "pull" in granted and ("push" in granted) == (need == "push"), granted
    assert "1 tag(s)" in r.check("authorized-request")["summary"]


def test_password_from_environment(tokens, pki, env, schema):
    _server, reg = tokens
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "-u",
        "bob",
        extra_env={"REGISTRY_DIAGNOSE_PASSWORD": USERS["bob"]},
    )
    assert r.rc == 0, r.out
    assert r.check("credentials")["evidence"]["username"] == "bob"


def test_docker_get_flow_when_no_password_grant(tokens, pki, env, schema):
    server, reg = tokens
    server.mode = "no-password-grant"
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        stdin=USERS["alice"],
    )
    assert r.rc == 0, r.out
    assert "basic auth" in r.check("refresh-token")["summary"]
    assert r.check("access-token")["evidence"]["method"] == "GET realm with basic auth"


def test_no_push_grant_fails_at_scope_naming_push(tokens, pki, env, schema):
    _server, reg = tokens
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "--require",
        "push",
        "-u",
        "bob",
        "--password-stdin",
        stdin=USERS["bob"],
    )
    assert r.rc == 1
    scope = r.check("scope")
    assert (scope["status"], scope["code"]) == ("fail", "TOKEN_SCOPE_ERROR")
    assert "not push" in scope["summary"]
    assert scope["faq"] == ["pull-push-roles", "permission-propagation"]
    assert r.check("authorized-request")["summary"] == "blocked by scope"
    for step in ("credentials", "auth-challenge", "refresh-token", "access-token"):
        assert r.check(step)["status"] == "pass"


def test_wrong_password_fails_at_refresh_token(tokens, pki, env, schema):
    _server, reg = tokens
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        stdin="wrong-password",
    )
    step = r.check("refresh-token")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_REFRESH_TOKEN_ERROR")
    assert step["evidence"]["status"] == 401
    assert "admin-credentials" in step["faq"]
    for later in ("access-token", "scope", "authorized-request"):
        assert r.check(later)["status"] == "skip"
    assert r.check("access-token")["summary"] == "blocked by refresh-token"


def test_anonymous_is_refused_by_the_registry(tokens, pki, env, schema):
    _server, reg = tokens
    r = run_auth(env, schema, reg, pki, "--repository", "team/app")
    assert r.check("credentials")["evidence"]["source"] == "anonymous"
    assert r.check("refresh-token")["status"] == "skip"
    assert r.check("access-token")["status"] == "pass"
    scope = r.check("scope")
    assert (scope["status"], scope["code"]) == ("fail", "TOKEN_SCOPE_ERROR")
    assert scope["evidence"]["granted"] == []


# ------------------------------------------------------------------- the token service failing
@pytest.mark.parametrize(
    ("mode", "status", "faq"),
    [
        ("500", 500, "client-timeout"),
        ("403", 403, "pull-push-roles"),
        ("401", 401, "admin-credentials"),
    ],
)
def test_token_service_errors_fail_at_refresh(tokens, pki, env, schema, mode, status, faq):
    server, reg = tokens
    server.mode = mode
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        stdin=USERS["alice"],
    )
    step = r.check("refresh-token")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_REFRESH_TOKEN_ERROR")
    assert step["evidence"]["status"] == status
    assert faq in step["faq"]
    assert r.check("scope")["status"] == "skip"


def test_malformed_token_response(tokens, pki, env, schema):
    server, reg = tokens
    server.mode = "malformed"
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        stdin=USERS["alice"],
    )
    step = r.check("refresh-token")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_REFRESH_TOKEN_ERROR")
    assert step["evidence"]["error"] == "malformed"
    assert step["faq"] == ["registry-api-v2"]


def test_token_without_token_field(tokens, pki, env, schema):
    server, reg = tokens
    r = run_auth(env, schema, reg, pki, "--repository", "team/app")  # anonymous: GET realm
    assert r.check("access-token")["status"] == "pass"
    server.mode = "no-token"
    r = run_auth(env, schema, reg, pki, "--repository", "team/app")
    step = r.check("access-token")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_ACCESS_TOKEN_ERROR")
    assert step["evidence"]["error"] == "malformed"


def test_slow_token_service_times_out_within_the_check(tokens, pki, env, schema):
    server, reg = tokens
    server.mode, server.slow_s = "slow", 40
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        stdin=USERS["alice"],
        timeout=60,
    )
    step = r.check("refresh-token")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_REFRESH_TOKEN_ERROR")
    assert step["evidence"]["error"] == "timeout"
    assert "client-timeout" in step["faq"]
    assert r.seconds < 25


def test_revoked_grant(tokens, pki, env, schema):
    server, reg = tokens
    server.revoke("bob", "team/app")
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "-u",
        "bob",
        "--password-stdin",
        stdin=USERS["bob"],
    )
    scope = r.check("scope")
    assert (scope["status"], scope["code"]) == ("fail", "TOKEN_SCOPE_ERROR")
    assert "not pull" in scope["summary"]


def test_registry_rejects_a_token_it_cannot_verify(tokens, pki, env, schema, tmp_path):
    # a token server whose signer the registry does not trust: the registry says 401
    server, reg = tokens
    from tests import tokenserver

    real = server.signer
    server.signer = tokenserver.Signer.create(tmp_path)
    try:
        r = run_auth(
            env,
            schema,
            reg,
            pki,
            "--repository",
            "team/app",
            "-u",
            "alice",
            "--password-stdin",
            stdin=USERS["alice"],
        )
    finally:
        server.signer = real
    step = r.check("authorized-request")
    assert (step["status"], step["code"]) == ("fail", "REGISTRY_AUTH_ERROR")
    assert step["evidence"]["status"] == 401
    assert "permission-propagation" in step["faq"]


# ------------------------------------------------------------------------------- the realm
@pytest.fixture(scope="module")
def unresolvable_realm_registry(tmp_path_factory, good_cert, token_stack):
    server, _ = token_stack
    from tests import tokenserver

    d = tmp_path_factory.mktemp("badrealm")
    reg = lab.start_registry(
        d,
        *good_cert,
        extra=tokenserver.token_auth_config(
            "https://nowhere.test:4443/token", "registry.test", server.signer.cert_file
        ),
    )
    yield reg
    reg.stop()


def test_realm_on_unresolvable_host(
    unresolvable_realm_registry, dns_server, pki, env, schema, host_root
):
    reg = unresolvable_realm_registry
    r = lab.diagnose(
        "check-health",
        f"registry.test:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(host_root),
        "-f",
        "json",
        "-q",
        env=env,
    )
    validate_report(r.report, schema)
    step = r.check("auth-challenge")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_REALM_ERROR")
    assert "nowhere.test" in step["summary"]
    assert r.check("refresh-token")["summary"] == "blocked by auth-challenge"


def test_token_server_down(tokens, pki, env, schema, tmp_path, good_cert):
    server, _ = tokens
    from tests import tokenserver

    dead = lab.closed_port()
    reg = lab.start_registry(
        tmp_path / "r",
        *good_cert,
        extra=tokenserver.token_auth_config(
            f"https://127.0.0.1:{dead}/token", "registry.test", server.signer.cert_file
        ),
    )
    try:
        r = run_auth(env, schema, reg, pki, "--repository", "team/app")
    finally:
        reg.stop()
    step = r.check("auth-challenge")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_REALM_ERROR")
    assert "refused" in step["summary"]


# ------------------------------------------------------------------- credential sources
def _config(home, data):
    d = home / ".docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(data))


def _helper_env(env, tmp_path, store, mode="normal"):
    path = tmp_path / "store.json"
    path.write_text(json.dumps(store))
    bin_dir = str(lab.ROOT / "tests" / "bin")
    return {
        **env,
        "PATH": f"{bin_dir}:{env['PATH']}",
        "TEST_HELPER_STORE": str(path),
        "TEST_HELPER_MODE": mode,
    }


def test_config_auths_base64(tokens, pki, env, home, schema):
    _, reg = tokens
    auth = base64.b64encode(f"alice:{USERS['alice']}".encode()).decode()
    _config(home, {"auths": {f"https://127.0.0.1:{reg.port}/v1/": {"auth": auth}}})
    r = run_auth(env, schema, reg, pki, "--repository", "team/app", "--require", "push")
    assert r.rc == 0, r.out
    ev = r.check("credentials")["evidence"]
    assert (ev["source"], ev["kind"], ev["username"]) == ("auths", "password", "alice")
    assert "removing the scheme" in r.check("credentials")["summary"]


def test_config_identity_token(tokens, pki, env, home, schema):
    server, reg = tokens
    rt = server.issue_refresh("alice")
    _config(
        home,
        {
            "auths": {
                f"127.0.0.1:{reg.port}": {
                    "auth": base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode(),
                    "identitytoken": rt,
                }
            }
        },
    )
    r = run_auth(env, schema, reg, pki, "--repository", "team/app")
    assert r.rc == 0, r.out
    assert r.check("credentials")["evidence"]["kind"] == "identity-token"
    assert "identity token" in r.check("refresh-token")["summary"]


def test_stale_identity_token_is_named(tokens, pki, env, home, schema):
    _, reg = tokens
    _config(home, {"auths": {f"127.0.0.1:{reg.port}": {"identitytoken": "rt-revoked-long-ago"}}})
    r = run_auth(env, schema, reg, pki, "--repository", "team/app")
    step = r.check("access-token")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_ACCESS_TOKEN_ERROR")
    assert step["evidence"]["stale_identity_token"] is True
    assert "permission-propagation" in step["faq"]
    assert any("docker logout" in s for s in step["remediation"])


def test_cred_helper(tokens, pki, env, home, schema, tmp_path):
    _, reg = tokens
    server_key = f"127.0.0.1:{reg.port}"
    _config(home, {"credHelpers": {server_key: "test"}})
    henv = _helper_env(env, tmp_path, {server_key: {"Username": "alice", "Secret": USERS["alice"]}})
    r = run_auth(henv, schema, reg, pki, "--repository", "team/app", "--require", "push")
    assert r.rc == 0, r.out
    ev = r.check("credentials")["evidence"]
    assert (ev["source"], ev["helper"]) == ("credHelpers", "test")


def test_creds_store_with_identity_token(tokens, pki, env, home, schema, tmp_path):
    server, reg = tokens
    server_key = f"127.0.0.1:{reg.port}"
    _config(home, {"credsStore": "test", "auths": {server_key: {}}})
    henv = _helper_env(
        env, tmp_path, {server_key: {"Username": "<token>", "Secret": server.issue_refresh("bob")}}
    )
    r = run_auth(henv, schema, reg, pki, "--repository", "team/app")
    assert r.rc == 0, r.out
    ev = r.check("credentials")["evidence"]
    assert (ev["source"], ev["kind"]) == ("credsStore", "identity-token")


@pytest.mark.parametrize(
    ("mode", "fragment"), [("fail", "failed"), ("garbage", "JSON"), ("missing", "not on PATH")]
)
def test_cred_helper_failures(tokens, pki, env, home, schema, tmp_path, mode, fragment):
    _, reg = tokens
    server_key = f"127.0.0.1:{reg.port}"
    _config(home, {"credHelpers": {server_key: "nosuch" if mode == "missing" else "test"}})
    henv = _helper_env(env, tmp_path, {}, mode=mode)
    r = run_auth(henv, schema, reg, pki, "--repository", "team/app")
    step = r.check("credentials")
    assert (step["status"], step["code"]) == ("fail", "CREDENTIAL_HELPER_ERROR"), step
    assert fragment in step["summary"]
    assert r.check("refresh-token")["summary"] == "blocked by credentials"


def test_cred_helper_that_hangs(tokens, pki, env, home, schema, tmp_path):
    _, reg = tokens
    _config(home, {"credHelpers": {f"127.0.0.1:{reg.port}": "test"}})
    r = run_auth(
        _helper_env(env, tmp_path, {}, mode="hang"),
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        timeout=60,
    )
    step = r.check("credentials")
    assert (step["status"], step["code"]) == ("fail", "CREDENTIAL_HELPER_ERROR")
    assert step["evidence"]["error"] == "helper-timeout"
    assert r.seconds < 20


def test_helper_without_a_login_means_anonymous(tokens, pki, env, home, schema, tmp_path):
    _, reg = tokens
    _config(home, {"credsStore": "test"})
    r = run_auth(_helper_env(env, tmp_path, {}), schema, reg, pki, "--repository", "team/app")
    ev = r.check("credentials")["evidence"]
    assert (ev["source"], ev["kind"]) == ("credsStore", "none")


def test_auths_key_differing_by_case(tokens, pki, env, home, schema, dns_server, host_root):
    _, reg = tokens
    auth = base64.b64encode(f"alice:{USERS['alice']}".encode()).decode()
    _config(home, {"auths": {f"Registry.Test:{reg.port}": {"auth": auth}}})
    r = lab.diagnose(
        "check-health",
        f"registry.test:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(host_root),
        "--repository",
        "team/app",
        "-f",
        "json",
        "-q",
        env=env,
    )
    validate_report(r.report, schema)
    step = r.check("credentials")
    assert (step["status"], step["code"]) == ("fail", "LOGIN_SERVER_ERROR")
    assert step["faq"] == ["lowercase-login-server"]
    assert "only by case" in step["summary"]


def test_broken_config_json_is_a_finding(tokens, pki, env, home, schema):
    _, reg = tokens
    d = home / ".docker"
    d.mkdir()
    (d / "config.json").write_text('{"auths": {,}')
    r = run_auth(env, schema, reg, pki, "--repository", "team/app")
    step = r.check("credentials")
    assert (step["status"], step["code"]) == ("fail", "CREDENTIALS_ERROR")
    assert "line 1 column" in step["summary"]


# ------------------------------------------------------------------------ ACR and Entra
def test_acr_entra_token_exchange(tokens, pki, env, schema, dns_server, host_root):
    server, reg = tokens
    server.aad_tokens["aad-PLANTED-token-0042"] = "alice"
    r = lab.diagnose(
        "check-health",
        f"testacr1.azurecr.io:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(host_root),
        "--repository",
        "team/app",
        "--require",
        "push",
        "-f",
        "json",
        "-q",
        env={**env, "REGISTRY_DIAGNOSE_AAD_TOKEN": "aad-PLANTED-token-0042"},
    )
    validate_report(r.report, schema)
    assert r.rc == 0, r.out
    assert "oauth2/exchange" in r.check("refresh-token")["summary"]
    assert r.check("login-server")["evidence"]["is_acr"] is True
    assert "aad-PLANTED" not in r.out + r.err


def test_acr_exchange_rejected(tokens, pki, env, schema, dns_server, host_root):
    _, reg = tokens
    r = lab.diagnose(
        "check-health",
        f"testacr1.azurecr.io:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(host_root),
        "-f",
        "json",
        "-q",
        env={**env, "REGISTRY_DIAGNOSE_AAD_TOKEN": "aad-not-known-token"},
    )
    step = r.check("refresh-token")
    assert (step["status"], step["code"]) == ("fail", "CONNECTIVITY_REFRESH_TOKEN_ERROR")
    assert step["evidence"]["status"] == 401


def test_expose_token_file(tokens, pki, env, schema, tmp_path):
    server, reg = tokens
    f = tmp_path / "token.json"
    f.write_text(
        json.dumps(
            {"accessToken": server.issue_refresh("alice"), "loginServer": f"127.0.0.1:{reg.port}"}
        )
    )
    r = run_auth(env, schema, reg, pki, "--repository", "team/app", "--identity-token-file", str(f))
    assert r.rc == 0, r.out
    assert r.check("credentials")["evidence"]["source"] == "identity-token"


# -------------------------------------------------------------------------------- basic auth
def test_basic_auth_registry(basic_registry, pki, env, schema):
    r = run_auth(
        env, schema, basic_registry, pki, "-u", "alice", "--password-stdin", stdin=USERS["alice"]
    )
    assert r.rc == 0, r.out
    assert r.check("auth-challenge")["evidence"]["scheme"] == "basic"
    for step in ("refresh-token", "access-token", "scope"):
        assert r.check(step)["status"] == "skip"
    assert r.check("authorized-request")["status"] == "pass"


def test_basic_auth_wrong_password(basic_registry, pki, env, schema):
    r = run_auth(
        env, schema, basic_registry, pki, "-u", "alice", "--password-stdin", stdin="nope-nope"
    )
    step = r.check("authorized-request")
    assert (step["status"], step["code"]) == ("fail", "REGISTRY_AUTH_ERROR")
    assert step["faq"] == ["admin-credentials"]


# ------------------------------------------------------------------------------ propagation
def test_wait_for_push_sees_the_grant_arrive(tokens, pki, env, schema):
    server, reg = tokens
    scheduled = time.monotonic()
    server.grant("bob", "team/app", "push", after_s=6)
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "--wait-for",
        "push",
        "--propagation-timeout",
        "60s",
        "-u",
        "bob",
        "--password-stdin",
        stdin=USERS["bob"],
        timeout=90,
    )
    assert r.rc == 0, r.out
    scope = r.check("scope")
    assert scope["status"] == "pass"
    # the grant really took 6 s from scheduling; the run began waiting a moment after that
    measured = scope["evidence"]["propagation_s"]
    assert abs(measured - 6) <= 2, measured
    assert time.monotonic() - scheduled < 6 + 10
    assert r.check("authorized-request")["status"] == "pass"


def test_wait_for_push_gives_up_at_the_timeout_with_the_faq_steps(tokens, pki, env, schema):
    _server, reg = tokens
    r = run_auth(
        env,
        schema,
        reg,
        pki,
        "--repository",
        "team/app",
        "--wait-for",
        "push",
        "--propagation-timeout",
        "5s",
        "-u",
        "bob",
        "--password-stdin",
        stdin=USERS["bob"],
        timeout=60,
    )
    scope = r.check("scope")
    assert (scope["status"], scope["code"]) == ("fail", "TOKEN_SCOPE_ERROR")
    assert "after waiting" in scope["summary"]
    assert scope["evidence"]["polls"] >= 3
    assert any("docker logout" in s for s in scope["remediation"])
    assert r.seconds < 5 + 15


def test_wait_for_needs_a_repository(tokens, env):
    _, reg = tokens
    r = lab.diagnose("check-health", f"127.0.0.1:{reg.port}", "--wait-for", "push", env=env)
    assert r.rc == 2 and "--repository" in r.err


# ------------------------------------------------ every credential source, for pull and push
SOURCES = [
    "argument",
    "environment",
    "auths",
    "identity-token-config",
    "credHelpers",
    "credsStore",
    "entra",
    "expose-token-file",
]


def _source_setup(source, server, reg, home, env, tmp_path):
    """Arguments, environment and files that make `source` the credential for alice."""
    key = f"127.0.0.1:{reg.port}"
    auth = base64.b64encode(f"alice:{USERS['alice']}".encode()).decode()
    args, stdin, extra = [], None, {}
    if source == "argument":
        args, stdin = ["-u", "alice", "--password-stdin"], USERS["alice"]
    elif source == "environment":
        args, extra = ["-u", "alice"], {"REGISTRY_DIAGNOSE_PASSWORD": USERS["alice"]}
    elif source == "auths":
        _config(home, {"auths": {key: {"auth": auth}}})
    elif source == "identity-token-config":
        _config(home, {"auths": {key: {"identitytoken": server.issue_refresh("alice")}}})
    elif source == "credHelpers":
        _config(home, {"credHelpers": {key: "test"}})
        extra = _helper_env(
            {"PATH": env["PATH"]}, tmp_path, {key: {"Username": "alice", "Secret": USERS["alice"]}}
        )
    elif source == "credsStore":
        _config(home, {"credsStore": "test"})
        extra = _helper_env(
            {"PATH": env["PATH"]},
            tmp_path,
            {key: {"Username": "<token>", "Secret": server.issue_refresh("alice")}},
        )
    elif source == "entra":
        server.aad_tokens["aad-matrix-token-1"] = "alice"
        extra = {"REGISTRY_DIAGNOSE_AAD_TOKEN": "aad-matrix-token-1"}
    elif source == "expose-token-file":
        f = tmp_path / "expose.json"
        f.write_text(json.dumps({"accessToken": server.issue_refresh("alice"), "loginServer": key}))
        args = ["--identity-token-file", str(f)]
    return args, stdin, extra


@pytest.mark.parametrize("need", ["pull", "push"])
@pytest.mark.parametrize("source", SOURCES)
def test_every_source_passes_for_pull_and_push(
    tokens, pki, env, home, schema, tmp_path, dns_server, host_root, source, need
):
    server, reg = tokens
    args, stdin, extra = _source_setup(source, server, reg, home, env, tmp_path)
    name = f"127.0.0.1:{reg.port}"
    if source == "entra":  # the Entra exchange is ACR's: use an ACR login server name
        name = f"testacr1.azurecr.io:{reg.port}"
        args = [*args, "--nameserver", dns_server.nameserver, "--host-root", str(host_root)]
    r = lab.diagnose(
        "check-health",
        name,
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "team/app",
        "--require",
        need,
        "-f",
        "json",
        "-q",
        *args,
        env={**env, **extra},
        stdin=stdin,
    )
    validate_report(r.report, schema)
    assert r.rc == 0, [(c["id"], c["status"], c["summary"]) for c in r.report["checks"]]
    got = {c: r.check(c)["status"] for c in FLOW}
    assert got["authorized-request"] == "pass" and got["scope"] == "pass", got
    assert set(r.check("scope")["evidence"]["required"]) == (
        {"pull", "push"} if need == "push" else {"pull"}
    )


def test_wait_for_permission_command(tokens, pki, env, schema):
    server, reg = tokens
    server.grant("bob", "team/app", "push", after_s=4)
    r = lab.diagnose(
        "wait-for-permission",
        f"127.0.0.1:{reg.port}",
        "--repository",
        "team/app",
        "--propagation-timeout",
        "30s",
        "-u",
        "bob",
        "--password-stdin",
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        str(lab.empty_root()),
        "-f",
        "json",
        env=env,
        stdin=USERS["bob"],
        timeout=60,
    )
    assert r.rc == 0, r.out + r.err
    validate_report(r.report, schema)
    scope = r.check("scope")
    assert scope["status"] == "pass" and 2 <= scope["evidence"]["propagation_s"] <= 6
