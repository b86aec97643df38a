"""Parsers of untrusted input never raise anything but their own one-line error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from diagnose.challenge import ChallengeError, parse_challenge
from diagnose.dockerconfig import ConfigError, load_config, registry_keys
from diagnose.resolve import parse_nameserver, read_hosts

HEADERS = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda s, body: f"{s} {body}",
        st.sampled_from(["Bearer", "Basic", "bearer", "X"]),
        st.text(max_size=200),
    ),
    st.builds(
        lambda k, v: f'Bearer {k}="{v}",service="s"',
        st.sampled_from(["realm", "REALM", "scope", ""]),
        st.text(max_size=80),
    ),
)


@settings(max_examples=600, deadline=None)
@given(HEADERS)
def test_challenge_parser(header):
    try:
        ch = parse_challenge(header)
    except ChallengeError as exc:
        assert "\n" not in str(exc)
        return
    assert ch.scheme in ("bearer", "basic")
    if ch.scheme == "bearer":
        assert ch.realm and ch.realm.split(":", 1)[0].lower() in ("http", "https")


def test_challenge_examples():
    ch = parse_challenge('Bearer realm="https://a.test/token",service="a.test",scope="x:y:pull"')
    assert (ch.realm, ch.service, ch.params["scope"]) == (
        "https://a.test/token",
        "a.test",
        "x:y:pull",
    )
    assert parse_challenge('Basic realm="Registry Realm"').scheme == "basic"
    for bad in (
        None,
        "",
        "Bearer",
        "Bearer service=x",
        'Bearer realm="/relative"',
        "Digest a=b",
        'Bearer realm="https://x\x00"',
    ):
        try:
            parse_challenge(bad)
        except ChallengeError:
            continue
        raise AssertionError(f"accepted {bad!r}")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_nameserver_parser(text):
    try:
        _host, port = parse_nameserver(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert 0 < port < 65536


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda c: (
                st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_docker_config_loader(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_bytes(data)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert cfg is None or isinstance(cfg, dict)
    registry_keys(cfg or {})


def test_docker_config_deeply_nested(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[" * 100000 + "]" * 100000)
    try:
        load_config(path)
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_hosts_reader(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("hosts") / "hosts"
    path.write_bytes(data)
    for name, addrs in read_hosts(path).items():
        assert name and addrs


# ------------------------------------------------------------------------- host files
from diagnose.dockerhost import (  # noqa: E402
    flag_value,
    no_proxy_covers,
    os_release,
    parse_daemon_json,
    parse_sysconfig,
    registry_listed,
    systemd_proxy_env,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=500),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda c: (
                st.lists(c, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "debug",
                            "insecure-registries",
                            "proxies",
                            "registry-mirrors",
                            "allow-nondistributable-artifacts",
                            "hosts",
                            "x",
                        ]
                    ),
                    c,
                    max_size=5,
                )
            ),
            max_leaves=15,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_daemon_json_parser(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("dj") / "daemon.json"
    path.write_bytes(data)
    out = parse_daemon_json(path)
    assert out.exists
    assert out.error is None or "\n" not in out.error


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_sysconfig_os_release_and_dropins(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("root")
    (root / "etc" / "sysconfig").mkdir(parents=True)
    (root / "etc" / "sysconfig" / "docker").write_text(text)
    (root / "etc" / "os-release").write_text(text)
    d = root / "etc" / "systemd" / "system" / "docker.service.d"
    d.mkdir(parents=True)
    (d / "x.conf").write_text(text)
    sc = parse_sysconfig(root / "etc" / "sysconfig" / "docker")
    flag_value(sc.options, "--signature-verification")
    os_release(root)
    systemd_proxy_env(root)


@settings(max_examples=400, deadline=None)
@given(
    st.text(max_size=80),
    st.text(max_size=40),
    st.integers(min_value=1, max_value=65535),
    st.lists(st.text(max_size=30), max_size=5),
)
def test_proxy_and_list_matching(no_proxy, host, port, entries):
    no_proxy_covers(no_proxy, host, port)
    registry_listed(entries, f"{host}:{port}", ["127.0.0.1", "::1", host])


def test_no_proxy_rules():
    assert no_proxy_covers("*", "a.example", 443)
    assert no_proxy_covers(".example.com", "reg.example.com", 443)
    assert no_proxy_covers("example.com", "reg.example.com", 443)
    assert no_proxy_covers("example.com", "example.com", 443)
    # as Go reads them: a leading dot (or "*.") covers the names under it, not the name itself
    assert not no_proxy_covers(".example.com", "example.com", 443)
    assert not no_proxy_covers("*.example.com", "example.com", 443)
    assert no_proxy_covers("*.example.com", "reg.example.com", 443)
    assert not no_proxy_covers("127.0.0.0/8", "registry.test", 443)  # CIDRs: literal IPs only
    assert no_proxy_covers("10.0.0.0/8", "10.1.2.3", 443)
    assert no_proxy_covers("reg.example.com:5000", "reg.example.com", 5000)
    assert not no_proxy_covers("reg.example.com:5000", "reg.example.com", 443)
    assert not no_proxy_covers("other.com", "reg.example.com", 443)


# ------------------------------------------------------------------ the whole command line
import io  # noqa: E402

from diagnose.cli import run  # noqa: E402
from diagnose.environment import Environment  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(
    st.text(max_size=120),
    st.sampled_from(
        [
            "--nameserver",
            "--repository",
            "--timeout",
            "--propagation-timeout",
            "--docker-host",
            "--image",
            "--format",
            "--checks",
        ]
    ),
    st.text(max_size=40),
)
def test_cli_never_raises_on_odd_input(name, option, value):
    if not name.strip() or name.startswith("-") or value.startswith("-"):
        return
    from tests.lab import empty_root

    out, err = io.StringIO(), io.StringIO()
    code = run(
        ["check-health", name, option, value, "--checks", "login-server", "--host-root",
         str(empty_root())],
        Environment(stdin=io.BytesIO(), stdout=out, stderr=err, environ={"PATH": "/usr/bin"}),
    )  # fmt: skip
    assert code in (0, 1, 2), (code, out.getvalue(), err.getvalue())
    assert "internal error" not in err.getvalue(), err.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if code == 2:
        assert err.getvalue().strip(), "a usage error says why"
