"""Proxies that inspect TLS or are set up wrong, and the docker daemon's own proxy, each set
beside real Go clients on the same parts: skopeo through HTTPS_PROXY, and `docker pull` through
a private dockerd whose environment comes from a docker.service drop-in in the fixture host
root (the same file our check reads).

The parts: the real registry on an address of this host that is not loopback (the host side of
a veth pair: Go never sends a loopback address through a proxy), a CONNECT proxy written for
the tests that re-signs what it relays with an "inspection CA" made here (tests/tlsproxy.py),
tinyproxy, and the suite's token server on the same address.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diagnose.codes import Code
from diagnose.dockerhost import _no_userinfo, systemd_proxy_env
from diagnose.proxyprobe import CertSeen, Probe, ProxyUrl, _go_quote
from tests import lab, tlsproxy
from tests import tokenserver as ts_mod
from tests.conftest import validate_report

SKOPEO = shutil.which("skopeo")
DOCKERD = shutil.which("dockerd")
HOST_IP, NS_IP = "198.18.6.1", "198.18.6.2"


# ------------------------------------------------------------------------------ the parts
@pytest.fixture(scope="module")
def far(tmp_path_factory, pki):
    """The registry on 198.18.6.1 (this host's side of a veth pair), holding gt/app:1; yields
    (host:port, a skopeo cert dir trusting the registry's CA, the work directory)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or SKOPEO is None:
        pytest.skip("root, iproute2 and skopeo are needed")
    cm = lab.netns_host(HOST_IP, NS_IP, name=f"rdpx{os.getpid() % 10000}")
    try:
        cm.__enter__()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces cannot be made here: {exc.stderr}")
    d = tmp_path_factory.mktemp("far-proxied")
    cert = pki.leaf("far-proxied", HOST_IP, "registry.test")
    reg = lab.start_registry(d / "registry", *cert, host=HOST_IP)
    lab.push_real_image(f"https://{HOST_IP}:{reg.port}", "gt/app", "1", ca_file=pki.ca_file)
    certs = d / "certs"
    certs.mkdir()
    shutil.copy(pki.ca_file, certs / "ca.crt")
    yield f"{HOST_IP}:{reg.port}", certs, d
    reg.stop()
    cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def inspection(tmp_path_factory, pki):
    """The inspecting proxy: every tunnel it opens, it inspects."""
    ca = tlsproxy.make_inspection_ca(tmp_path_factory.mktemp("inspection"))
    with tlsproxy.connect_proxy(
        lambda host, port: "inspect", inspection=ca, upstream_ca=pki.ca_file
    ) as proxy:
        yield proxy, ca


def diag(env, schema, *args, ca: Path | None = None, rcs=(0, 1)) -> lab.Run:
    more = ["--ca-bundle", str(ca)] if ca else []
    r = lab.diagnose("check-health", "-f", "json", "--quiet", *more, *args, env=env)
    assert r.rc in rcs and "Traceback" not in r.err, (r.rc, r.err, r.out[-2000:])
    validate_report(r.report, schema)
    return r


def skopeo_inspect(ref: str, certs: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """skopeo inspect verifying TLS against certs (the containers-certs.d layout): no plain
    HTTP fall-back that would hide the proxy's error."""
    return lab.skopeo(
        "inspect", f"--cert-dir={certs}", f"docker://{ref}", env={**os.environ, **env}
    )


def bundle(path: Path, *cas: Path) -> Path:
    path.write_bytes(b"".join(ca.read_bytes() for ca in cas))
    return path


def docker_root(base: Path, dropin: str, *, hosts: str = "127.0.0.1 localhost\n") -> Path:
    """A host root with a docker.service drop-in and an /etc/docker of its own (certs.d)."""
    root = base / f"root-{time.monotonic_ns()}"
    (root / "etc" / "docker").mkdir(parents=True)
    (root / "etc" / "docker" / "daemon.json").write_text("{}")
    (root / "etc" / "hosts").write_text(hosts)
    d = root / "etc" / "systemd" / "system" / "docker.service.d"
    d.mkdir(parents=True)
    (d / "http-proxy.conf").write_text(f"[Service]\n{dropin}\n")
    return root


def trust_in_certs_d(root: Path, folder: str, *cas: Path) -> None:
    target = root / "etc" / "docker" / "certs.d" / folder
    target.mkdir(parents=True, exist_ok=True)
    for ca in cas:
        shutil.copy(ca, target / ca.name.replace(".pem", ".crt"))


@contextlib.contextmanager
def dockerd_from_root(root: Path) -> Iterator[str]:
    """A private dockerd started the way systemd would start it from that root: the drop-in's
    Environment= as its environment (read with our own parser), the root's /etc/docker
    (certs.d) and /etc/hosts bind-mounted for it alone. Its state lives in a short /tmp path
    (containerd's sockets must fit in 104 bytes)."""
    if DOCKERD is None or shutil.which("unshare") is None:
        pytest.skip("dockerd (Debian docker.io) and unshare are needed")
    if not Path("/etc/docker").is_dir():
        pytest.skip("/etc/docker is needed as a mount point")
    penv = {"NO_PROXY": "", "no_proxy": "", "HTTP_PROXY": "", "http_proxy": ""}
    penv.update(systemd_proxy_env(root))
    d = Path(tempfile.mkdtemp(prefix="rdpx-"))
    try:
        with lab.private_dockerd(
            d,
            root / "etc" / "docker" / "daemon.json",
            env=penv,
            hosts_file=root / "etc" / "hosts",
            binds={root / "etc" / "docker": "/etc/docker"},
        ) as host:
            yield host
    finally:
        shutil.rmtree(d, ignore_errors=True)


def docker(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, timeout=120
    )


def pull(host: str, ref: str) -> subprocess.CompletedProcess[str]:
    docker(host, "rmi", "-f", ref)
    return docker(host, "pull", ref)


# ----------------------------------------------------------- an inspecting proxy, HTTPS_PROXY
def test_inspecting_proxy_is_named_with_its_ca_beside_skopeo(far, inspection, env, schema, pki):
    """skopeo through the inspecting proxy fails with x509 unknown authority until its CA is in
    skopeo's cert dir; our verdict fails and passes with it, naming the CA both times."""
    server, certs, d = far
    proxy, ca = inspection
    penv = {**env, "HTTPS_PROXY": proxy.url}
    ref = f"{server}/gt/app:1"
    r = diag(penv, schema, ref, "--skip", "docker-certs", ca=pki.ca_file)
    c = r.check("proxy")
    assert (c["status"], c["code"]) == ("fail", "PROXY_TLS_INSPECTION"), c
    assert ca.subject in c["summary"] and "does not trust" in c["summary"], c
    assert "x509: certificate signed by unknown authority" in c["summary"]
    assert c["evidence"]["inspection"]["direct_issuer"] != ca.subject
    assert c["faq"][0] == "proxy-tls-inspection"
    steps = " ".join(c["remediation"])
    for where in ("/etc/docker/certs.d/", "/etc/containers/certs.d/", "hosts.toml", "--ca-bundle"):
        assert where in steps, steps
    assert "NO_PROXY" in steps
    api = r.check("api")
    assert (api["status"], api["code"]) == ("fail", "PROXY_TLS_INSPECTION"), api
    assert ca.subject in api["summary"] and f"127.0.0.1:{proxy.port}" in api["summary"], api
    assert r.rc == 1
    lab.client_failed(
        skopeo_inspect(ref, certs, penv), "x509: certificate signed by unknown authority"
    )
    # the inspection CA trusted where each looks: skopeo's cert dir, our --ca-bundle
    trusted = certs.parent / "certs-inspected"
    shutil.copytree(certs, trusted, dirs_exist_ok=True)
    shutil.copy(ca.file, trusted / "inspection.crt")
    both = bundle(d / "both.pem", pki.ca_file, ca.file)
    r = diag(penv, schema, ref, "--skip", "docker-certs", ca=both)
    c = r.check("proxy")
    assert c["status"] == "pass" and ca.subject in c["summary"], c
    assert "inspects TLS" in c["summary"] and "trusts that CA" in c["summary"], c
    assert r.rc == 0, [(x["id"], x["summary"]) for x in r.report["checks"] if x["status"] != "pass"]
    lab.client_ok(skopeo_inspect(ref, trusted, penv))


# --------------------------------------------------------- scheme written wrong, both ways
def test_https_url_for_plain_tinyproxy(far, env, schema, pki, tmp_path):
    """https:// for tinyproxy: skopeo says `first record does not look like a TLS handshake`,
    and so do we; http:// works for both."""
    server, certs, _ = far
    port = int(server.rsplit(":", 1)[1])
    # tinyproxy answers a request it cannot read after its timeout (here 1 s): the client sees
    # that HTTP answer while it waits for the proxy's TLS handshake
    tp = lab.start_tinyproxy(tmp_path / "tp", connect_ports=[port], timeout=1)
    try:
        ref = f"{server}/gt/app:1"
        penv = {**env, "HTTPS_PROXY": f"https://127.0.0.1:{tp.port}"}
        theirs = lab.client_failed(
            skopeo_inspect(ref, certs, penv),
            "proxyconnect tcp: tls: first record does not look like a TLS handshake",
        )
        r = diag(penv, schema, ref, "--skip", "docker-certs", ca=pki.ca_file)
        c = r.check("proxy")
        assert (c["status"], c["code"]) == ("fail", "PROXY_SCHEME_MISMATCH"), c
        assert "first record does not look like a TLS handshake" in c["summary"], (c, theirs)
        assert c["faq"][0] == "proxy-https-scheme"
        assert f"http://127.0.0.1:{tp.port}" in c["remediation"][0]
        assert r.rc == 1
        penv = {**env, "HTTPS_PROXY": f"http://127.0.0.1:{tp.port}"}
        lab.client_ok(skopeo_inspect(ref, certs, penv))
        r = diag(penv, schema, ref, "--skip", "docker-certs", ca=pki.ca_file)
        assert r.check("proxy")["status"] == "pass" and r.rc == 0, r.check("proxy")
    finally:
        tp.stop()


def test_http_url_for_a_proxy_that_speaks_tls(far, env, schema, pki):
    """http:// for a proxy that listens with TLS: skopeo sends its CONNECT in clear text and
    the proxy hangs up; we say that, in skopeo's words. https:// works for both."""
    server, certs, _ = far
    cert, key = pki.leaf("tls-proxy", "127.0.0.1")
    listen = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    listen.load_cert_chain(cert, key)
    with tlsproxy.connect_proxy(lambda host, port: "tunnel", listen_tls=listen) as proxy:
        ref = f"{server}/gt/app:1"
        plain = proxy.url.replace("https://", "http://")
        penv = {**env, "HTTPS_PROXY": plain}
        lab.client_failed(skopeo_inspect(ref, certs, penv), "read: connection reset by peer")
        r = diag(penv, schema, ref, "--skip", "docker-certs", ca=pki.ca_file)
        c = r.check("proxy")
        assert (c["status"], c["code"]) == ("fail", "PROXY_SCHEME_MISMATCH"), c
        assert "speaks TLS" in c["summary"] and "connection reset by peer" in c["summary"], c
        assert c["faq"][0] == "proxy-tls-scheme"
        assert proxy.url in c["remediation"][0]
        penv = {**env, "HTTPS_PROXY": proxy.url}
        lab.client_ok(skopeo_inspect(ref, certs, penv))
        r = diag(penv, schema, ref, "--skip", "docker-certs", ca=pki.ca_file)
        assert r.check("proxy")["status"] == "pass", r.check("proxy")
        assert r.rc == 0, [
            (x["id"], x["summary"]) for x in r.report["checks"] if x["status"] != "pass"
        ]


# ------------------------------------------------------------- a proxy that drops the token
@pytest.fixture(scope="module")
def token_registry(far, tmp_path_factory, pki):
    """A registry in token mode on 198.18.6.1 whose realm is the token server on the same
    address, another port (anonymous pulls of gt/app granted)."""
    d = tmp_path_factory.mktemp("token-proxied")
    signer = ts_mod.Signer.create(d)
    server = ts_mod.TokenServer(signer, service="registry.test", host=HOST_IP)
    cert, key = pki.leaf("token-proxied", HOST_IP)
    with ts_mod.serve(server, cert, key):
        reg = lab.start_registry(
            d / "registry",
            cert,
            key,
            host=HOST_IP,
            extra=ts_mod.token_auth_config(server.realm, server.service, signer.cert_file),
        )
        setup = signer.setup_token("gt/app")
        lab.push_real_image(
            f"https://{HOST_IP}:{reg.port}",
            "gt/app",
            "1",
            ca_file=pki.ca_file,
            headers={"Authorization": f"Bearer {setup}"},
        )
        server.grant("anonymous", "gt/app", "pull")
        yield f"{HOST_IP}:{reg.port}", server
        reg.stop()


def test_proxy_that_resets_the_token_request(far, token_registry, env, schema, pki, tmp_path):
    """The proxy opens a tunnel to the registry and resets the one to its token service: skopeo
    and docker pull (the same proxy in the daemon's drop-in) get the 401 and then `connection
    reset by peer` on the token request; we name the proxy, the token host, and the reset. With
    the token host let through, all pass."""
    _, certs, _ = far
    server, tokens = token_registry
    token_port = tokens.port
    blocked = {"on": True}

    def rule(host: str, port: int) -> str:
        return "reset" if blocked["on"] and port == token_port else "tunnel"

    with tlsproxy.connect_proxy(rule) as proxy:
        penv = {**env, "HTTPS_PROXY": proxy.url}
        ref = f"{server}/gt/app:1"
        theirs = lab.client_failed(
            skopeo_inspect(ref, certs, penv), "/token?", "connection reset by peer"
        )
        r = diag(penv, schema, ref, "--skip", "docker-certs", ca=pki.ca_file)
        assert r.check("api")["status"] == "pass" and r.check("proxy")["status"] == "pass"
        c = r.check("auth-challenge")
        assert (c["status"], c["code"]) == ("fail", "PROXY_TOKEN_REFUSED"), c
        assert f"{HOST_IP}:{token_port}" in c["summary"], c
        assert f"127.0.0.1:{proxy.port}" in c["summary"], c
        assert "connection reset by peer" in c["summary"], (c, theirs)
        assert c["faq"][0] == "proxy-token-service" and "CONNECT" in c["remediation"][0]
        assert r.rc == 1
        # the same proxy as the docker daemon's, from a drop-in: docker pull and our
        # daemon-proxy verdict (our own environment has no proxy) fail alike
        root = docker_root(tmp_path, f'Environment="HTTPS_PROXY={proxy.url}"')
        trust_in_certs_d(root, server, pki.ca_file)
        with dockerd_from_root(root) as host:
            lab.client_failed(pull(host, ref), "/token?", "connection reset by peer")
            args = (ref, "--host-root", str(root), "--docker-host", host)
            r = diag(env, schema, *args, ca=pki.ca_file)
            c = r.check("daemon-proxy")
            assert (c["status"], c["code"]) == ("fail", "PROXY_TOKEN_REFUSED"), c
            assert f"{HOST_IP}:{token_port}" in c["summary"], c
            assert "connection reset by peer" in c["summary"] and r.rc == 1, c
            blocked["on"] = False
            lab.client_ok(pull(host, ref))
            r = diag(env, schema, *args, ca=pki.ca_file)
            assert r.check("daemon-proxy")["status"] == "pass", r.check("daemon-proxy")
            assert r.rc == 0, [
                (x["id"], x["summary"]) for x in r.report["checks"] if x["status"] != "pass"
            ]
        lab.client_ok(skopeo_inspect(ref, certs, penv))
        r = diag(penv, schema, ref, "--skip", "docker-certs", ca=pki.ca_file)
        assert r.check("auth-challenge")["status"] == "pass", json.dumps(r.check("auth-challenge"))
        assert r.rc == 0, [
            (x["id"], x["summary"]) for x in r.report["checks"] if x["status"] != "pass"
        ]


# ------------------------------------------------- the daemon's proxy from a systemd drop-in
def test_inspecting_daemon_proxy_in_a_dropin_beside_docker_pull(
    far, inspection, env, schema, pki, tmp_path
):
    """dockerd's proxy (the drop-in) inspects TLS: docker pull fails with x509 unknown authority
    until the inspection CA is in /etc/docker/certs.d/HOST:PORT/; our daemon-proxy verdict
    fails, then passes, naming the CA both times. Our own environment has no proxy."""
    server, _, _ = far
    proxy, ca = inspection
    root = docker_root(tmp_path, f'Environment="HTTPS_PROXY={proxy.url}"')
    trust_in_certs_d(root, server, pki.ca_file)
    ref = f"{server}/gt/app:1"
    with dockerd_from_root(root) as host:
        lab.client_failed(pull(host, ref), "x509: certificate signed by unknown authority")
        args = (ref, "--host-root", str(root), "--docker-host", host)
        r = diag(env, schema, *args, ca=pki.ca_file)
        c = r.check("daemon-proxy")
        assert (c["status"], c["code"]) == ("fail", "PROXY_TLS_INSPECTION"), c
        assert ca.subject in c["summary"] and f"/etc/docker/certs.d/{server}/" in c["summary"]
        assert "docker.service drop-in" in c["summary"], c
        assert "daemon's own network" in c["summary"], c
        assert c["remediation"][1].startswith("docker: copy the CA to /etc/docker/certs.d/")
        assert r.rc == 1
        trust_in_certs_d(root, server, ca.file)
        lab.client_ok(pull(host, ref))
        r = diag(env, schema, *args, ca=pki.ca_file)
        c = r.check("daemon-proxy")
        assert c["status"] == "pass" and ca.subject in c["summary"], c
        assert r.rc == 0, [
            (x["id"], x["summary"]) for x in r.report["checks"] if x["status"] != "pass"
        ]


def test_dead_daemon_proxy_in_a_dropin_fails_docker_and_us(
    far, env, schema, pki, dns_server, tmp_path
):
    """The drop-in names a proxy nothing listens on and NO_PROXY names the registry's address:
    docker pull by the name (proxied) fails, and so does our verdict, with exit 1; by the
    address (NO_PROXY) both pass."""
    server, _, _ = far
    port = server.rsplit(":", 1)[1]
    dead = lab.closed_port()
    hosts = f"127.0.0.1 localhost\n{HOST_IP} registry.test\n"
    root = docker_root(
        tmp_path,
        f'Environment="HTTPS_PROXY=http://127.0.0.1:{dead}" "NO_PROXY={HOST_IP}"',
        hosts=hosts,
    )
    by_name = f"registry.test:{port}"
    trust_in_certs_d(root, by_name, pki.ca_file)
    trust_in_certs_d(root, server, pki.ca_file)
    with dockerd_from_root(root) as host:
        lab.client_failed(
            pull(host, f"{by_name}/gt/app:1"),
            "proxyconnect",
            f"127.0.0.1:{dead}",
            "connection refused",
        )
        more = (
            "--host-root",
            str(root),
            "--docker-host",
            host,
            "--nameserver",
            dns_server.nameserver,
        )
        r = diag(env, schema, f"{by_name}/gt/app:1", *more, ca=pki.ca_file)
        c = r.check("daemon-proxy")
        assert (c["status"], c["code"]) == ("fail", "DAEMON_PROXY_ERROR"), c
        assert f"127.0.0.1:{dead}" in c["summary"] and "connection refused" in c["summary"], c
        assert "docker.service drop-in" in c["summary"] and "daemon's own network" in c["summary"]
        assert c["evidence"]["vantage"]["shares_network"] is True
        assert r.rc == 1
        lab.client_ok(pull(host, f"{server}/gt/app:1"))
        r = diag(env, schema, f"{server}/gt/app:1", *more, ca=pki.ca_file)
        c = r.check("daemon-proxy")
        assert c["status"] == "pass" and f"NO_PROXY ({HOST_IP}) covers it" in c["summary"], c
        assert r.rc == 0, [
            (x["id"], x["summary"]) for x in r.report["checks"] if x["status"] != "pass"
        ]


def test_where_the_daemon_proxy_was_tried_from(far, env, schema, pki, tmp_path):
    """Without a daemon socket the host root's PID 1 tells: in this network namespace, a dead
    daemon proxy fails the verdict; in another, it stays a warning that says why."""
    server, _, _ = far
    dead = lab.closed_port()
    ns = f"rdpx{os.getpid() % 10000}"  # the namespace the far fixture made
    for target, status in ((Path("/proc/self/ns/net"), "fail"), (Path(f"/run/netns/{ns}"), "warn")):
        root = docker_root(tmp_path, f'Environment="HTTPS_PROXY=http://127.0.0.1:{dead}"')
        (root / "proc" / "1" / "ns").mkdir(parents=True)
        (root / "proc" / "1" / "ns" / "net").symlink_to(target)
        r = diag(env, schema, f"{server}/gt/app:1", "--host-root", str(root), ca=pki.ca_file)
        c = r.check("daemon-proxy")
        assert (c["status"], c["code"]) == (status, "DAEMON_PROXY_ERROR"), c
        if status == "fail":
            assert "host root's network" in c["summary"] and r.rc == 1, c
        else:
            assert "another network namespace" in c["summary"], c
            assert c["evidence"]["vantage"]["shares_network"] is False


# ------------------------------------------------------------- what meets hostile input
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_proxy_urls_never_crash_and_never_show_a_password(text):
    parsed = ProxyUrl.parse(text)
    if parsed is not None:
        assert "@" not in parsed.shown and parsed.port > 0
    if "://" in text:  # a proxy as /info masks it compares equal to the configured one
        assert "@" not in _no_userinfo(text).split("://", 1)[1].split("/", 1)[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_certificates_and_proxy_answers(data):
    assert CertSeen.from_der(data) is None or CertSeen.from_der(data).sha256
    quoted = _go_quote(data)
    assert quoted.startswith('"') and quoted.endswith('"') and quoted.isascii()


@pytest.mark.parametrize(
    "kind",
    [
        "ok",
        "refused",
        "timeout",
        "dns",
        "unreachable",
        "auth",
        "denied",
        "reset",
        "closed",
        "garbage",
        "https-for-plain",
        "http-for-tls",
        "proxy-cert",
        "proxy-tls",
        "tls",
        "other",
    ],
)
@pytest.mark.parametrize("token", [False, True])
def test_every_probe_result_has_a_verdict_with_a_known_faq_key(kind, token):
    from diagnose import faq
    from diagnose.models import Status
    from diagnose.proxy import ProxyRole, judge_tunnel

    role = ProxyRole(
        who="the proxy 127.0.0.1:3128 (from the environment HTTPS_PROXY)",
        proxy="http://127.0.0.1:3128",
        setting="HTTPS_PROXY",
        no_proxy="",
        trust="this host's trust store",
        docker=False,
        error_code=Code.PROXY_ERROR,
        bad=Status.FAIL,
    )
    f = judge_tunnel(Probe(kind, "words", "go words"), None, role, "r.example", 443, token=token)
    assert f.status in (Status.PASS, Status.FAIL)
    assert (f.status is Status.PASS) == (kind in ("ok",)), (kind, f)
    assert set(f.faq) <= set(faq.load()) and (f.code or f.status is Status.PASS)
