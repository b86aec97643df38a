"""The readers of podman, containerd and Kubernetes files never raise on what a host may hold:
each returns what it found and what was wrong, or its own one-line error."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from checks.kubernetes import image_matches
from diagnose.containers import (
    find_registry,
    load_containerd_config,
    load_hosts_toml,
    load_policy,
    load_registries_conf,
    lookaside_for,
    policy_scopes,
    pull_sources,
    requirement_for,
    v2_url,
)
from diagnose.dockerconfig import ConfigError, load_pull_secret
from diagnose.yamlish import YamlError, loads

WORDS = st.sampled_from(
    [
        "registry",
        "prefix",
        "location",
        "blocked",
        "insecure",
        "mirror",
        "aliases",
        "host",
        "server",
        "ca",
        "skip_verify",
        "capabilities",
        "true",
        "false",
        "=",
        "[",
        "]",
        "[[",
        "]]",
        '"',
        "'",
        ".",
        "*",
        ":",
        "/",
        "\n",
        " ",
        "x.io",
        "127.0.0.1:5000",
        "#",
        "{",
        "}",
        ",",
        "- ",
        "  ",
        "|",
        ">",
        "&a",
        "*a",
        "---",
        "\t",
    ]
)
TEXT = st.one_of(st.text(max_size=300), st.lists(WORDS, max_size=60).map("".join))
TOMLISH = st.builds(
    lambda prefix, loc, blocked, mirror: (
        f'[[registry]]\nprefix = "{prefix}"\nlocation = "{loc}"\nblocked = {blocked}\n'
        f'[[registry.mirror]]\nlocation = "{mirror}"\n'
    ),
    st.text(alphabet="abc.*:/0123456789-", max_size=20),
    st.text(alphabet="abc.:/0123456789-", max_size=20),
    st.sampled_from(["true", "false", "1", '"yes"']),
    st.text(alphabet="abc.:/0123456789", max_size=20),
)
REFS = st.text(alphabet="abcx.:/@0123456789-_", min_size=1, max_size=40)


@settings(max_examples=500, deadline=None)
@given(TEXT)
def test_yaml_reader(text):
    try:
        loads(text)
    except YamlError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, TOMLISH), REFS, st.booleans())
def test_registries_conf(tmp_path_factory, text, ref, by_digest):
    root = tmp_path_factory.mktemp("rc")
    (root / "etc/containers/registries.conf.d").mkdir(parents=True)
    (root / "etc/containers/registries.conf").write_text(text)
    (root / "etc/containers/registries.conf.d/10-x.conf").write_text(text[::-1])
    conf = load_registries_conf(root, root / "root")
    assert all("\n" not in e.split(":", 1)[0] for e in conf.errors)
    entry = find_registry(conf, ref)
    for source in pull_sources(entry, ref, by_digest):
        assert isinstance(source.reference, str)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        TEXT,
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.text(max_size=20), st.integers()),
            lambda kids: st.one_of(
                st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=12), kids, max_size=4)
            ),
            max_leaves=20,
        ).map(json.dumps),
    ),
    REFS,
)
def test_policy(tmp_path_factory, text, ref):
    root = tmp_path_factory.mktemp("pol")
    (root / "etc/containers/registries.d").mkdir(parents=True)
    (root / "etc/containers/policy.json").write_text(text)
    (root / "etc/containers/registries.d/x.yaml").write_text(text)
    policy = load_policy(root, root / "root")
    assert policy.error is None or "\n" not in policy.error
    list(policy_scopes(ref))
    requirement_for(policy, ref, ref + ":1")
    lookaside_for(root, root / "root", ref)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(TEXT, TOMLISH),
    # a folder name (not "." or "..": those are other folders, not a host's)
    st.text(alphabet="abc.0123456789", min_size=1, max_size=15).filter(lambda h: h.strip(".")),
)
def test_containerd_files(tmp_path_factory, text, host):
    root = tmp_path_factory.mktemp("ctrd")
    d = root / "etc/containerd/certs.d" / host
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(text)
    (root / "etc/containerd/config.toml").write_text(text)
    cfg = load_containerd_config(root)
    assert cfg.error is None or "\n" not in cfg.error
    hosts = load_hosts_toml(root / "etc/containerd/certs.d", host, None, root)
    for entry in hosts.hosts:
        v2_url(entry)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_pull_secret(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("ps") / "secret.yaml"
    path.write_text(text)
    try:
        load_pull_secret(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40), REFS)
def test_match_images(pattern, image):
    assert type(image_matches(pattern, image)) is bool
    # an image given as its own pattern matches itself, unless its port does not parse
    if "://" not in image:
        try:
            _ = urlsplit("https://" + image).port
            port_parses = True
        except ValueError:
            port_parses = False
        assert image_matches(image, image) is port_parses, image


def test_match_images_examples():
    assert image_matches("*.azurecr.io", "myreg.azurecr.io/team/app:1")
    assert not image_matches("*.azurecr.io", "azurecr.io/team/app:1")  # label count differs
    assert image_matches("reg.io:5000/team", "reg.io:5000/team/app:1")
    assert not image_matches("reg.io:5000/team", "reg.io:5000/other/app:1")
    assert not image_matches("reg.io", "reg.io:5000/team/app:1")  # the port must be the same
