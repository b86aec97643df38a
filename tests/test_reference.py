"""Pure parsers of the image path: references as docker reads them, registry error bodies,
rate-limit headers, platforms and proxy settings. Unit cases, then hypothesis fuzzing: bad input
gives a finding or a one-line error, never an exception of another kind."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from diagnose import faq
from diagnose.oci import (
    ERROR_CODES,
    Platform,
    PlatformError,
    choose,
    parse_errors,
    parse_platform,
    rate_limit,
    retry_after,
)
from diagnose.proxy import classify_proxy_error, proxy_for, requests_proxies
from diagnose.reference import ReferenceError, is_image_reference, parse_reference
from diagnose.target import registry_for_image

H = "a" * 64


@pytest.mark.parametrize(
    ("text", "normalized", "login_server", "repository"),
    [
        ("nginx:1.25", "docker.io/library/nginx:1.25", "registry-1.docker.io", "library/nginx"),
        ("team/app", "docker.io/team/app:latest", "registry-1.docker.io", "team/app"),
        (
            "docker.io/ubuntu",
            "docker.io/library/ubuntu:latest",
            "registry-1.docker.io",
            "library/ubuntu",
        ),
        (
            "index.docker.io/library/ubuntu:22.04",
            "docker.io/library/ubuntu:22.04",
            "registry-1.docker.io",
            "library/ubuntu",
        ),
        (
            "myreg.azurecr.io/team/app:1.4",
            "myreg.azurecr.io/team/app:1.4",
            "myreg.azurecr.io",
            "team/app",
        ),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest", "localhost:5000", "a/b"),
        ("localhost/app", "localhost/app:latest", "localhost", "app"),
        (f"ghcr.io/org/svc@sha256:{H}", f"ghcr.io/org/svc@sha256:{H}", "ghcr.io", "org/svc"),
        (f"ghcr.io/org/svc:1@sha256:{H}", f"ghcr.io/org/svc:1@sha256:{H}", "ghcr.io", "org/svc"),
        ("[::1]:5000/x:y", "[::1]:5000/x:y", "[::1]:5000", "x"),
        ("quay.io/a__b/c-d.e:v1.0_x", "quay.io/a__b/c-d.e:v1.0_x", "quay.io", "a__b/c-d.e"),
    ],
)
def test_references_normalise_as_docker_does(text, normalized, login_server, repository):
    ref = parse_reference(text)
    assert ref.normalized == normalized and not ref.problems
    reg = registry_for_image(ref)
    assert (reg.login_server, reg.repository) == (login_server, repository)
    assert reg.image is ref


def test_acr_reference_is_acr():
    reg = registry_for_image(parse_reference("myreg.azurecr.cn/team/app:1"))
    assert reg.is_acr and reg.cloud == "AzureChinaCloud"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("myreg.azurecr.io/Team/App:1", "must be lowercase"),
        ("localhost:5000/UPPER", "must be lowercase"),
        ("x.io/app@sha256:" + "a" * 63 + "b" * 2, "digest length"),
        ("x.io/app@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("x.io/" + "a/" * 130 + "b", "255 characters"),
    ],
)
def test_what_the_clients_refuse_is_a_problem_not_a_crash(text, problem):
    ref = parse_reference(text)
    assert any(problem in p for p in ref.problems), ref.problems


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "a b",
        "x.io/app:",
        "x.io//app",
        "x.io/app:tag:tag",
        "app@",
        "-x/y",
        "x.io/é",
        H,
        "x.io/a" + "\x00",
    ],
)
def test_not_a_reference(text):
    with pytest.raises(ReferenceError):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "image"),
    [
        ("myregistry", False),
        ("localhost:5000", False),
        ("myreg.azurecr.io", False),
        ("https://myreg.azurecr.io/v2/", False),
        ("user:pw@host.example", False),
        ("nginx:latest", True),
        ("myreg.azurecr.io/team/app", True),
        (f"nginx@sha256:{H}", True),
    ],
)
def test_registry_or_image(text, image):
    assert is_image_reference(text) is image


def test_every_spec_error_code_has_a_known_faq_entry():
    spec = {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }
    assert spec <= set(ERROR_CODES)
    kb = faq.load()
    for code in ERROR_CODES.values():
        assert code.faq and set(code.faq) <= set(kb), code
        assert code.remedy and code.meaning


def test_error_bodies():
    body = b'{"errors":[{"code":"DENIED","message":"client with IP \'203.0.113.9\' is not allowed access"}]}'
    (e,) = parse_errors(body)
    assert e.code == "DENIED" and "203.0.113.9" in e.message and e.known is not None
    assert parse_errors(b"<html>502</html>") == []
    assert parse_errors('{"errors": "nope"}') == []
    assert parse_errors(b'{"errors":[1, {"code": null}]}')[0].code == "UNKNOWN"


def test_rate_limit_headers():
    rl = rate_limit({"RateLimit-Limit": "100;w=21600", "ratelimit-remaining": "7;w=21600"})
    assert rl is not None and (rl.limit, rl.remaining, rl.window_s) == (100, 7, 21600)
    assert rate_limit({"Content-Type": "x"}) is None
    assert rate_limit({"Retry-After": "30"}).retry_after_s == 30  # type: ignore[union-attr]
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after("soon") is None


def test_platforms():
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert parse_platform("linux/aarch64/v8") == Platform("linux", "arm64")
    with pytest.raises(PlatformError):
        parse_platform("linux")
    entries = [
        {"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "b", "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "amd64"}},
    ]
    assert choose(entries, Platform("linux", "amd64"))["digest"] == "c"  # type: ignore[index]
    assert choose(entries, Platform("linux", "arm", "v7"))["digest"] == "a"  # type: ignore[index]
    assert choose(entries, Platform("linux", "arm", "v5")) is None
    assert choose(entries, Platform("windows", "amd64")) is None


def test_proxy_settings_follow_go():
    env = {"HTTPS_PROXY": "http://u:PLANTED-pw@proxy.example:3128", "NO_PROXY": ".corp,10.0.0.0/8"}
    p = proxy_for("https://myreg.azurecr.io/v2/", env)
    assert p is not None and p.hostport == "proxy.example:3128" and p.has_credentials
    assert "PLANTED" not in repr(p.to_dict()) and "PLANTED" not in p.url
    assert proxy_for("https://reg.corp/v2/", env) is None
    assert proxy_for("https://10.1.2.3/v2/", env) is None
    assert proxy_for("https://127.0.0.1:5000/v2/", env) is None  # Go never proxies loopback
    assert proxy_for("https://localhost:5000/v2/", env) is None
    for literal in ("127.3.2.1", "[::1]:5000", "[::ffff:127.0.0.1]:5000"):
        assert proxy_for(f"https://{literal}/v2/", env) is None, literal
    # Go decides on the name as written: a name that resolves to loopback is proxied
    for name in ("registry.test:5000", "app.localhost", "localhost.corp.example"):
        assert proxy_for(f"https://{name}/v2/", env) is not None, name
    assert proxy_for("https://x.io/", {"ALL_PROXY": "http://p:1"}) is None  # Go ignores it
    assert requests_proxies("https://x.io/", {"https_proxy": "p:8080"}) == {
        "https": "http://p:8080"
    }
    assert (
        classify_proxy_error("Tunnel connection failed: 407 Proxy Authentication Required")[0]
        == "auth"
    )
    assert classify_proxy_error("Tunnel connection failed: 403 Forbidden")[0] == "denied"
    assert classify_proxy_error("[Errno 111] Connection refused")[0] == "refused"


# ------------------------------------------------------------------------------ fuzzing
REF_ALPHABET = string.ascii_letters + string.digits + "._-/:@[]" + " \t\x00é"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=REF_ALPHABET, max_size=120))
def test_fuzz_reference(text):
    try:
        ref = parse_reference(text)
    except ReferenceError as exc:
        assert "\n" not in str(exc)
        return
    assert ref.domain and ref.path
    try:
        registry_for_image(ref)
    except ValueError as exc:  # TargetError: a domain docker accepts but no host can be
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_fuzz_error_bodies(body):
    for e in parse_errors(body):
        assert len(e.message) <= 300 and e.code


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["RateLimit-Limit", "RateLimit-Remaining", "Retry-After", "X-RateLimit-Limit"]
        ),
        st.text(max_size=40),
    )
)
@example({"Retry-After": "²"})  # str.isdigit() takes it, int() does not
@example({"RateLimit-Limit": "100;w=²"})
def test_fuzz_rate_limit(headers):
    rate_limit(headers)


def test_digits_that_are_not_ascii_are_refused_not_crashed_on():
    from diagnose.resolve import parse_nameserver
    from diagnose.target import TargetError, parse_registry

    with pytest.raises(ValueError):
        parse_nameserver("192.0.2.1:²")
    with pytest.raises(TargetError):
        parse_registry("reg.example:²")
    assert rate_limit({"Retry-After": "²"}) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_platform_and_proxy(text):
    try:
        parse_platform(text)
    except PlatformError:
        pass
    proxy_for("https://x.example/v2/", {"HTTPS_PROXY": text, "NO_PROXY": text})
    classify_proxy_error(text)
