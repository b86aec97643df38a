"""Kubernetes nodes: an image pull secret used as the kubelet would use it (skopeo with the
same credentials as ground truth against the real htpasswd registry), and the kubelet's
credential provider configuration read from a fixture root."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import lab
from tests.conftest import USERS

SKOPEO = shutil.which("skopeo")


def secret_yaml(server: str, user: str, password: str) -> str:
    cfg = {"auths": {server: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    data = base64.b64encode(json.dumps(cfg).encode()).decode()
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: default\n"
        f"type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {data}\n"
    )


@pytest.fixture(scope="module")
def basic_image(basic_registry, pki):
    base = f"https://127.0.0.1:{basic_registry.port}"
    lab.push_image(base, "team/app", "1.0", ca_file=pki.ca_file, auth=("alice", USERS["alice"]))
    return f"127.0.0.1:{basic_registry.port}/team/app:1.0"


def skopeo_inspect(ref: str, authfile: Path, pki, tmp: Path) -> subprocess.CompletedProcess[str]:
    if SKOPEO is None:
        pytest.skip("skopeo is not installed")
    certs = tmp / "certs"
    certs.mkdir(exist_ok=True)
    shutil.copy(pki.ca_file, certs / "ca.crt")
    return subprocess.run(
        [
            SKOPEO,
            "inspect",
            "--authfile",
            str(authfile),
            "--cert-dir",
            str(certs),
            f"docker://{ref}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def with_pull_secret(ref: str, secret: Path, pki, env) -> lab.Run:
    return lab.diagnose(
        "check-health",
        ref,
        "--ca-bundle",
        str(pki.ca_file),
        "--pull-secret",
        str(secret),
        "-f",
        "json",
        env=env,
    )


@pytest.mark.parametrize("good", [True, False])
def test_pull_secret_is_the_credential_and_skopeo_agrees(basic_image, pki, env, tmp_path, good):
    ref = basic_image
    server = ref.split("/", 1)[0]
    password = USERS["alice"] if good else "PLANTED-wrong-pw-4471"
    secret = tmp_path / "regcred.yaml"
    secret.write_text(secret_yaml(server, "alice", password))
    r = with_pull_secret(ref, secret, pki, env)
    cred = r.check("credentials")
    assert cred["evidence"]["source"] == "pull-secret", cred
    # the same credential, handed to skopeo as an auth file
    inner = tmp_path / "auth.json"
    inner.write_text(
        json.dumps(
            {"auths": {server: {"auth": base64.b64encode(f"alice:{password}".encode()).decode()}}}
        )
    )
    theirs = skopeo_inspect(ref, inner, pki, tmp_path)
    if good:
        assert r.rc == 0, r.out
        assert r.check("manifest")["status"] == "pass"
        lab.client_ok(theirs)
    else:
        assert r.rc == 1
        failed = [c for c in r.report["checks"] if c["status"] == "fail"]
        assert failed and failed[0]["id"] in ("authorized-request", "refresh-token"), failed
        assert failed[0]["code"] == "REGISTRY_AUTH_ERROR", failed[0]
        lab.client_failed(theirs, "unauthorized", "authentication required")
    assert password not in r.out + r.err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("apiVersion: v1\nkind: Secret\ntype: Opaque\ndata:\n  x: eA==\n", "Opaque"),
        (
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: '%%%'\n",
            "base64",
        ),
        ("kind: ConfigMap\n", "ConfigMap"),
        ("a: [unclosed\n", "line 1"),
        ("\t- tab\n", "tab"),
    ],
)
def test_bad_pull_secret_is_a_finding_not_a_crash(basic_image, pki, env, tmp_path, text, needle):
    secret = tmp_path / "s.yaml"
    secret.write_text(text)
    r = with_pull_secret(basic_image, secret, pki, env)
    assert r.rc == 1 and "Traceback" not in r.err, r.err
    cred = r.check("credentials")
    assert cred["status"] == "fail" and needle in cred["summary"], cred


def test_missing_pull_secret_file_is_exit_2(env, tmp_path):
    r = lab.diagnose(
        "check-health", "registry.test/a:1", "--pull-secret", str(tmp_path / "nope"), env=env
    )
    assert r.rc == 2 and r.err.count("\n") == 1 and "--pull-secret" in r.err, r.err


PROVIDER = """apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: acr-credential-provider
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    defaultCacheDuration: 10m
    matchImages:
      - "*.azurecr.io"
      - "*.azurecr.cn"
    args:
      - /etc/kubernetes/azure.json
"""


def provider_root(tmp: Path, config: str, *, binary: bool = True, azure: bool = True) -> Path:
    root = tmp / "node"
    (root / "etc/kubernetes").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "var/lib/kubelet/credential-provider").mkdir(parents=True)
    (root / "var/lib/kubelet/credential-provider-config.yaml").write_text(config)
    if binary:
        (root / "var/lib/kubelet/credential-provider/acr-credential-provider").write_text("")
    if azure:
        (root / "etc/kubernetes/azure.json").write_text("{}")
    return root


def provider_run(root: Path, ref: str, env) -> dict:
    r = lab.diagnose(
        "check-health",
        ref,
        "--host-root",
        str(root),
        "--checks",
        "credential-provider",
        "-f",
        "json",
        env=env,
    )
    assert r.rc in (0, 1) and "Traceback" not in r.err, r.err
    return r.check("credential-provider")


@pytest.mark.parametrize(
    ("ref", "binary", "azure", "status", "code", "needle"),
    [
        ("myacr.azurecr.io/team/app:1", True, True, "pass", None, "acr-credential-provider"),
        ("myacr.azurecr.io/team/app:1", False, True, "fail", "KUBELET_PROVIDER_MISSING", "binary"),
        (
            "myacr.azurecr.io/team/app:1",
            True,
            False,
            "fail",
            "KUBELET_PROVIDER_MISSING",
            "azure.json",
        ),
        ("ghcr.io/org/app:1", True, True, "pass", None, "imagePullSecrets"),
        ("myacr.azurecr.io:5000/team/app:1", True, True, "pass", None, "imagePullSecrets"),
        ("a.b.azurecr.io/team/app:1", True, True, "pass", None, "imagePullSecrets"),
    ],
)
def test_credential_provider_from_the_node(tmp_path, env, ref, binary, azure, status, code, needle):
    c = provider_run(provider_root(tmp_path, PROVIDER, binary=binary, azure=azure), ref, env)
    assert (c["status"], c["code"]) == (status, code), c
    assert needle in c["summary"], c


def test_broken_provider_config_names_the_line(tmp_path, env):
    c = provider_run(
        provider_root(tmp_path, PROVIDER + "  - name: [broken\n"), "myacr.azurecr.io/a:1", env
    )
    assert (c["status"], c["code"]) == ("fail", "KUBELET_PROVIDER_CONFIG_ERROR"), c
    assert "line 12" in c["summary"], c


def test_no_provider_config_skips(env, tmp_path):
    root = tmp_path / "bare"
    (root / "etc").mkdir(parents=True)
    assert provider_run(root, "myacr.azurecr.io/a:1", env)["status"] == "skip"
