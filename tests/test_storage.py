"""Blob downloads and the storage redirect, with the real registry and a redirecting front."""

from __future__ import annotations

import json

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
