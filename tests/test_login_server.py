"""The login-server check, and finding registries in the docker config."""

from __future__ import annotations

import json

import pytest

from tests import lab


def _only(run_json, name):
    return run_json(name, "--checks", "login-server").check("login-server")


def test_upper_case_fails_with_the_name_to_use(run_json):
    c = _only(run_json, "MyRegistry.azurecr.io")
    assert (c["status"], c["code"]) == ("fail", "LOGIN_SERVER_ERROR")
    assert c["faq"] == ["lowercase-login-server"]
    assert "'myregistry.azurecr.io'" in c["summary"]
    assert any("docker login myregistry.azurecr.io" in s for s in c["remediation"])


def test_upper_case_short_name(run_json):
    c = _only(run_json, "MyRegistry")
    assert c["status"] == "fail" and "myregistry.azurecr.io" in c["summary"]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("abc.azurecr.io", "5-50"),
        ("my-reg.azurecr.io", "letters and digits"),
        ("myregistry.eastus.data.azurecr.io", "data endpoint"),
        ("a.b.azurecr.io", "not an ACR login server"),
    ],
)
def test_acr_naming_rules(run_json, name, fragment):
    c = _only(run_json, name)
    assert (c["status"], c["code"]) == ("fail", "LOGIN_SERVER_ERROR"), c
    assert fragment in c["summary"]


@pytest.mark.parametrize(
    "name",
    [
        "myregistry.azurecr.io",
        "myregistry",
        "contoso.azurecr.us",
        "myregistry-abc123def.azurecr.io",
        "ghcr.io",
        "https://myregistry.azurecr.io/v2/",
    ],
)
def test_valid_names_pass(run_json, name):
    c = _only(run_json, name)
    assert c["status"] == "pass", c


def test_normalising_is_said(run_json):
    c = _only(run_json, "https://myregistry.azurecr.io/team/app:1")
    assert "normalised" in c["summary"] and "repository team/app" in c["summary"]


def test_default_targets_come_from_docker_config(registry, pki, env, home, schema):
    cfg = home / ".docker"
    cfg.mkdir()
    (cfg / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    f"127.0.0.1:{registry.port}": {},
                    f"https://127.0.0.1:{registry.port}/": {},
                },
            }
        )
    )
    r = lab.diagnose("check-health", "--ca-bundle", str(pki.ca_file), "-f", "json", env=env)
    assert r.rc == 0, r.out + r.err
    report = r.report
    assert report["target"]["source"] == "docker-config"
    assert [x["login_server"] for x in report["target"]["registries"]] == [
        f"127.0.0.1:{registry.port}"
    ]


def test_docker_config_env_var_is_honoured(registry, pki, env, tmp_path):
    cfg = tmp_path / "elsewhere"
    cfg.mkdir()
    (cfg / "config.json").write_text(
        json.dumps({"credHelpers": {f"127.0.0.1:{registry.port}": "x"}})
    )
    r = lab.diagnose(
        "check-health",
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        env={**env, "DOCKER_CONFIG": str(cfg)},
    )
    assert r.report["target"]["registries"][0]["port"] == registry.port


def test_no_registry_anywhere_checks_local_only_and_says_how(env):
    r = lab.diagnose("check-health", env=env)
    assert r.rc == 0, r.err
    assert "diagnose check-health myregistry.azurecr.io" in r.out


def test_malformed_docker_config_is_one_line_exit_2(env, home):
    cfg = home / ".docker"
    cfg.mkdir()
    (cfg / "config.json").write_text('{"auths": {"x": {"auth": "c2VjcmV0LXB3"}},,}')
    r = lab.diagnose("check-health", env=env)
    assert r.rc == 2
    assert len(r.err.strip().splitlines()) == 1 and "line 1 column" in r.err
    assert "c2VjcmV0LXB3" not in r.err


def test_bad_keys_in_docker_config_become_notes(env, home):
    cfg = home / ".docker"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"auths": {"bad host name": {}}}))
    r = lab.diagnose("check-health", "-f", "json", env=env)
    assert r.rc == 0
    assert any("skipped" in n for n in r.report["notes"])
