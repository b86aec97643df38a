"""The image as the unit of diagnosis. Each verdict on a reference is set beside the real clients'
verdict on the same reference and the same broken part: `skopeo` (Debian) always, and `docker pull`
/ `docker push` through a dockerd the suite starts. Ours and theirs must agree, both ways.

The parts: the real distribution registry (a multi-platform OCI index made here, a read-only
one), nginx limiting request bodies in front of one, tinyproxy asking for credentials or
refusing CONNECT, and scripted HTTPS fronts for the answers a distribution registry never gives
(429 with RateLimit headers, ACR's 401 for a repository that does not exist).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import lab
from tests.conftest import validate_report

SKOPEO = shutil.which("skopeo")
DOCKERD = shutil.which("dockerd")
AMD64 = platform.machine().lower() in ("x86_64", "amd64")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo (Debian package) is needed")


# ------------------------------------------------------------------------------ the parts
@pytest.fixture(scope="module")
def images(tmp_path_factory, pki, good_cert):
    """A real registry holding: gt/app:1.0 (one 2 MiB layer), gt/small:1.0 (a tiny layer), and
    gt/multi:1, an OCI index of linux/arm64 and windows/amd64 only."""
    reg = lab.start_registry(tmp_path_factory.mktemp("images"), *good_cert)
    base = f"https://127.0.0.1:{reg.port}"
    app = lab.push_real_image(base, "gt/app", "1.0", ca_file=pki.ca_file, payload=2 * 1024 * 1024)
    lab.push_real_image(base, "gt/small", "1.0", ca_file=pki.ca_file)
    lab.push_real_index(
        base, "gt/multi", "1", [("linux", "arm64"), ("windows", "amd64")], ca_file=pki.ca_file
    )
    yield f"127.0.0.1:{reg.port}", app
    reg.stop()


def diag(env, schema, *args: str, ca: Path | None = None) -> lab.Run:
    more = ["--ca-bundle", str(ca)] if ca else []
    r = lab.diagnose("check-health", "--format", "json", "--quiet", *more, *args, env=env)
    assert r.rc in (0, 1), (r.rc, r.err)
    assert "Traceback" not in r.err, r.err
    validate_report(r.report, schema)
    return r


skopeo = lab.skopeo


def inspect(
    ref: str, *more: str, env: dict[str, str] | None = None, cert_dir: Path | None = None
) -> Any:
    """skopeo inspect; with cert_dir TLS is verified against it (no fall-back to plain HTTP,
    which insecure mode tries and which would hide a proxy's error)."""
    tls = [f"--cert-dir={cert_dir}"] if cert_dir else ["--tls-verify=false"]
    return skopeo(*more, "inspect", *tls, f"docker://{ref}", env=env)


def copy(src: str, dst: str) -> Any:
    return skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{src}", dst
    )


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    """A private dockerd (Debian docker.io): its own root, exec root and socket."""
    if DOCKERD is None or shutil.which("docker") is None or os.geteuid() != 0:
        pytest.skip("dockerd, the docker CLI and root are needed")
    d = tmp_path_factory.mktemp("dockerd-image")
    (d / "daemon.json").write_text("{}")
    try:
        with lab.private_dockerd(d, d / "daemon.json") as host:
            yield host
    except RuntimeError as exc:
        pytest.skip(str(exc))


def docker(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, timeout=120
    )


def pull_fails(host: str, ref: str, *more: str) -> subprocess.CompletedProcess[str]:
    docker(host, "rmi", "-f", ref)
    return docker(host, "pull", *more, ref)


# ------------------------------------------------------------------- the healthy direction
@needs_skopeo
def test_healthy_image_all_pass_and_the_clients_pull_it(images, env, schema, pki, dockerd):
    server, _ = images
    ref = f"{server}/gt/app:1.0"
    r = diag(env, schema, ref, "--require", "push", ca=pki.ca_file)
    assert r.rc == 0, r.out
    for cid in ("image-reference", "manifest", "platform", "image-blobs", "push-path"):
        assert r.check(cid)["status"] == "pass", r.check(cid)
    target = r.report["target"]["registries"][0]
    assert target["image"]["normalized"] == ref and target["repository"] == "gt/app"
    blobs = r.check("image-blobs")["evidence"]
    assert blobs["layers"] == 1 and blobs["bytes"] > 2 * 1024 * 1024
    push = r.check("push-path")["evidence"]
    assert push["cancelled"] is True and push["probe_bytes"] > 2 * 1024 * 1024
    # theirs: skopeo reads and copies it, docker pulls it
    lab.client_ok(inspect(ref))
    lab.client_ok(copy(ref, f"docker://{server}/gt/app:copy"))
    lab.client_ok(pull_fails(dockerd, ref))


def test_short_names_normalise_as_docker_does(env, schema):
    """docker.io, library/ and latest: shown in the report without any network needed."""
    r = diag(env, schema, "nginx:1.25", "--checks", "image-reference")
    c = r.check("image-reference")
    assert c["status"] == "pass"
    assert c["evidence"]["normalized"] == "docker.io/library/nginx:1.25"
    reg = r.report["target"]["registries"][0]
    assert reg["login_server"] == "registry-1.docker.io" and reg["repository"] == "library/nginx"
    r = diag(
        env, schema, "--image", "ghcr.io/org/svc@sha256:" + "c" * 64, "--checks", "image-reference"
    )
    assert r.check("image-reference")["evidence"]["digest"] == "sha256:" + "c" * 64


# ------------------------------------------------------------------------- pull failures
@needs_skopeo
def test_missing_tag(images, env, schema, pki, dockerd):
    server, _ = images
    ref = f"{server}/gt/app:2.0"
    c = diag(env, schema, ref, ca=pki.ca_file).check("manifest")
    assert (c["status"], c["code"]) == ("fail", "IMAGE_TAG_NOT_FOUND"), c
    assert "1.0" in c["summary"] and "manifest-unknown" in c["faq"]
    lab.client_failed(inspect(ref), "manifest unknown", "2.0")
    lab.client_failed(pull_fails(dockerd, ref), f"manifest for {ref} not found", "manifest unknown")


@needs_skopeo
def test_missing_repository(images, env, schema, pki, dockerd):
    server, _ = images
    ref = f"{server}/gt/nothing-here:1.0"
    c = diag(env, schema, ref, ca=pki.ca_file).check("manifest")
    assert (c["status"], c["code"]) == ("fail", "REPOSITORY_NOT_FOUND"), c
    assert "gt/nothing-here" in c["summary"], c
    # the pull names the manifest; the client's own look at the repository names the cause
    lab.client_failed(inspect(ref), "gt/nothing-here", "manifest unknown")
    lab.client_failed(pull_fails(dockerd, ref), "gt/nothing-here", "manifest unknown")
    tags = skopeo("list-tags", "--tls-verify=false", f"docker://{server}/gt/nothing-here")
    lab.client_failed(tags, "fetching tags list", "404 (Not Found)")
    lab.client_ok(skopeo("list-tags", "--tls-verify=false", f"docker://{server}/gt/app"))


@needs_skopeo
@pytest.mark.may_skip("another CPU: the index is built to miss an amd64 host")
@pytest.mark.skipif(not AMD64, reason="the index is built to miss an amd64 host")
def test_index_without_this_platform(images, env, schema, pki, dockerd):
    server, _ = images
    ref = f"{server}/gt/multi:1"
    r = diag(env, schema, ref, ca=pki.ca_file)
    c = r.check("platform")
    assert (c["status"], c["code"]) == ("fail", "PLATFORM_MISMATCH"), c
    assert "linux/amd64" in c["summary"]
    assert "linux/arm64" in c["summary"] and "windows/amd64" in c["summary"]
    assert r.check("image-blobs")["summary"] == "blocked by platform"
    lab.client_failed(inspect(ref), "no image found in image index for architecture amd64")
    lab.client_failed(pull_fails(dockerd, ref), "no matching manifest for linux/amd64")
    # asked for a platform the index has: both pass
    r = diag(env, schema, ref, "--platform", "linux/arm64", ca=pki.ca_file)
    assert r.rc == 0 and r.check("platform")["status"] == "pass"
    assert r.check("image-blobs")["status"] == "pass"
    lab.client_ok(inspect(ref, "--override-arch", "arm64"))
    lab.client_ok(pull_fails(dockerd, ref, "--platform", "linux/arm64"))


@needs_skopeo
def test_digest_pinning(images, env, schema, pki, dockerd):
    server, app = images
    good = f"{server}/gt/app@{app['_digest']}"
    r = diag(env, schema, good, ca=pki.ca_file)
    assert r.check("manifest")["status"] == "pass" and r.rc == 0
    lab.client_ok(inspect(good))
    gone = f"{server}/gt/app:1.0@sha256:" + "0" * 64
    c = diag(env, schema, gone, ca=pki.ca_file).check("manifest")
    assert (c["status"], c["code"]) == ("fail", "IMAGE_DIGEST_NOT_FOUND"), c
    assert app["_digest"] in c["summary"]  # what the tag points to now
    assert "sha256:" + "0" * 64 in c["summary"], c
    # skopeo takes no tag beside a digest: it is given the digest alone, as docker reads it
    lab.client_failed(inspect(f"{server}/gt/app@sha256:" + "0" * 64), "manifest unknown")
    lab.client_failed(pull_fails(dockerd, gone), "sha256:" + "0" * 64, "manifest unknown")


@needs_skopeo
def test_upper_case_repository_is_the_faq_lowercase_problem(images, env, schema, pki, dockerd):
    server, _ = images
    ref = f"{server}/GT/App:1.0"
    r = diag(env, schema, ref, ca=pki.ca_file)
    c = r.check("image-reference")
    assert (c["status"], c["code"]) == ("fail", "IMAGE_REFERENCE_ERROR"), c
    assert c["faq"][0] == "lowercase-login-server"
    assert f"{server}/gt/app:1.0" in c["remediation"][0]
    assert r.check("manifest")["summary"] == "blocked by image-reference"
    lab.client_failed(inspect(ref), "must be lowercase")
    lab.client_failed(docker(dockerd, "pull", ref), "must be lowercase")


# --------------------------------------------------------------------- scripted fronts
def _rate_limited_front(method: str, path: str, headers: dict[str, str]) -> lab.Answer:
    if path.split("?")[0] == "/v2/":
        return 200, {"Docker-Distribution-API-Version": "registry/2.0"}, b"{}"
    return (
        429,
        {
            "Content-Type": "application/json",
            "RateLimit-Limit": "100;w=21600",
            "RateLimit-Remaining": "0;w=21600",
            "Docker-RateLimit-Source": "203.0.113.7",
            # without it, skopeo backs off for 30 s before it gives up
            "Retry-After": "1",
        },
        lab.registry_errors(
            "TOOMANYREQUESTS",
            "You have reached your unauthenticated pull rate limit. "
            "https://www.docker.com/increase-rate-limit",
        ),
    )


@needs_skopeo
def test_rate_limited(env, schema, pki, good_cert, dockerd):
    with lab.scripted_https(_rate_limited_front, lab.server_context(*good_cert)) as front:
        ref = f"127.0.0.1:{front.port}/library/busybox:latest"
        c = diag(env, schema, ref, ca=pki.ca_file).check("manifest")
        assert (c["status"], c["code"]) == ("fail", "RATE_LIMITED"), c
        assert c["faq"] == ["rate-limit"]
        assert "0 of 100 pulls left per 6 h" in c["summary"]
        assert c["evidence"]["status"] == 429
        assert c["evidence"]["anonymous"] is True
        assert c["evidence"]["rate_limit"]["window_s"] == 21600
        assert "Log in" in c["remediation"][0]
        # the manifest was asked for with HEAD (not counted by Docker Hub), never a 2nd time
        methods = [q["method"] for q in front.requests if "/manifests/" in q["path"]]
        assert methods == ["HEAD"], methods
        words = "You have reached your unauthenticated pull rate limit"
        lab.client_failed(inspect(ref), "toomanyrequests", words)
        lab.client_failed(pull_fails(dockerd, ref), "toomanyrequests", words)


def _acr_like_front(port_box: list[int]):
    """ACR's behaviour for a repository that does not exist: a token is issued, and the
    registry answers 401, not 404."""

    def answer(method: str, path: str, headers: dict[str, str]) -> lab.Answer:
        realm = f'Bearer realm="https://127.0.0.1:{port_box[0]}/oauth2/token",service="front.test"'
        p = path.split("?")[0]
        if p == "/oauth2/token":
            body = json.dumps({"access_token": "opaque-anon-token", "token": "opaque-anon-token"})
            return 200, {"Content-Type": "application/json"}, body.encode()
        return (
            401,
            {"WWW-Authenticate": realm, "Content-Type": "application/json"},
            lab.registry_errors(
                "UNAUTHORIZED",
                "authentication required, visit https://aka.ms/acr/authorization for more "
                "information.",
            ),
        )

    return answer


@needs_skopeo
def test_acr_style_401_for_a_missing_repository(env, schema, pki, good_cert, dockerd):
    box: list[int] = [0]
    with lab.scripted_https(_acr_like_front(box), lab.server_context(*good_cert)) as front:
        box[0] = front.port
        ref = f"127.0.0.1:{front.port}/team/missing:1.0"
        r = diag(env, schema, ref, ca=pki.ca_file)
        c = r.check("authorized-request")
        assert (c["status"], c["code"]) == ("fail", "REGISTRY_AUTH_ERROR"), c
        assert "does not exist" in c["summary"] and "may not read" in c["summary"]
        assert "manifest-unknown" in c["faq"]
        assert "Tell the two apart" in c["remediation"][0]
        assert r.check("manifest")["summary"] == "blocked by authorized-request"
        words = "authentication required, visit https://aka.ms/acr/authorization"
        lab.client_failed(inspect(ref), "unauthorized", words)
        lab.client_failed(pull_fails(dockerd, ref), "unauthorized", words)


# ---------------------------------------------------------------------------- push path
@pytest.fixture(scope="module")
def readonly(tmp_path_factory, pki, good_cert):
    """A registry with gt/small:1.0, restarted in storage.maintenance.readonly mode."""
    d = tmp_path_factory.mktemp("readonly")
    reg = lab.start_registry(d, *good_cert)
    lab.push_real_image(f"https://127.0.0.1:{reg.port}", "gt/small", "1.0", ca_file=pki.ca_file)
    reg.stop()
    ro = lab.start_registry(
        d, *good_cert, storage_extra="  maintenance:\n    readonly:\n      enabled: true\n"
    )
    yield f"127.0.0.1:{ro.port}"
    ro.stop()


@needs_skopeo
def test_read_only_registry_refuses_push_but_pulls(readonly, images, env, schema, pki, dockerd):
    server, _ = images
    ref = f"{readonly}/gt/small:1.0"
    r = diag(env, schema, ref, "--require", "push", ca=pki.ca_file)
    push = r.check("push-path")
    assert (push["status"], push["code"]) == ("fail", "PUSH_READ_ONLY"), push
    assert push["faq"][0] == "registry-read-only" and "405" in push["summary"]
    assert r.check("manifest")["status"] == "pass"  # pulls still work
    pulled = diag(env, schema, ref, ca=pki.ca_file)
    assert pulled.rc == 0
    lab.client_ok(inspect(ref))
    theirs = copy(f"{server}/gt/app:1.0", f"docker://{readonly}/gt/app:1.0")
    lab.client_failed(theirs, "405", "blobs/uploads")
    src = f"{server}/gt/small:1.0"
    lab.client_ok(docker(dockerd, "pull", src))
    lab.client_ok(docker(dockerd, "tag", src, f"{readonly}/gt/pushed:1"))
    lab.client_failed(docker(dockerd, "push", f"{readonly}/gt/pushed:1"), "405", "not allowed")


@pytest.fixture(scope="module")
def body_limited(tmp_path_factory, good_cert):
    """nginx with client_max_body_size 1m (its default) in front of an empty registry, and
    another with 64m in front of a second one."""
    fronts, regs = [], []
    for limit in ("1m", "64m"):
        d = tmp_path_factory.mktemp(f"nginx-{limit}")
        reg = lab.start_registry(d / "registry", *good_cert)
        front = lab.start_nginx_front(d / "nginx", *good_cert, reg.port, max_body=limit)
        regs.append(reg)
        fronts.append(f"127.0.0.1:{front.port}")
        regs.append(front)  # stopped like a registry
    yield fronts
    for p in regs:
        p.stop()


@needs_skopeo
def test_proxy_body_limit_refuses_a_large_layer(body_limited, images, env, schema, pki):
    small_limit, large_limit = body_limited
    server, _ = images
    r = diag(env, schema, f"{small_limit}/gt/app:1.0", "--require", "push", ca=pki.ca_file)
    c = r.check("push-path")
    assert (c["status"], c["code"]) == ("fail", "PUSH_BODY_TOO_LARGE"), c
    assert "413" in c["summary"] and "1,048,577" in c["summary"]
    assert "client_max_body_size" in c["remediation"][0]
    assert c["evidence"]["cancelled"] is True
    theirs = copy(f"{server}/gt/app:1.0", f"docker://{small_limit}/gt/app:1.0")
    lab.client_failed(theirs, "413", "Request Entity Too Large")
    # a proxy whose limit is above the layer: both pass
    r = diag(env, schema, f"{large_limit}/gt/app:1.0", "--require", "push", ca=pki.ca_file)
    assert r.check("push-path")["status"] == "pass" and r.rc == 0, r.check("push-path")
    lab.client_ok(copy(f"{server}/gt/app:1.0", f"docker://{large_limit}/gt/app:1.0"))


# -------------------------------------------------------------------------------- proxies
NS_HOST, NS_ADDR = "198.18.4.1", "198.18.4.2"


@pytest.fixture(scope="module")
def far_registry(tmp_path_factory, pki):
    """A registry in a network namespace (Go clients never proxy loopback, so the registry
    must be elsewhere for a proxy to matter)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("root and iproute2 are needed for a network namespace")
    cm = lab.netns_host(NS_HOST, NS_ADDR, name=f"rdimg{os.getpid() % 10000}")
    try:
        ns, address = cm.__enter__()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces cannot be made here: {exc.stderr}")
    cert = pki.leaf("far", address)
    d = tmp_path_factory.mktemp("far")
    reg = lab.start_registry(d, *cert, host=address, netns=ns, port=5000)
    lab.push_real_image(f"https://{address}:5000", "gt/app", "1.0", ca_file=pki.ca_file)
    shutil.copy(pki.ca_file, d / "ca.crt")
    yield f"{address}:5000", d
    reg.stop()
    cm.__exit__(None, None, None)


def _with_proxy(env: dict[str, str], proxy: str, no_proxy: str = "") -> dict[str, str]:
    out = {**env, "HTTPS_PROXY": proxy}
    if no_proxy:
        out["NO_PROXY"] = no_proxy
    return out


@needs_skopeo
def test_dead_proxy_is_named(far_registry, env, schema, pki):
    far_registry, certs = far_registry
    port = lab.closed_port()
    penv = _with_proxy(env, f"http://127.0.0.1:{port}")
    ref = f"{far_registry}/gt/app:1.0"
    r = lab.diagnose(
        "check-health",
        ref,
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        "--quiet",
        "--skip",
        "docker-certs",
        env=penv,
    )
    validate_report(r.report, schema)
    c = r.check("proxy")
    assert (c["status"], c["code"]) == ("fail", "PROXY_ERROR"), c
    assert f"127.0.0.1:{port}" in c["summary"] and "HTTPS_PROXY" in c["summary"]
    assert "connection refused" in c["summary"]
    api = r.check("api")
    assert api["code"] == "PROXY_ERROR" and f"127.0.0.1:{port}" in api["summary"]
    assert "proxy" in api["faq"]
    theirs = inspect(ref, env={**os.environ, **penv}, cert_dir=certs)
    lab.client_failed(theirs, "proxyconnect", f"127.0.0.1:{port}", "connection refused")
    # NO_PROXY takes the registry around the dead proxy: both pass
    nenv = _with_proxy(env, f"http://127.0.0.1:{port}", no_proxy=NS_ADDR)
    r = lab.diagnose(
        "check-health",
        ref,
        "--ca-bundle",
        str(pki.ca_file),
        "-f",
        "json",
        "--quiet",
        "--skip",
        "docker-certs",
        env=nenv,
    )
    assert r.rc == 0, r.out
    lab.client_ok(inspect(ref, env={**os.environ, **nenv}, cert_dir=certs))


@needs_skopeo
def test_proxy_asking_for_credentials(far_registry, env, schema, pki, tmp_path):
    far_registry, certs = far_registry
    secret = "PLANTED-proxy-pw-5521"
    tp = lab.start_tinyproxy(tmp_path / "tp", basic_auth=("pxuser", secret), connect_ports=[5000])
    try:
        ref = f"{far_registry}/gt/app:1.0"
        penv = _with_proxy(env, f"http://127.0.0.1:{tp.port}")
        r = lab.diagnose(
            "check-health",
            ref,
            "--ca-bundle",
            str(pki.ca_file),
            "-f",
            "json",
            "--quiet",
            "--skip",
            "docker-certs",
            env=penv,
        )
        validate_report(r.report, schema)
        c = r.check("proxy")
        assert (c["status"], c["code"]) == ("fail", "PROXY_ERROR"), c
        assert "407" in c["summary"] and f"127.0.0.1:{tp.port}" in c["summary"]
        theirs = inspect(ref, env={**os.environ, **penv}, cert_dir=certs)
        lab.client_failed(theirs, "Proxy Authentication Required")
        # with the credentials in the proxy URL: both pass, and the password is nowhere
        aenv = _with_proxy(env, f"http://pxuser:{secret}@127.0.0.1:{tp.port}")
        r = lab.diagnose(
            "check-health",
            ref,
            "--ca-bundle",
            str(pki.ca_file),
            "-f",
            "json",
            "--quiet",
            "--skip",
            "docker-certs",
            env=aenv,
        )
        assert r.rc == 0, r.out
        assert r.check("proxy")["status"] == "pass"
        assert r.check("proxy")["evidence"]["proxy_credentials"] is True
        assert secret not in r.out and secret not in r.err
        lab.client_ok(inspect(ref, env={**os.environ, **aenv}, cert_dir=certs))
    finally:
        tp.stop()


@needs_skopeo
def test_proxy_refusing_the_registry_port(far_registry, env, schema, pki, tmp_path):
    far_registry, certs = far_registry
    tp = lab.start_tinyproxy(tmp_path / "tp", connect_ports=[443])
    try:
        ref = f"{far_registry}/gt/app:1.0"
        penv = _with_proxy(env, f"http://127.0.0.1:{tp.port}")
        r = lab.diagnose(
            "check-health",
            ref,
            "--ca-bundle",
            str(pki.ca_file),
            "-f",
            "json",
            "--quiet",
            "--skip",
            "docker-certs",
            env=penv,
        )
        validate_report(r.report, schema)
        c = r.check("proxy")
        assert (c["status"], c["code"]) == ("fail", "PROXY_ERROR"), c
        assert "403 Access violation" in c["summary"] and "CONNECT" in c["remediation"][0]
        theirs = inspect(ref, env={**os.environ, **penv}, cert_dir=certs)
        lab.client_failed(theirs, "Access violation")  # Go gives the proxy's reason phrase
    finally:
        tp.stop()


@needs_skopeo
@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [(".registry.test", True), ("*.registry.test", True), ("registry.test", False)],
)
def test_no_proxy_names_as_go_reads_them(no_proxy, proxied, images, env, schema, pki, tmp_path):
    """Go's NO_PROXY: ".x" (and "*.x") covers the names under x, not x itself; "x" covers x. A
    name that resolves to 127.0.0.1 is proxied unless NO_PROXY covers it. skopeo, with that
    name in an /etc/hosts of its own (a private mount namespace), and a proxy that is dead."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("unshare and root are needed")
    server, _ = images
    port = server.rsplit(":", 1)[1]
    dead = lab.closed_port()
    penv = {**env, "HTTPS_PROXY": f"http://127.0.0.1:{dead}", "NO_PROXY": no_proxy}
    ref = f"registry.test:{port}/gt/small:1.0"
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 registry.test\n")
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(pki.ca_file, certs / "ca.crt")
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    theirs = lab.skopeo(
        "inspect",
        f"--cert-dir={certs}",
        f"docker://{ref}",
        env={**os.environ, **penv},
        prefix=("unshare", "--mount", "sh", "-c", script, str(tmp_path / "hosts")),
    )
    r = lab.diagnose(
        "check-health",
        ref,
        "--ca-bundle",
        str(pki.ca_file),
        "--checks",
        "proxy",
        "--host-root",
        str(empty_hosts(tmp_path)),
        "-f",
        "json",
        "-q",
        env=penv,
    )
    validate_report(r.report, schema)
    c = r.check("proxy")
    if proxied:
        lab.client_failed(theirs, "proxyconnect", f"127.0.0.1:{dead}", "connection refused")
        assert (c["status"], c["code"]) == ("fail", "PROXY_ERROR"), c
        assert f"127.0.0.1:{dead}" in c["summary"] and "connection refused" in c["summary"], c
    else:
        lab.client_ok(theirs)
        assert c["status"] == "pass" and "direct connection" in c["summary"], c


def empty_hosts(tmp: Path) -> Path:
    """A host root whose /etc/hosts names registry.test as 127.0.0.1."""
    root = tmp / "hostroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 registry.test\n")
    return root


# ------------------------------------------------------------ the token flow, and secrets
def test_image_through_the_token_flow_and_no_secret_leaks(tokens, pki, env, tmp_path):
    """The real registry in token mode: the manifest, blobs and push path use the access token;
    the password and every token issued appear in no output, nor in the bundle."""
    import tarfile

    from tests.conftest import USERS

    server, reg = tokens
    ref = f"127.0.0.1:{reg.port}/team/app:1.0"
    outputs = []
    for user, want_push in (("alice", "pass"), ("bob", "blocked by scope")):
        r = lab.diagnose(
            "check-health",
            ref,
            "--ca-bundle",
            str(pki.ca_file),
            "--require",
            "push",
            "-u",
            user,
            "--password-stdin",
            "-f",
            "json",
            env=env,
            stdin=USERS[user],
        )
        outputs += [r.out, r.err]
        for cid in ("manifest", "platform", "image-blobs"):
            assert r.check(cid)["status"] == ("pass" if user == "alice" else "skip"), r.out
        push = r.check("push-path")
        assert (push["status"] if user == "alice" else push["summary"]) == want_push, push
    # bob may pull: the pull verdict passes for him
    r = lab.diagnose(
        "check-health",
        ref,
        "--ca-bundle",
        str(pki.ca_file),
        "-u",
        "bob",
        "--password-stdin",
        "-f",
        "json",
        env=env,
        stdin=USERS["bob"],
    )
    assert r.rc == 0 and r.check("image-blobs")["status"] == "pass", r.out
    outputs += [r.out, r.err]
    archive = tmp_path / "b.tar.gz"
    r = lab.diagnose(
        "bundle",
        ref,
        "--ca-bundle",
        str(pki.ca_file),
        "-u",
        "alice",
        "--password-stdin",
        "-o",
        str(archive),
        "--quiet",
        env=env,
        stdin=USERS["alice"],
    )
    assert r.rc == 0, r.out + r.err
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            if m.isfile():
                outputs.append(t.extractfile(m).read().decode("utf-8", "replace"))  # type: ignore[union-attr]
        (name,) = [n for n in t.getnames() if n.endswith("/report.json")]
        report = json.loads(t.extractfile(name).read())  # type: ignore[union-attr]
    assert report["target"]["registries"][0]["image"]["normalized"] == ref
    with server.lock:
        issued = list(server.refresh_tokens)
    blob = "\n".join(outputs)
    for secret in [USERS["alice"], USERS["bob"], *issued]:
        assert secret not in blob, f"leaked {secret[:6]}..."
    assert "eyJ" not in blob and "Bearer ey" not in blob


def _token_image(server, reg, pki) -> str:
    """A real image (docker can unpack it) in the token-mode registry, in a repository of its
    own (team/docker: alice may pull and push, bob pull), pushed with a token the token server
    gives alice; its reference."""
    import requests

    from tests.conftest import USERS

    server.grant("alice", "team/docker", "pull", "push")
    server.grant("bob", "team/docker", "pull")
    answer = requests.get(
        server.realm,
        params={"service": server.service, "scope": "repository:team/docker:pull,push"},
        auth=("alice", USERS["alice"]),
        verify=str(pki.ca_file),
        timeout=10,
    )
    token = answer.json()["token"]
    base = f"https://127.0.0.1:{reg.port}"
    headers = {"Authorization": f"Bearer {token}"}
    lab.push_real_image(base, "team/docker", "real", ca_file=pki.ca_file, headers=headers)
    return f"127.0.0.1:{reg.port}/team/docker:real"


def test_token_flow_verdicts_agree_with_docker(tokens, pki, env, schema, dockerd, tmp_path):
    """docker login, pull and push through the token server, for a user who may pull and push
    (alice), one who may only pull (bob) and one who may do neither (carol), beside our verdicts
    for the same user and image."""
    from tests.conftest import USERS

    server, reg = tokens
    ref = _token_image(server, reg, pki)
    login_server = f"127.0.0.1:{reg.port}"

    def ours(user: str, need: str) -> lab.Run:
        more = ["--require", need, "-u", user, "--password-stdin"]
        r = lab.diagnose(
            "check-health",
            ref,
            "--ca-bundle",
            str(pki.ca_file),
            *more,
            "-f",
            "json",
            "-q",
            env=env,
            stdin=USERS[user],
        )
        validate_report(r.report, schema)
        return r

    def theirs(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / f"docker-{user}"
        config.mkdir(exist_ok=True)
        return subprocess.run(
            ["docker", "--config", str(config), "-H", dockerd, *args],
            capture_output=True,
            text=True,
            timeout=120,
            input=USERS[user],
        )

    for user in ("alice", "bob", "carol"):
        docker(dockerd, "rmi", "-f", ref)
        lab.client_ok(theirs(user, "login", "-u", user, "--password-stdin", login_server))
    # alice: pull and push, for both
    r = ours("alice", "push")
    assert r.rc == 0, r.out
    for cid in ("scope", "manifest", "platform", "image-blobs", "push-path"):
        assert r.check(cid)["status"] == "pass", r.check(cid)
    lab.client_ok(theirs("alice", "pull", ref))
    pushed = f"{login_server}/team/docker:from-docker"
    lab.client_ok(theirs("alice", "tag", ref, pushed))
    lab.client_ok(theirs("alice", "push", pushed))
    # bob: his pull works, his push is refused, for both
    r = ours("bob", "pull")
    assert r.rc == 0 and r.check("image-blobs")["status"] == "pass", r.check("image-blobs")
    r = ours("bob", "push")
    scope = r.check("scope")
    assert (scope["status"], scope["code"]) == ("fail", "TOKEN_SCOPE_ERROR"), scope
    assert "push" in scope["summary"] and r.check("push-path")["summary"] == "blocked by scope"
    docker(dockerd, "rmi", "-f", ref, pushed)
    lab.client_ok(theirs("bob", "pull", ref))
    lab.client_ok(theirs("bob", "tag", ref, pushed))
    lab.client_failed(theirs("bob", "push", pushed), "unauthorized", "authentication required")
    # carol: not even a pull, for both
    r = ours("carol", "pull")
    scope = r.check("scope")
    assert (scope["status"], scope["code"]) == ("fail", "TOKEN_SCOPE_ERROR"), scope
    assert "not pull" in scope["summary"], scope
    assert r.check("manifest")["status"] == "skip" and r.rc == 1, r.check("manifest")
    docker(dockerd, "rmi", "-f", ref, pushed)
    denied = theirs("carol", "pull", ref)
    lab.client_failed(denied, "pull access denied", "requested access to the resource is denied")


# ---------------------------------------------- registry answers carried into the summary
FIREWALL = "client with IP '203.0.113.9' is not allowed access"
DISALLOWED = "The operation is disallowed on this registry, repository or image."
# kind: (status, the registry's message, what skopeo says of it: the message, or the status)
REFUSALS = {
    "disallowed": (403, DISALLOWED, f"denied: {DISALLOWED}"),
    "quota": (507, "storage quota exceeded for this registry", "507 Insufficient Storage"),
}


def _firewall(state: dict[str, bool]):
    """ACR's firewall in front of the real registry: while it denies, every request but the
    /v2/ ping gets 403 DENIED with ACR's words; once the address is allowed, the registry answers."""

    def rule(method: str, path: str, headers: dict[str, str]) -> lab.Answer | None:
        if state["deny"] and path.split("?")[0] != "/v2/":
            body = lab.registry_errors("DENIED", f"{FIREWALL}. Refer https://aka.ms/acr/firewall")
            return 403, {"Content-Type": "application/json"}, body
        return None

    return rule


@needs_skopeo
def test_firewall_denial_carries_the_registrys_words(images, env, schema, pki, good_cert, dockerd):
    server, _ = images
    state = {"deny": True}
    upstream = int(server.rsplit(":", 1)[1])
    tls = lab.server_context(*good_cert)
    with lab.registry_front(upstream, pki.ca_file, tls, _firewall(state)) as f:
        ref = f"127.0.0.1:{f.port}/gt/app:1.0"
        c = diag(env, schema, ref, ca=pki.ca_file).check("manifest")
        assert (c["status"], c["code"]) == ("fail", "REGISTRY_DENIED"), c
        assert FIREWALL in c["summary"]
        assert c["faq"][0] == "firewall-propagation"
        lab.client_failed(inspect(ref), "denied", FIREWALL)
        lab.client_failed(pull_fails(dockerd, ref), "denied", FIREWALL)
        # the address allowed: both pull, through the same front
        state["deny"] = False
        r = diag(env, schema, ref, ca=pki.ca_file)
        assert r.rc == 0 and r.check("manifest")["status"] == "pass", r.check("manifest")
        lab.client_ok(inspect(ref))
        lab.client_ok(pull_fails(dockerd, ref))


def _upload_refusing(kind: str):
    """The real registry, with blob uploads refused the way ACR refuses them (403 disallowed)
    or a full store does (507): pulls, HEADs and manifest lookups reach the registry."""
    status, words, _ = REFUSALS[kind]

    def rule(method: str, path: str, headers: dict[str, str]) -> lab.Answer | None:
        if "/blobs/uploads/" in path:
            body = lab.registry_errors("DENIED", words)
            return status, {"Content-Type": "application/json"}, body
        return None

    return rule


@needs_skopeo
@pytest.mark.parametrize(
    ("kind", "code", "faq"),
    [
        ("disallowed", "PUSH_DENIED", "operation-not-allowed"),
        ("quota", "PUSH_QUOTA", "storage-quota"),
    ],
)
def test_push_refusals(kind, code, faq, images, env, schema, pki, good_cert):
    server, _ = images
    status, _, theirs_words = REFUSALS[kind]
    upstream = int(server.rsplit(":", 1)[1])
    tls = lab.server_context(*good_cert)
    with lab.registry_front(upstream, pki.ca_file, tls, _upload_refusing(kind)) as f:
        ref = f"127.0.0.1:{f.port}/team/new:1.0"
        r = diag(env, schema, ref, "--require", "push", ca=pki.ca_file)
        assert r.check("manifest")["status"] == "pass"  # not there yet: a push creates it
        c = r.check("push-path")
        assert (c["status"], c["code"]) == ("fail", code), c
        assert faq in c["faq"] and str(status) in c["summary"], c
        before = len(f.requests)
        theirs = copy(f"{server}/gt/small:1.0", f"docker://{ref}")
        # skopeo got as far as the upload our verdict describes, and was refused there
        lab.client_failed(theirs, "/v2/team/new/blobs/uploads/", theirs_words)
        posts = [q for q in f.requests[before:] if q["method"] == "POST"]
        assert posts and all("/blobs/uploads/" in q["path"] for q in posts), f.requests[before:]


# ---------------------------------------------------------- every place a reference goes
def test_preflight_and_settings_file_take_the_image(images, env, schema, pki, tmp_path):
    server, _ = images
    r = lab.diagnose("preflight", f"{server}/gt/app:9.9", "--ca-bundle", str(pki.ca_file), env=env)
    assert r.rc == 1
    assert any(
        line.startswith("FAIL  manifest") and "IMAGE_TAG_NOT_FOUND" in line
        for line in r.out.splitlines()
    ), r.out
    settings = tmp_path / "diagnose.toml"
    settings.write_text(
        f'image = "{server}/gt/multi:1"\nplatform = "linux/arm64"\n'
        f'ca-bundle = "{pki.ca_file}"\nreport = ["json:{tmp_path / "r.json"}"]\n'
    )
    r = lab.diagnose("preflight", "--config", str(settings), env=env)
    assert r.rc == 0, r.out
    report = json.loads((tmp_path / "r.json").read_text())
    validate_report(report, schema)
    assert report["target"]["registries"][0]["image"]["normalized"] == f"{server}/gt/multi:1"
    # --image relative to a named registry
    r = diag(env, schema, server, "--image", "gt/app:1.0", ca=pki.ca_file)
    assert r.check("manifest")["status"] == "pass" and r.rc == 0


def test_bad_references_exit_2_with_one_line(env):
    for bad in ("x.io/app:tag:tag", "x.io//app", "a" * 64):
        r = lab.diagnose("check-health", bad, env=env)
        assert r.rc == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    r = lab.diagnose("check-health", "--image", "x.io/a b", env=env)
    assert r.rc == 2 and "image" in r.err
    r = lab.diagnose("check-health", "localhost:5000/a:1", "--platform", "linux", env=env)
    assert r.rc == 2 and "--platform" in r.err
