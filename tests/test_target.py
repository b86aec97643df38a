"""Registry names: normalising what users type, and refusing what cannot be a registry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnose.target import TargetError, parse_registry, valid_repository
from tests import lab


@pytest.mark.parametrize(
    ("text", "login_server", "is_acr"),
    [
        ("myregistry.azurecr.io", "myregistry.azurecr.io", True),
        ("myregistry", "myregistry.azurecr.io", True),
        ("https://myregistry.azurecr.io/", "myregistry.azurecr.io", True),
        ("myregistry.azurecr.io/team/app:1.0", "myregistry.azurecr.io", True),
        ("contoso.azurecr.cn", "contoso.azurecr.cn", True),
        ("localhost:5000", "localhost:5000", False),
        ("registry:5000", "registry:5000", False),
        ("[::1]:5000", "[::1]:5000", False),
        ("127.0.0.1:5000", "127.0.0.1:5000", False),
        ("ghcr.io", "ghcr.io", False),
        ("docker.io", "registry-1.docker.io", False),
        ("https://index.docker.io/v1/", "registry-1.docker.io", False),
        ("  quay.io ", "quay.io", False),
    ],
)
def test_normalises(text, login_server, is_acr):
    reg = parse_registry(text)
    assert reg.login_server == login_server
    assert reg.is_acr is is_acr


def test_image_reference_gives_repository():
    reg = parse_registry("myregistry.azurecr.io/team/app:1.0")
    assert reg.repository == "team/app"
    assert any("image reference" in n for n in reg.notes)


def test_upper_case_is_kept_for_the_check_not_refused():
    reg = parse_registry("MyRegistry.azurecr.io")
    assert reg.host == "myregistry.azurecr.io"
    assert reg.host_given == "MyRegistry.azurecr.io"


def test_userinfo_is_dropped_and_never_kept():
    reg = parse_registry("https://bob:hunter2-SECRET@myregistry.azurecr.io")
    assert "hunter2" not in repr(reg)


@pytest.mark.parametrize(
    "text",
    [
        "HTTPS://My Registry/..",
        "a" * 300,
        "régistry.example.com",
        "",
        "   ",
        "ftp://registry.example.com",
        "registry.example.com:0",
        "registry.example.com:99999",
        "registry.example.com:http",
        "::1:5000",
        "[::1",
        "[registry]:5000",
        "reg..example.com",
        "-reg.example.com",
        "reg_istry.example.com",
        "registry.example.com/UPPER/case",
        "registry.example.com/../etc",
        "host\x00name",
        ("x" * 64) + ".example.com",
    ],
)
def test_refuses_bad_names(text):
    with pytest.raises(TargetError):
        parse_registry(text)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=600))
def test_fuzz_parse_never_raises_anything_else(text):
    try:
        reg = parse_registry(text)
    except TargetError as exc:
        assert "\n" not in str(exc)
        return
    assert reg.host == reg.host.lower()
    assert 0 < reg.effective_port < 65536


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9.:/\[\]@_-]{1,80}", fullmatch=True))
def test_fuzz_parse_name_like(text):
    try:
        parse_registry(text)
    except TargetError:
        pass


def test_valid_repository():
    assert valid_repository("team/app")
    assert not valid_repository("Team/App")
    assert not valid_repository("app:1.0")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("HTTPS://My Registry/..", "no spaces"),
        ("a" * 300, "characters long"),
        ("régistry.example.com", "non-ASCII"),
    ],
)
def test_cli_exits_2_with_one_line(env, name, fragment):
    r = lab.diagnose("check-health", name, env=env, timeout=30)
    assert r.rc == 2
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("diagnose: error:") and fragment in lines[0]
    assert "Traceback" not in r.err


def test_cli_never_echoes_credentials_in_errors(env):
    r = lab.diagnose("check-health", "https://bob:hunter2-SECRET@bad host/", env=env, timeout=30)
    assert r.rc == 2
    assert "hunter2" not in r.err + r.out


@pytest.mark.parametrize(
    "args",
    [
        ["--nameserver", "not-an-ip"],
        ["--nameserver", "127.0.0.1:70000"],
        ["--ca-bundle", "/nonexistent/ca.pem"],
        ["--host-root", "/nonexistent/root"],
        ["--format", "yaml"],
        ["--checks", "no-such-check"],
        ["--repository", "Bad Repo"],
        ["--timeout", "0"],
    ],
)
def test_bad_options_exit_2(env, args):
    r = lab.diagnose("check-health", "localhost:5000", *args, env=env, timeout=30)
    assert r.rc == 2, r.err
    assert "Traceback" not in r.err


def test_garbage_ca_bundle_exits_2(env, tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    r = lab.diagnose("check-health", "localhost:5000", "--ca-bundle", str(bad), env=env)
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1, r.err
