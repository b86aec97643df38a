"""Blob downloads and the storage redirect, with the real registry and a redirecting front."""

from __future__ import annotations

import json

import pytest

from tests import lab
from tests.conftest import USERS, validate_report

DIGEST = "sha256:" + "a1" * 32
SAS = "sig=PLANTED-SAS-signature-77"


def test_blob_served_by_the_registry_itself(tokens, pki, env, schema):
    _, reg = tokens
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        "-f",
        "json",
        env=env,
        stdin=USERS["alice"],
    )
    validate_report(r.report, schema)
    step = r.check("blob-redirect")
    assert step["status"] == "pass", step
    assert "served by the registry itself" in step["summary"]


def _front(pki, storage_url):
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + "c0" * 32,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 5,
                "digest": DIGEST,
            }
        ],
    }
    routes = {
        "/v2/": (401, {"WWW-Authenticate": 'Basic realm="front"'}, b"{}"),
        "/v2/team/app/tags/list": (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"name": "team/app", "tags": ["1.0"]}).encode(),
        ),
        "/v2/team/app/manifests/1.0": (
            200,
            {"Content-Type": manifest["mediaType"]},
            json.dumps(manifest).encode(),
        ),
        f"/v2/team/app/blobs/{DIGEST}": (307, {"Location": storage_url}, b""),
    }
    return lab.http_server(routes, lab.server_context(*pki.leaf("good", *lab.GOOD_NAMES)))


def _run(env, pki, port, *more):
    return lab.diagnose(
        "check-health",
        f"127.0.0.1:{port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "team/app",
        "-u",
        "alice",
        "--password-stdin",
        "-f",
        "json",
        *more,
        env=env,
        stdin=USERS["alice"],
    )


def test_redirect_followed_without_the_authorization_header(pki, env, schema):
    storage_cert = pki.leaf("storage", "127.0.0.1", "localhost")
    with lab.http_server({"/blob": (206, {}, b"hello")}, lab.server_context(*storage_cert)) as st:
        with _front(pki, f"https://127.0.0.1:{st.port}/blob?{SAS}") as front:
            r = _run(env, pki, front.port)
        storage_requests = list(st.requests)
        front_requests = list(front.requests)
    validate_report(r.report, schema)
    step = r.check("blob-redirect")
    assert step["status"] == "pass", step
    assert "redirected to 127.0.0.1" in step["summary"]
    assert storage_requests, "the storage host was never asked"
    for req in storage_requests:
        assert "Authorization" not in req["headers"], "Authorization header forwarded!"
    assert any("Authorization" in req["headers"] for req in front_requests)
    # blob-redirect and nondistributable-artifacts both need the manifest: it is read once
    assert r.check("nondistributable-artifacts")["status"] == "pass"
    assert sum(1 for req in front_requests if "/manifests/" in req["path"]) == 1
    assert "PLANTED-SAS" not in r.out


def test_storage_host_refusing(pki, env, schema):
    storage_cert = pki.leaf("storage", "127.0.0.1", "localhost")
    with (
        lab.http_server({}, lab.server_context(*storage_cert)) as st,
        _front(pki, f"https://127.0.0.1:{st.port}/forbidden") as front,
    ):
        r = _run(env, pki, front.port)
    validate_report(r.report, schema)
    step = r.check("blob-redirect")
    assert (step["status"], step["code"]) == ("fail", "STORAGE_REDIRECT_ERROR")
    assert step["evidence"]["storage_status"] == 404
    assert "redirect-auth-header" in step["faq"]


def test_storage_host_unresolvable(pki, env, schema, dns_server, host_root):
    with _front(pki, "https://nostorage.test/blob") as front:
        r = _run(
            env,
            pki,
            front.port,
            "--nameserver",
            dns_server.nameserver,
            "--host-root",
            str(host_root),
        )
    validate_report(r.report, schema)
    step = r.check("blob-redirect")
    assert (step["status"], step["code"]) == ("fail", "STORAGE_REDIRECT_ERROR")
    assert "does not resolve" in step["summary"]


def _redirecting(state: dict[str, str]):
    """The real registry with its blob GETs redirected to a storage host, as ACR and S3- or
    GCS-backed registries do: the storage host is state["storage"] (the registry itself, on
    its own address, stands in for it), with a signature in the query."""

    def rule(method: str, path: str, headers: dict[str, str]) -> lab.Answer | None:
        p = path.split("?")[0]
        if method in ("GET", "HEAD") and "/blobs/sha256:" in p:
            return 307, {"Location": f"{state['storage']}{p}?{SAS}"}, b""
        return None

    return rule


def test_storage_redirect_agrees_with_skopeo(registry, pki, good_cert, env, schema, tmp_path):
    """The real registry behind a front that sends blob downloads to a storage host: skopeo
    follows the redirect and copies the image while the storage host answers, and fails naming
    it once it does not; the image-blobs verdict says the same both times."""
    import shutil
    import subprocess

    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo is not installed")
    lab.push_real_image(
        f"https://127.0.0.1:{registry.port}", "gt/redirected", "1", ca_file=pki.ca_file
    )
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(pki.ca_file, certs / "ca.crt")
    storage = f"127.0.0.1:{registry.port}"
    state = {"storage": f"https://{storage}"}
    tls = lab.server_context(*good_cert)

    def theirs(ref: str, n: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                skopeo,
                "--insecure-policy",
                "copy",
                f"--src-cert-dir={certs}",
                f"docker://{ref}",
                f"dir:{tmp_path / f'copy{n}'}",
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )

    def ours(ref: str, *more: str, check: str = "image-blobs") -> dict:
        r = lab.diagnose(
            "check-health",
            ref,
            *more,
            "--ca-bundle",
            str(pki.ca_file),
            "-f",
            "json",
            "-q",
            env=env,
        )
        validate_report(r.report, schema)
        assert "PLANTED-SAS" not in r.out + r.err
        return r.check(check)

    with lab.registry_front(registry.port, pki.ca_file, tls, _redirecting(state)) as front:
        ref = f"127.0.0.1:{front.port}/gt/redirected:1"
        c = ours(ref)
        assert c["status"] == "pass" and "through 127.0.0.1" in c["summary"], c
        by_repo = ("--repository", "gt/redirected")
        c = ours(f"127.0.0.1:{front.port}", *by_repo, check="blob-redirect")
        assert c["status"] == "pass" and "redirected to 127.0.0.1" in c["summary"], c
        lab.client_ok(theirs(ref, 1))
        redirected = [q for q in front.requests if "/blobs/sha256:" in q["path"]]
        assert len(redirected) >= 2, front.requests  # config and layer: both went to storage
        # the storage host stops answering
        dead = lab.closed_port()
        state["storage"] = f"https://127.0.0.1:{dead}"
        c = ours(ref)
        assert (c["status"], c["code"]) == ("fail", "STORAGE_REDIRECT_ERROR"), c
        assert f"127.0.0.1:{dead}" in c["summary"] and "refused" in c["summary"], c
        c = ours(f"127.0.0.1:{front.port}", *by_repo, check="blob-redirect")
        assert (c["status"], c["code"]) == ("fail", "STORAGE_REDIRECT_ERROR"), c
        assert f"127.0.0.1:{dead}" in c["summary"] and "refused" in c["summary"], c
        lab.client_failed(theirs(ref, 2), f"127.0.0.1:{dead}", "connection refused")
