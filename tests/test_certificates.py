"""Certificates as the Go clients judge them, on real servers: the variants registries get wrong
(a name only in the Common Name, a leaf sent without its intermediate, SHA-1, small RSA keys,
an extended key usage for clients, an intermediate constrained to other names), each made at
test time and served by the distribution registry itself, in a network namespace: docker
checks no certificate of a registry on a loopback address.

Our verdict stands beside four Go clients on the very same server: `docker pull` through a
private dockerd, `docker manifest inspect` (the docker CLI talks to the registry itself),
`skopeo inspect` and `ctr images pull` (Debian builds them with Go 1.19; the docker CLI may be
a Go 1.24 build). They run in a mount namespace of their own whose /etc/hosts
names the registry and whose /etc/docker holds the CA the test gives them; the host's files
are never touched. Where OpenSSL and Go disagree (the Common Name, RSA keys of 1024 bits, an
intermediate as trust anchor), the test shows OpenSSL's opposite verdict too."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests import certlab, lab
from tests.conftest import validate_report
from tests.test_runtimes import CTR, SKOPEO, containerd  # noqa: F401 (a fixture)

NAME = "certs.test"
NS_HOST, NS_ADDR = "198.19.77.1", "198.19.77.2"  # apart from the other suites' ranges
AIA = f"http://{NS_ADDR}/intermediate.crt"
LEGACY_CN = "x509: certificate relies on legacy Common Name field, use SANs instead"
UNKNOWN = "x509: certificate signed by unknown authority"
SHA1 = "insecure algorithm SHA1-RSA"
USAGE = "x509: certificate specifies an incompatible key usage"
CONSTRAINED = "is not authorized to sign for this name"


@dataclass(frozen=True)
class Case:
    """Our verdict on one server (tls check status and code), the words of Go's error, and
    whether the Go clients pull from it."""

    status: str
    code: str | None
    words: str | None
    pulls: bool
    trust: str = "root"  # the CA every client is given: the root, or the intermediate alone


CASES = {
    "good": Case("pass", None, None, True),
    "cn-only": Case("fail", "TLS_CERT_NO_SAN", LEGACY_CN, False),
    "no-intermediate": Case("fail", "TLS_CHAIN_INCOMPLETE", UNKNOWN, False),
    "with-intermediate": Case("pass", None, None, True),
    # the server of no-intermediate, each client holding the intermediate where it looks
    "intermediate-trusted": Case("pass", None, None, True, trust="intermediate"),
    "sha1": Case("fail", "TLS_CERT_WEAK", SHA1, False),
    "rsa1024": Case("pass", None, None, True),
    # Go 1.24 refuses it, but only in programs whose module targets Go 1.24 (rsa1024min):
    # no client here does, so they all pull, and we warn
    "rsa768": Case("warn", "TLS_CERT_WEAK", None, True),
    "client-auth-only": Case("fail", "TLS_CERT_USAGE", USAGE, False),
    "name-constrained": Case("fail", "TLS_CERT_NAME_CONSTRAINTS", CONSTRAINED, False),
}
# where OpenSSL, as Python's default context checks a certificate, says the opposite of Go
OPENSSL_DISAGREES = {"cn-only", "rsa1024", "intermediate-trusted"}


@dataclass
class Servers:
    ports: dict[str, int]
    root_pem: Path
    inter_pem: Path
    hosts: Path  # /etc/hosts of the Go clients' mount namespace
    host_root: Path  # --host-root of our runs: the same hosts file
    dir: Path

    def ca(self, case: str) -> Path:
        return self.inter_pem if CASES[case].trust == "intermediate" else self.root_pem


def namespaced(hosts: Path, *binds: tuple[Path, str]) -> tuple[str, ...]:
    """A command prefix: a private mount namespace whose /etc/hosts (and other binds) are
    the test's own."""
    mounts = [f"mount --bind {hosts} /etc/hosts"]
    mounts += [f"mount --bind {src} {dst}" for src, dst in binds]
    script = " && ".join(mounts) + ' && exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("root, iproute2 and unshare are needed")
    d = tmp_path_factory.mktemp("certificates")
    f = certlab.Factory(d / "pki")
    inter = f.ca("registry-diagnose x509 intermediate", f.root)
    constrained = f.ca("registry-diagnose constrained intermediate", f.root, permitted=("a.test",))
    no_inter = f.leaf(NAME, issuer=inter, aia=AIA)
    served = {
        "good": (f.leaf(NAME, NS_ADDR), ()),
        "cn-only": (f.leaf(NAME, san=False), ()),
        "no-intermediate": (no_inter, ()),
        "with-intermediate": (f.leaf(NAME, issuer=inter, aia=AIA), (inter,)),
        "intermediate-trusted": (no_inter, ()),
        "sha1": (f.leaf(NAME, sha1=True), ()),
        "rsa1024": (f.leaf(NAME, rsa_bits=1024), ()),
        "rsa768": (f.leaf(NAME, rsa_bits=768), ()),
        "client-auth-only": (f.leaf(NAME, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)), ()),
        "name-constrained": (f.leaf(NAME, issuer=constrained), (constrained,)),
    }
    cm = lab.netns_host(NS_HOST, NS_ADDR, name=f"rdx{os.getpid() % 10000}")
    try:
        ns, address = cm.__enter__()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces cannot be made here: {exc.stderr}")
    data = d / "data"  # one storage for all: the image is pushed once
    data.mkdir()
    registries, ports = [], {}
    try:
        for i, (case, (leaf, chain)) in enumerate(served.items()):
            rd = d / f"registry-{case}"
            rd.mkdir()
            (rd / "data").symlink_to(data)
            cert, key = f.files(case, leaf, *chain)
            registries.append(
                lab.start_registry(rd, cert, key, host=address, netns=ns, port=5101 + i)
            )
            ports[case] = 5101 + i
        root_pem = f.pem_file("root.pem", f.root)
        lab.push_real_image(f"https://{address}:{ports['good']}", "gt/app", "1.0", ca_file=root_pem)
        hosts = d / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{address} {NAME}\n")
        host_root = d / "hostroot"
        (host_root / "etc").mkdir(parents=True)
        shutil.copy(hosts, host_root / "etc/hosts")
        yield Servers(ports, root_pem, f.pem_file("intermediate.pem", inter), hosts, host_root, d)
    finally:
        for reg in registries:
            reg.stop()
        cm.__exit__(None, None, None)


def ref(servers: Servers, case: str) -> str:
    return f"{NAME}:{servers.ports[case]}/gt/app:1.0"


# ---------------------------------------------------------------------- the Go clients
@pytest.fixture(scope="module")
def docker_etc(servers):
    """/etc/docker of the Go clients: certs.d/<host:port>/ca.crt, per server."""
    etc = servers.dir / "docker-etc"
    for case, port in servers.ports.items():
        (etc / "certs.d" / f"{NAME}:{port}").mkdir(parents=True)
        shutil.copy(servers.ca(case), etc / "certs.d" / f"{NAME}:{port}" / "ca.crt")
    return etc


@pytest.fixture(scope="module")
def go_dockerd(servers, docker_etc):
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip("dockerd and the docker CLI are needed")
    d = servers.dir / "dockerd"
    d.mkdir()
    (d / "daemon.json").write_text("{}")
    wrap = namespaced(servers.hosts, (docker_etc, "/etc/docker"))
    try:
        with lab.private_dockerd(d, d / "daemon.json", wrap=wrap) as host:
            yield host
    except RuntimeError as exc:
        pytest.skip(str(exc))


def go_version(binary: str) -> tuple[int, int]:
    """The Go release a binary was built with, from its build info (Go 1.18 and later)."""
    path = shutil.which(binary) or binary
    data = Path(path).read_bytes()
    at = data.find(b"\xff Go buildinf:")
    if at < 0 or not data[at + 15] & 2:
        return (0, 0)
    size, shift, i = 0, 0, at + 32
    while True:  # a varint length, then the version string
        size |= (data[i] & 0x7F) << shift
        shift, i = shift + 7, i + 1
        if not data[i - 1] & 0x80:
            break
    major, minor = data[i : i + size].decode().removeprefix("go").split(".")[:2]
    return int(major), int(minor)


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env or {"PATH": os.environ["PATH"], "HOME": "/root"},
    )


def docker_pull(host: str, image: str) -> subprocess.CompletedProcess[str]:
    """The daemon pulls (Go 1.19): its own TLS, its own certs.d."""
    run(["docker", "-H", host, "rmi", "-f", image])
    return run(["docker", "-H", host, "pull", image])


def docker_cli(servers: Servers, docker_etc: Path, image: str) -> subprocess.CompletedProcess[str]:
    """The docker CLI talks to the registry itself for `manifest inspect` (Go 1.24)."""
    config = servers.dir / "docker-cli-config"
    config.mkdir(exist_ok=True)
    wrap = namespaced(servers.hosts, (docker_etc, "/etc/docker"))
    env = {"PATH": os.environ["PATH"], "HOME": "/root", "DOCKER_CONFIG": str(config)}
    return run([*wrap, "docker", "manifest", "inspect", image], env=env)


def skopeo_inspect(servers: Servers, case: str) -> subprocess.CompletedProcess[str]:
    cert_dir = servers.dir / "skopeo" / case
    cert_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(servers.ca(case), cert_dir / "ca.crt")
    wrap = namespaced(servers.hosts)
    argv = [*wrap, SKOPEO or "skopeo", "--insecure-policy", "inspect"]
    return run([*argv, f"--cert-dir={cert_dir}", f"docker://{ref(servers, case)}"])


def ctr_pull(servers: Servers, sock: Path, case: str) -> subprocess.CompletedProcess[str]:
    hp = f"{NAME}:{servers.ports[case]}"
    hosts_dir = servers.dir / "ctr" / case
    (hosts_dir / hp).mkdir(parents=True, exist_ok=True)
    shutil.copy(servers.ca(case), hosts_dir / hp / "ca.crt")
    (hosts_dir / hp / "hosts.toml").write_text(
        f'server = "https://{hp}"\n[host."https://{hp}"]\n  ca = "{hosts_dir / hp / "ca.crt"}"\n'
    )
    ns = f"c{time.monotonic_ns()}"
    argv = [*namespaced(servers.hosts), CTR or "ctr", "--address", str(sock), "-n", ns]
    return run([*argv, "images", "pull", "--hosts-dir", str(hosts_dir), ref(servers, case)])


def openssl_accepts(servers: Servers, case: str) -> bool:
    """Python's default context (OpenSSL, security level 2, the Common Name as a fallback, a
    self-signed root required): what our checks used to say."""
    ctx = ssl.create_default_context(cafile=str(servers.ca(case)))
    try:
        with socket.create_connection((NS_ADDR, servers.ports[case]), 5) as sock:
            ctx.wrap_socket(sock, server_hostname=NAME).close()
    except ssl.SSLError:
        return False
    return True


def ours(servers: Servers, case: str, env, dns_server, *extra: str) -> lab.Run:
    return lab.diagnose(
        "check-health",
        f"{NAME}:{servers.ports[case]}",
        "--ca-bundle",
        str(servers.ca(case)),
        "--nameserver",
        dns_server.nameserver,
        "--host-root",
        str(servers.host_root),
        "-f",
        "json",
        "-q",
        *extra,
        env=env,
    )


# ----------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("case", list(CASES))
def test_our_verdict_is_the_go_clients_verdict(
    case,
    servers,
    docker_etc,
    go_dockerd,
    containerd,  # noqa: F811 (the fixture)
    env,
    dns_server,
    schema,
):
    want = CASES[case]
    mirror = servers.host_root / "etc/docker"  # our host root holds dockerd's own /etc/docker
    if not mirror.exists():
        mirror.symlink_to(docker_etc)
    r = ours(servers, case, env, dns_server)
    validate_report(r.report, schema)
    tls = r.check("tls")
    assert (tls["status"], tls["code"]) == (want.status, want.code), tls
    assert r.rc == (0 if want.pulls else 1), r.out
    if want.words:
        assert want.words in tls["summary"], tls["summary"]
        assert tls["evidence"]["verify"]["go_error"] in tls["summary"]
    if want.pulls:
        assert r.check("api")["status"] == "pass", r.check("api")
    # docker's own trust (certs.d and the system store), judged by the same rules
    certs = r.check("docker-certs")
    assert certs["status"] != "fail" or certs["code"] == "DOCKER_CA_MISSING", certs
    if want.pulls:
        assert certs["status"] in ("pass", "skip"), certs
    image = ref(servers, case)
    theirs = {
        "docker pull (dockerd)": (go_version("dockerd"), docker_pull(go_dockerd, image)),
        "docker manifest inspect (the CLI)": (
            go_version("docker"),
            docker_cli(servers, docker_etc, image),
        ),
        "skopeo inspect": (go_version(SKOPEO or "skopeo"), skopeo_inspect(servers, case)),
        "ctr images pull": (go_version(CTR or "ctr"), ctr_pull(servers, containerd, case)),
    }
    go_error = tls["evidence"].get("verify", {}).get("go_error")
    for client, (go, p) in theirs.items():
        said = (p.stdout + p.stderr).replace('\\"', '"')  # skopeo's log quotes its quotes
        assert (p.returncode == 0) == want.pulls, (client, go, said)
        if want.words:
            assert want.words in said, (client, go, said)
            # the very words (before Go 1.24 the SHA-1 error adds a GODEBUG hint)
            if case != "sha1" or go >= (1, 24):
                assert go_error in said, (client, go, go_error, said)
    if case in OPENSSL_DISAGREES:
        assert openssl_accepts(servers, case) is not want.pulls


def test_an_incomplete_chain_names_the_missing_issuer_and_the_server_fix(servers, env, dns_server):
    tls = ours(servers, "no-intermediate", env, dns_server).check("tls")
    missing = tls["evidence"]["verify"]["missing_issuer"]
    assert missing["subject"] == "CN=registry-diagnose x509 intermediate,O=registry-diagnose tests"
    assert missing["authority_key_id"] in tls["summary"]
    assert missing["subject"] in tls["summary"] and missing["fetch_url"] == AIA
    assert tls["faq"][0] == "certificate-chain-incomplete"
    fix, meanwhile = tls["remediation"][:2]
    assert fix.startswith("Fix the server") and AIA in fix
    port = servers.ports["no-intermediate"]
    for where in (
        f"/etc/docker/certs.d/{NAME}:{port}/ca.crt",
        f"/etc/containers/certs.d/{NAME}:{port}/",
        f"/etc/containerd/certs.d/{NAME}:{port}/hosts.toml",
        "update-ca-certificates",
    ):
        assert where in meanwhile, meanwhile
    assert [c["subject"] for c in tls["evidence"]["chain_sent"]] == ["O=registry-diagnose tests"]


def test_podman_and_containerd_endpoints_are_judged_the_same_way(servers, env, dns_server):
    """registries-conf and containerd-hosts walk the registry with their own CA files: the
    same Go verdict, the fix for the server, and the intermediate where they look passes."""

    def runtimes(case: str, root: Path) -> lab.Run:
        return lab.diagnose(
            "check-health",
            ref(servers, case),
            "--host-root",
            str(root),
            "--runtime",
            "all",
            "--nameserver",
            dns_server.nameserver,
            "--checks",
            "registries-conf,containerd-hosts",
            "-f",
            "json",
            "-q",
            env=env,
        )

    for case in ("cn-only", "no-intermediate"):
        port = servers.ports[case]
        hp = f"{NAME}:{port}"
        root = servers.dir / f"runtime-root-{case}"
        (root / "etc").mkdir(parents=True)
        shutil.copy(servers.hosts, root / "etc/hosts")
        (root / "etc/containers/certs.d" / hp).mkdir(parents=True)
        (root / "etc/containers/registries.conf").write_text("")
        (root / "etc/containers/policy.json").write_text(
            '{"default":[{"type":"insecureAcceptAnything"}]}'
        )
        shutil.copy(servers.root_pem, root / "etc/containers/certs.d" / hp / "ca.crt")
        (root / "etc/containerd/certs.d" / hp).mkdir(parents=True)
        (root / "etc/containerd/config.toml").write_text("version = 2\n")
        (root / "etc/containerd/certs.d" / hp / "hosts.toml").write_text(
            f'server = "https://{hp}"\n[host."https://{hp}"]\n  ca = "/etc/containers/certs.d/{hp}/ca.crt"\n'
        )
        r = runtimes(case, root)
        podman, ctrd = r.check("registries-conf"), r.check("containerd-hosts")
        assert (podman["status"], podman["code"]) == ("fail", "RUNTIME_ENDPOINT_ERROR"), podman
        assert (ctrd["status"], ctrd["code"]) == ("fail", "CONTAINERD_HOSTS_ERROR"), ctrd
        words = LEGACY_CN if case == "cn-only" else UNKNOWN
        key = "certificate-legacy-cn" if case == "cn-only" else "certificate-chain-incomplete"
        for c in (podman, ctrd):
            assert words in c["summary"] and key in c["faq"], c
        if case == "no-intermediate":
            assert ctrd["remediation"][0].startswith("Fix the server"), ctrd
            # the intermediate where each of them looks: both pull, as skopeo and ctr do
            shutil.copy(servers.inter_pem, root / "etc/containers/certs.d" / hp / "ca.crt")
            r = runtimes(case, root)
            assert r.check("registries-conf")["status"] == "pass", r.check("registries-conf")
            assert r.check("containerd-hosts")["status"] == "pass", r.check("containerd-hosts")


def test_a_token_service_with_a_common_name_only_certificate(pki, tmp_path, env):
    """The realm is another endpoint every client uses: its certificate is judged the same
    way, and skopeo fails on it with the same words."""
    if SKOPEO is None:
        pytest.skip("skopeo is not installed")
    f = certlab.Factory(tmp_path / "pki")
    realm_cert = f.files("realm", f.leaf("localhost", san=False))
    with lab.http_server(
        {"/token": (200, {}, b'{"token": "t"}')}, lab.server_context(*realm_cert)
    ) as realm:
        challenge = f'Bearer realm="https://localhost:{realm.port}/token",service="certs"'

        def answer(method: str, path: str, headers: dict[str, str]) -> lab.Answer:
            return 401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, b"{}"

        front = lab.server_context(*f.files("front", f.leaf("127.0.0.1", "localhost")))
        with lab.scripted_https(answer, front) as srv:
            r = lab.diagnose(
                "check-health",
                f"127.0.0.1:{srv.port}",
                "--ca-bundle",
                str(f.pem_file("root.pem", f.root)),
                "-f",
                "json",
                "-q",
                env=env,
            )
            c = r.check("auth-challenge")
            assert (c["status"], c["code"]) == ("fail", "CONNECTIVITY_REALM_ERROR"), c
            assert LEGACY_CN in c["summary"] and c["faq"][0] == "certificate-legacy-cn", c
            cert_dir = tmp_path / "skopeo"
            cert_dir.mkdir()
            shutil.copy(tmp_path / "pki" / "root.pem", cert_dir / "ca.crt")
            p = run(
                [
                    SKOPEO,
                    "--insecure-policy",
                    "inspect",
                    f"--cert-dir={cert_dir}",
                    f"docker://127.0.0.1:{srv.port}/gt/app:1.0",
                ]
            )
    assert p.returncode != 0 and LEGACY_CN in p.stderr, p.stderr


def test_the_http_sessions_refuse_what_go_refuses_in_go_words(servers, env, dns_server):
    """With the tls check left out, the requests every other check makes (the api check here;
    token services and storage hosts alike) still refuse the chains Go refuses, and say why
    in Go's words; the chains Go accepts, OpenSSL's level 2 notwithstanding, they accept."""
    for case in ("cn-only", "sha1", "client-auth-only"):
        api = ours(servers, case, env, dns_server, "--skip", "tls").check("api")
        assert (api["status"], api["code"]) == ("fail", "CONNECTIVITY_ERROR"), api
        assert CASES[case].words in api["summary"], api["summary"]
    for case in ("rsa1024", "rsa768", "intermediate-trusted"):
        r = ours(servers, case, env, dns_server, "--skip", "tls")
        assert r.check("api")["status"] == "pass", r.check("api")
