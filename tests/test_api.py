"""The /v2/ endpoint and the clock, against servers that answer the ways registries go wrong."""

from __future__ import annotations

import email.utils
import time

from tests import lab


def _serve(pki, routes):
    cert, key = pki.leaf("good", *lab.GOOD_NAMES)
    return lab.http_server(routes, lab.server_context(cert, key))


def _run(run_json, pki, port, *more):
    return run_json(f"127.0.0.1:{port}", "--ca-bundle", str(pki.ca_file), *more)


def test_bearer_challenge_is_healthy(pki, run_json):
    chal = 'Bearer realm="https://auth.example.test/token",service="registry.example.test"'
    with _serve(
        pki,
        {
            "/v2/": (
                401,
                {"WWW-Authenticate": chal, "Docker-Distribution-API-Version": "registry/2.0"},
                b'{"errors":[{"code":"UNAUTHORIZED"}]}',
            )
        },
    ) as srv:
        r = _run(run_json, pki, srv.port, "--checks", "api,clock")
    api = r.check("api")
    assert api["status"] == "pass", api
    assert api["evidence"]["challenge"] == {
        "scheme": "bearer",
        "realm": "https://auth.example.test/token",
        "service": "registry.example.test",
    }
    assert r.rc == 0


def test_forbidden(pki, run_json):
    with _serve(pki, {"/v2/": (403, {}, b"client with IP is not allowed access")}) as srv:
        r = _run(run_json, pki, srv.port)
    api = r.check("api")
    assert (api["status"], api["code"]) == ("fail", "CONNECTIVITY_FORBIDDEN_ERROR")
    assert api["faq"] == ["firewall-propagation", "network-connectivity"]
    assert r.check("clock")["summary"] == "blocked by api"
    assert r.rc == 1


def test_not_found(pki, run_json):
    with _serve(pki, {}) as srv:
        r = _run(run_json, pki, srv.port)
    api = r.check("api")
    assert (api["status"], api["code"]) == ("fail", "CONNECTIVITY_CHALLENGE_ERROR")
    assert "404" in api["summary"] and api["faq"] == ["registry-api-v2"]


def test_malformed_challenges(pki, run_json):
    for header in ('Bearer service="x"', "Negotiate abc", 'Bearer realm="ftp://x"', ""):
        headers = {"WWW-Authenticate": header} if header else {}
        with _serve(pki, {"/v2/": (401, headers, b"")}) as srv:
            r = _run(run_json, pki, srv.port)
        api = r.check("api")
        assert (api["status"], api["code"]) == ("fail", "CONNECTIVITY_CHALLENGE_ERROR"), header
        assert "challenge" in api["summary"]


def test_redirect_loop(pki, run_json):
    with _serve(
        pki, {"/v2/": (302, {"Location": "/v2/x"}, b""), "/v2/x": (302, {"Location": "/v2/"}, b"")}
    ) as srv:
        r = _run(run_json, pki, srv.port)
    api = r.check("api")
    assert (api["status"], api["code"]) == ("fail", "CONNECTIVITY_CHALLENGE_ERROR")
    assert "loop" in api["summary"]
    assert len(api["evidence"]["hops"]) == 2


def test_server_error_is_retried_then_reported(pki, run_json):
    with _serve(pki, {"/v2/": (503, {}, b"busy")}) as srv:
        r = _run(run_json, pki, srv.port, "--tries", "3")
        hits = len(srv.requests)
    api = r.check("api")
    assert (api["status"], api["code"]) == ("fail", "CONNECTIVITY_CHALLENGE_ERROR")
    assert api["evidence"]["hops"][0]["attempts"] == 3
    assert hits == 3


def test_clock_skew_warns(pki, run_json):
    skewed = email.utils.formatdate(time.time() - 900, usegmt=True)
    with _serve(pki, {"/v2/": (200, {"Date": skewed}, b"{}")}) as srv:
        r = _run(run_json, pki, srv.port)
    clock = r.check("clock")
    assert (clock["status"], clock["code"]) == ("warn", "CLOCK_SKEW")
    assert clock["faq"] == ["clock-skew"]
    assert 14 * 60 < clock["evidence"]["skew_s"] < 16 * 60
    assert r.rc == 0


def test_unparseable_date_is_a_skip_not_a_crash(pki, run_json):
    with _serve(pki, {"/v2/": (200, {"Date": "yesterday-ish"}, b"{}")}) as srv:
        r = _run(run_json, pki, srv.port)
    assert r.check("clock")["status"] == "skip"
