"""Credentials and the token flow against the real registry in token mode and a token server."""

from __future__ import annotations

import base64
import json

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
    server, reg = tokens
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
    assert ("push" in granted) == (need == "push") or need == "pull"
    assert "1 tag(s)" in r.check("authorized-request")["summary"]


def test_password_from_environment(tokens, pki, env, schema):
    server, reg = tokens
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
    server, reg = tokens
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
    server, reg = tokens
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
    server, reg = tokens
    r = run_auth(env, schema, reg, pki, "--repository", "team/app")
    assert r.check("credentials")["evidence"]["source"] == "anonymous"
    assert r.check("refresh-token")["status"] == "skip"
    assert r.check("access-token")["status"] == "pass"
    scope = r.check("scope")
    assert (scope["status"], scope["code"]) == ("fail", "TOKEN_SCOPE_ERROR")
    assert scope["evidence"]["granted"] == []
