"""Real parts for the tests: a CA, the distribution registry, dnsmasq, and TLS/HTTP/TCP servers
that misbehave in the ways registries and networks do. Everything listens on loopback only and
every server stops when its test ends."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import trustme

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "diagnose" / "schema" / "report-v1.json"
REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry")
DNSMASQ_BIN = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


# --------------------------------------------------------------------------------------- PKI
@dataclass
class Pki:
    """A CA made at test time and the leaf certificates the tests need, as files."""

    dir: Path
    ca: trustme.CA
    ca_file: Path
    files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def leaf(
        self,
        name: str,
        *identities: str,
        ca: trustme.CA | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        rsa: bool = False,
    ) -> tuple[Path, Path]:
        if name in self.files:
            return self.files[name]
        issuer = ca or self.ca
        kwargs: dict[str, Any] = {}
        if not_before is not None:
            kwargs["not_before"] = not_before
        if not_after is not None:
            kwargs["not_after"] = not_after
        if rsa:
            kwargs["key_type"] = trustme.KeyType.RSA
        cert = issuer.issue_cert(*identities, **kwargs)
        cert_file, key_file = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        with cert_file.open("wb") as fh:
            for blob in cert.cert_chain_pems:
                fh.write(blob.bytes())
        cert.private_key_pem.write_to_path(str(key_file))
        self.files[name] = (cert_file, key_file)
        return cert_file, key_file


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="registry-diagnose test CA")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(directory, ca, ca_file)


GOOD_NAMES = ("registry.test", "alias.test", "testacr1.azurecr.io", "localhost", "127.0.0.1")


# ---------------------------------------------------------------------------------- registry
@dataclass
class Registry:
    port: int
    proc: subprocess.Popen[bytes]
    root: Path
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_registry(
    directory: Path,
    cert: Path,
    key: Path,
    *,
    extra: str = "",
    storage_extra: str = "",
    log_requests: bool = False,
    host: str = "127.0.0.1",
    netns: str | None = None,
    port: int | None = None,
) -> Registry:
    """The CNCF distribution registry from Debian, TLS on a loopback port (or, with netns, on
    an address inside a network namespace the tests made)."""
    if REGISTRY_BIN is None:
        raise RuntimeError("docker-registry is not installed (Debian package docker-registry)")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = directory / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: {"info" if log_requests else "error"}
  accesslog:
    disabled: {"false" if log_requests else "true"}
storage:
  filesystem:
    rootdirectory: {directory / "data"}
  delete:
    enabled: true
{storage_extra}http:
  addr: {host}:{port}
  secret: test-only-not-a-secret
  tls:
    certificate: {cert}
    key: {key}
validation:
  manifests:
    urls:
      allow:
        - ^https://
{extra}"""
    )
    log = directory / "registry.log"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log.open("wb") as fh:
        proc = subprocess.Popen([*prefix, REGISTRY_BIN, "serve", str(config)], stdout=fh, stderr=fh)
    try:
        wait_port(port, host=host)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"the registry did not start: {log.read_text()[-2000:]}") from None
    return Registry(port, proc, directory, log)


# ----------------------------------------------------------------------------------- dnsmasq
@dataclass
class Dns:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


TEST_ZONE = [
    "--local=/test/",
    "--host-record=registry.test,127.0.0.1",
    "--host-record=other.test,127.0.0.1",
    # a CNAME chain: alias.test -> hop.test -> registry.test
    "--cname=alias.test,hop.test",
    "--cname=hop.test,registry.test",
    # a private endpoint: the name points through privatelink to a private address
    "--cname=myacr.test,myacr.privatelink.test",
    "--host-record=myacr.privatelink.test,10.20.30.40",
    "--host-record=internal.test,192.168.77.7",
    # an ACR-looking login server on loopback, for the ACR-only paths
    "--host-record=testacr1.azurecr.io,127.0.0.1",
]
# A validating resolver whose upstream cannot prove anything: every answer is bogus -> SERVFAIL.
ROOT_ANCHOR = (
    "--trust-anchor=.,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
)


def dual_free_port() -> int:
    """A port free for both UDP and TCP (a DNS server binds both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def start_dnsmasq(directory: Path, *records: str) -> Dns:
    """A real dnsmasq on a loopback port with the given options (records, zones, upstreams)."""
    last = ""
    for _ in range(5):  # a port can still be taken between choosing it and dnsmasq binding it
        try:
            return _start_dnsmasq(directory, *records)
        except RuntimeError as exc:
            last = str(exc)
    raise RuntimeError(last)


def _start_dnsmasq(directory: Path, *records: str) -> Dns:
    if DNSMASQ_BIN is None:
        raise RuntimeError("dnsmasq is not installed (Debian package dnsmasq-base)")
    directory.mkdir(parents=True, exist_ok=True)
    port = dual_free_port()
    args = [
        DNSMASQ_BIN,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--user=root",
        "--pid-file=",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--port={port}",
        "--log-facility=" + str(directory / f"dnsmasq-{port}.log"),
        *records,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 10
    import dns.message
    import dns.query

    while time.monotonic() < end:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"dnsmasq exited: {err}")
        with contextlib.suppress(Exception):
            q = dns.message.make_query("probe.invalid", "A")
            dns.query.udp(q, "127.0.0.1", port=port, timeout=0.3)
            return Dns(port, proc)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("dnsmasq did not answer")


@contextlib.contextmanager
def silent_udp() -> Iterator[int]:
    """A DNS 'server' that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


# ------------------------------------------------------------------------- TLS/HTTP servers
class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.requests.append({"path": self.path, "headers": dict(self.headers)})  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        status, headers, body = self.routes.get(path, (404, {}, b'{"errors":[]}'))
        self.send_response_only(status)
        sent_date = False
        for k, v in headers.items():
            self.send_header(k, v)
            sent_date |= k.lower() == "date"
        if not sent_date:
            self.send_header("Date", self.date_time_string())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Server:
    port: int
    stop: Any
    requests: list[dict[str, Any]] = field(default_factory=list)


def server_context(cert: Path, key: Path, *, legacy_only: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    if legacy_only:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


@contextlib.contextmanager
def http_server(
    routes: dict[str, tuple[int, dict[str, str], bytes]], tls: ssl.SSLContext | None
) -> Iterator[Server]:
    """An HTTP(S) server answering fixed routes, on loopback."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.requests = []  # type: ignore[attr-defined]
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield Server(httpd.server_address[1], httpd.shutdown, httpd.requests)  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def tcp_server(mode: str) -> Iterator[int]:
    """Raw TCP behaviours: 'silent' accepts and never speaks; 'reset' accepts and resets."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    lsock.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except (TimeoutError, OSError):
                continue
            if mode == "reset":
                with contextlib.suppress(OSError):
                    conn.recv(1024)  # wait for the ClientHello, then abort
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                conn.close()
            else:
                held.append(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield int(lsock.getsockname()[1])
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        lsock.close()


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: SYNs are dropped, so connecting times out."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = int(lsock.getsockname()[1])
    fillers = []
    for _ in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError, OSError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def closed_port() -> int:
    return free_port()


# ---------------------------------------------------------------------------- running the CLI
@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def report(self) -> dict[str, Any]:
        return json.loads(self.out)

    def check(self, check_id: str, registry: str | None = None) -> dict[str, Any]:
        for c in self.report["checks"]:
            if c["id"] == check_id and (registry is None or c["registry"] == registry):
                return c
        raise KeyError(f"no result for {check_id}: {self.out[:2000]}")


def clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "DOCKER_CONFIG")
    }
    env["HOME"] = str(home)
    env["NO_COLOR"] = "1"
    env["REGISTRY_DIAGNOSE_STRICT_CODES"] = "1"  # a code a check does not declare is an error
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


_EMPTY_ROOT: Path | None = None


def empty_root() -> Path:
    """A host root with nothing in it but a hosts file: a machine without docker."""
    global _EMPTY_ROOT
    if _EMPTY_ROOT is None:
        import tempfile

        _EMPTY_ROOT = Path(tempfile.mkdtemp(prefix="rd-empty-root-"))
        (_EMPTY_ROOT / "etc").mkdir()
        (_EMPTY_ROOT / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    return _EMPTY_ROOT


RUN_COMMANDS = ("check-health", "preflight", "bundle")


def _with_host_root(args: tuple[str, ...]) -> tuple[str, ...]:
    """Unless a test names a host root, the host is described by an empty one, so that this
    machine's own docker (installed, running or not) never changes a result."""
    if args and args[0] in RUN_COMMANDS and "--host-root" not in args:
        return (*args, "--host-root", str(empty_root()))
    return args


def diagnose(
    *args: str,
    env: dict[str, str],
    timeout: float = 90,
    stdin: str | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run the CLI in this process, as `diagnose.cli.run` runs it for the installed command,
    with its own streams, environment and working directory. A run that needs other installed
    packages (PYTHONPATH in env) runs in a process of its own (`diagnose_process`)."""
    if "PYTHONPATH" in env:
        return diagnose_process(*args, env=env, timeout=timeout, stdin=stdin, cwd=cwd)
    import io

    from diagnose import secrets
    from diagnose.cli import run
    from diagnose.environment import Environment

    args = _with_host_root(args)
    out, err = io.StringIO(), io.StringIO()
    environment = Environment(
        stdin=io.BytesIO((stdin or "").encode()),
        stdout=out,
        stderr=err,
        environ=dict(env),
        cwd=cwd or ROOT,
    )
    known = secrets.known_secrets()
    t0 = time.monotonic()
    try:
        rc = run(list(args), environment)
    finally:
        secrets.forget_all_but(known)  # each run's secrets are its own, as in a process
    return Run(rc, out.getvalue(), err.getvalue(), time.monotonic() - t0)


def diagnose_process(
    *args: str,
    env: dict[str, str],
    timeout: float = 90,
    stdin: str | None = None,
    cwd: Path | None = None,
) -> Run:
    """Run the installed command in a process of its own (what a user runs)."""
    args = _with_host_root(args)
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "diagnose", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        input=stdin,
        cwd=str(cwd or ROOT),
    )
    return Run(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


# ------------------------------------------------------------------------ registry content
def upload_blob(
    session: Any,
    base: str,
    repo: str,
    data: bytes,
    *,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> str:
    """A monolithic blob upload (POST, then PUT with the digest); the blob's digest."""
    import hashlib

    import requests

    hdrs = dict(headers or {})
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = session.post(f"{base}/v2/{repo}/blobs/uploads/", headers=hdrs, auth=auth, timeout=10)
    assert r.status_code == 202, (r.status_code, r.text)
    loc = requests.compat.urljoin(base, r.headers["Location"])
    sep = "&" if "?" in loc else "?"
    r = session.put(
        f"{loc}{sep}digest={digest}",
        data=data,
        auth=auth,
        headers={**hdrs, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def push_image(
    base: str,
    repo: str,
    tag: str,
    *,
    ca_file: Path,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    layers: list[bytes] | None = None,
    foreign: bool = False,
) -> dict[str, Any]:
    """Push a small image with the registry API (monolithic blob uploads, schema2 manifest)."""

    import requests

    hdrs = dict(headers or {})
    s = requests.Session()
    s.verify = str(ca_file)
    s.trust_env = False

    def put_blob(data: bytes) -> str:
        return upload_blob(s, base, repo, data, headers=hdrs, auth=auth)

    layers = layers if layers is not None else [b"layer-" + tag.encode() * 64]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    cfg_digest = put_blob(config)
    layer_desc = []
    for data in layers:
        layer_desc.append(
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(data),
                "digest": put_blob(data),
            }
        )
    if foreign:
        layer_desc.append(
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "size": 1024,
                "digest": "sha256:" + "ab" * 32,
                "urls": ["https://foreign.invalid/layer.tar.gz"],
            }
        )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": cfg_digest,
        },
        "layers": layer_desc,
    }
    r = s.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        data=json.dumps(manifest).encode(),
        auth=auth,
        headers={**hdrs, "Content-Type": manifest["mediaType"]},
        timeout=10,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return manifest


def htpasswd_file(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file made by Apache's own htpasswd (bcrypt, as the registry requires)."""
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RuntimeError("htpasswd is not installed (Debian package apache2-utils)")
    lines = []
    for user, pw in users.items():
        out = subprocess.run([tool, "-Bbn", user, pw], capture_output=True, text=True, check=True)
        lines.append(out.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------- network namespaces (root)
@contextlib.contextmanager
def netns_host(
    host_ip: str = "198.18.0.1", ns_ip: str = "198.18.0.2", name: str | None = None
) -> Iterator[tuple[str, str]]:
    """A test host in a network namespace of our own, reached over a veth pair (198.18.0.0/15 is
    the range set aside for tests). Yields (namespace name, its address); always torn down."""
    name = name or f"rdt{os.getpid() % 100000}"
    host_if, ns_if = f"{name}h", f"{name}n"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if],
        ["ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    # a namespace or link left by a run that was killed would make every step below fail
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=10)
        yield name, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def docker_save_archive(path: Path, repo_tag: str) -> Path:
    """A one-layer image in `docker save` layout, made by hand (no build, no base image)."""
    import hashlib
    import io as _io
    import tarfile as tf

    layer = _io.BytesIO()
    with tf.open(fileobj=layer, mode="w") as t:
        data = b"hello from registry-diagnose\n"
        info = tf.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        t.addfile(info, _io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "registry-diagnose tests"}],
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [repo_tag], "Layers": ["layer/layer.tar"]}]
    ).encode()
    with tf.open(path, "w") as out:
        for name, blob in (
            ("manifest.json", manifest),
            (config_name, config),
            ("layer/layer.tar", layer_bytes),
        ):
            info = tf.TarInfo(name)
            info.size, info.mode, info.mtime = len(blob), 0o644, 0
            out.addfile(info, _io.BytesIO(blob))
    return path


def shape(netns: str, rate_mbit: float, delay_ms: float = 5.0) -> None:
    """Limit the registry-to-client direction (the namespace's egress) with tbf, and delay the
    other direction with netem, as a slow WAN link would."""
    ns_if, host_if = f"{netns}n", f"{netns}h"
    burst = max(32, int(rate_mbit * 1000 / 8 / 250))  # kbit: about 4 ms of traffic
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            ns_if,
            "root",
            "tbf",
            "rate",
            f"{rate_mbit}mbit",
            "burst",
            f"{burst}kbit",
            "latency",
            "200ms",
        ],
        check=True,
        capture_output=True,
        timeout=10,
    )
    # netem is a kernel module some machines lack: the delay is added where it exists
    subprocess.run(
        ["tc", "qdisc", "replace", "dev", host_if, "root", "netem", "delay", f"{delay_ms}ms"],
        capture_output=True,
        timeout=10,
    )


# ------------------------------------------------------------ images the real clients pull
def layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer tar (the clients detect compression, so a plain tar pulls)."""
    import io as _io
    import tarfile as tf

    buf = _io.BytesIO()
    with tf.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tf.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, _io.BytesIO(data))
    return buf.getvalue()


def push_real_image(
    base: str,
    repo: str,
    tag: str | None,
    *,
    ca_file: Path,
    os_: str = "linux",
    arch: str = "amd64",
    payload: int = 0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An image docker, skopeo and containerd pull for real: a tar layer (with `payload` random
    bytes in a file) and a config whose diff_ids match it. tag None: put by digest only.
    Returns the manifest with `_digest` and `_size`."""
    import hashlib

    files = {"hello.txt": f"hello from {repo} for {os_}/{arch}\n".encode()}
    if payload:
        files["payload.bin"] = os.urandom(payload)
    layer = layer_tar(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": arch,
            "os": os_,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "registry-diagnose tests"}],
        }
    ).encode()
    import requests

    s = requests.Session()
    s.verify = str(ca_file)
    s.trust_env = False
    hdrs = dict(headers or {})

    def put_blob(data: bytes) -> str:
        return upload_blob(s, base, repo, data, headers=hdrs)

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": put_blob(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(layer),
                "digest": put_blob(layer),
            }
        ],
    }
    raw = json.dumps(manifest).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    r = s.put(
        f"{base}/v2/{repo}/manifests/{tag or digest}",
        data=raw,
        headers={**hdrs, "Content-Type": manifest["mediaType"]},
        timeout=10,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return {**manifest, "_digest": digest, "_size": len(raw)}


def push_real_index(
    base: str, repo: str, tag: str, platforms: list[tuple[str, str]], *, ca_file: Path
) -> dict[str, Any]:
    """An OCI image index of real images, one per (os, arch)."""
    import requests

    entries = []
    for os_, arch in platforms:
        m = push_real_image(base, repo, None, ca_file=ca_file, os_=os_, arch=arch)
        entries.append(
            {
                "mediaType": m["mediaType"],
                "digest": m["_digest"],
                "size": m["_size"],
                "platform": {"os": os_, "architecture": arch},
            }
        )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }
    r = requests.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        data=json.dumps(index),
        headers={"Content-Type": index["mediaType"]},
        verify=str(ca_file),
        timeout=10,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return index


# ------------------------------------------------------------- scripted fronts, per method
Answer = tuple[int, dict[str, str], bytes]


@contextlib.contextmanager
def scripted_https(answer: Any, tls: ssl.SSLContext) -> Iterator[Server]:
    """An HTTPS server whose every answer comes from answer(method, path, headers) -> Answer:
    for registry answers a distribution registry does not give (429, ACR-style 401)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 64 * 1024 * 1024))
            self.server.requests.append(  # type: ignore[attr-defined]
                {"method": self.command, "path": self.path, "headers": dict(self.headers)}
            )
            status, headers, body = answer(self.command, self.path, dict(self.headers))
            self.send_response_only(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Date", self.date_time_string())
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.requests = []  # type: ignore[attr-defined]
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield Server(httpd.server_address[1], httpd.shutdown, httpd.requests)  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def registry_errors(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


# ------------------------------------------------------------------- real proxies (Debian)
NGINX_BIN = shutil.which("nginx") or (
    "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
)
TINYPROXY_BIN = shutil.which("tinyproxy") or (
    "/usr/bin/tinyproxy" if Path("/usr/bin/tinyproxy").exists() else None
)


@dataclass
class Proc:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_nginx_front(
    directory: Path, cert: Path, key: Path, upstream_port: int, *, max_body: str = "1m"
) -> Proc:
    """nginx (Debian) terminating TLS in front of a registry on loopback, with a request body
    limit, as registries are commonly deployed."""
    if NGINX_BIN is None:
        raise RuntimeError("nginx is not installed (Debian package nginx-light)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(
        f"""user root;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_max_body_size {max_body};
    chunked_transfer_encoding on;
    location /v2/ {{
      proxy_pass https://127.0.0.1:{upstream_port};
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_read_timeout 60s;
    }}
  }}
}}
"""
    )
    log = directory / "stderr.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [NGINX_BIN, "-c", str(conf), "-p", str(directory), "-g", "daemon off;"],
            stdout=fh,
            stderr=fh,
        )
    try:
        wait_port(port)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"nginx did not start: {log.read_text()[-2000:]}") from None
    return Proc(port, proc, log)


def start_tinyproxy(
    directory: Path,
    *,
    basic_auth: tuple[str, str] | None = None,
    connect_ports: list[int],
    timeout: int = 30,
) -> Proc:
    """tinyproxy (Debian) on loopback: with basic_auth it answers 407 to a client without
    credentials; CONNECT goes only to connect_ports (others get 403). timeout: how long it
    waits for a client's request before it answers with an error."""
    if TINYPROXY_BIN is None:
        raise RuntimeError("tinyproxy is not installed (Debian package tinyproxy)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        "User root",
        "Group root",
        f"Port {port}",
        "Listen 127.0.0.1",
        f"Timeout {timeout}",
        f'LogFile "{directory}/tinyproxy.log"',
        "LogLevel Info",
        "MaxClients 20",
        "Allow 127.0.0.1",
        *[f"ConnectPort {p}" for p in connect_ports],
    ]
    if basic_auth:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    conf = directory / "tinyproxy.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = directory / "stderr.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([TINYPROXY_BIN, "-d", "-c", str(conf)], stdout=fh, stderr=fh)
    try:
        wait_port(port)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"tinyproxy did not start: {log.read_text()[-2000:]}") from None
    return Proc(port, proc, log)


@contextlib.contextmanager
def private_dockerd(
    directory: Path,
    config_file: Path,
    wrap: tuple[str, ...] = (),
    *,
    env: dict[str, str] | None = None,
    hosts_file: Path | None = None,
    binds: dict[Path, str] | None = None,
    own_root: bool = False,
) -> Iterator[str]:
    """dockerd (Debian docker.io) with its own data root, exec root and socket; yields the
    DOCKER_HOST to reach it. No bridge, no iptables: it only pulls and pushes.
    - `wrap` is put before the command (a mount namespace of the test's making);
    - `env`: more in its environment (a proxy: dockerd 20.10 reads no `proxies` from
      daemon.json);
    - `hosts_file` and `binds` (source -> existing target, /etc/docker for one): bind-mounted
      in a mount namespace of its own (unshare --mount), for this daemon alone, so that a test
      name resolves for it and the machine's files are never touched;
    - `own_root`: the data root is the config file's `data-root` (dockerd refuses the flag
      and the key together)."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeError("dockerd is not installed (Debian package docker.io)")
    sock = directory / "docker.sock"
    host = f"unix://{sock}"
    argv = [
        dockerd,
        f"--host={host}",
        *([] if own_root else [f"--data-root={directory / 'data'}"]),
        f"--exec-root={directory / 'exec'}",
        f"--pidfile={directory / 'docker.pid'}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--storage-driver=vfs",
        f"--config-file={config_file}",
    ]
    mounts = dict(binds or {})
    if hosts_file is not None:
        mounts[hosts_file] = "/etc/hosts"
    if mounts:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise RuntimeError("unshare is not installed (Debian package util-linux)")
        # unshare makes the new namespace's mounts private: the bind mounts stay in it
        import shlex

        script = " && ".join(
            f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}"
            for src, dst in mounts.items()
        )
        argv = [unshare, "--mount", "sh", "-c", f'{script} && exec "$@"', "dockerd", *argv]
    log_path = directory / "dockerd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*wrap, *argv], stdout=log, stderr=log, env={**os.environ, **(env or {})}
        )
    try:
        for _ in range(150):
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {log_path.read_text()[-2000:]}")
            if sock.exists():
                probe = ["docker", "-H", host, "version"]
                if subprocess.run(probe, capture_output=True, timeout=20).returncode == 0:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"dockerd did not start: {log_path.read_text()[-2000:]}")
        yield host
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a daemon the tests started, and kill it if it does not go in 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------ real clients: agreement on the reason
def client_failed(proc: subprocess.CompletedProcess[str], *reasons: str) -> str:
    """Assert that a real client (docker, skopeo, podman, ctr) failed and that its error text
    names the cause: every one of reasons (case-insensitive) is in its output. Returns that
    output, for further checks. A failure for some other reason is a disagreement."""
    text = f"{proc.stderr or ''}\n{proc.stdout or ''}"
    assert proc.returncode != 0, f"the client succeeded where it should fail: {text[-2000:]}"
    missing = [r for r in reasons if r.lower() not in text.lower()]
    assert not missing, f"the client failed, but not for {missing}: {text[-2000:]}"
    return text


def skopeo(
    *args: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """skopeo (Debian's), with no signature policy of the machine's in the way; `env` is its
    whole environment (this process's when None), `prefix` goes before the command (a mount
    namespace)."""
    exe = shutil.which("skopeo") or "skopeo"
    return subprocess.run(
        [*prefix, exe, "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def client_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Assert that a real client succeeded (its own words are shown when it did not)."""
    assert proc.returncode == 0, f"the client failed: {(proc.stderr or proc.stdout)[-2000:]}"


@contextlib.contextmanager
def registry_front(
    upstream_port: int, ca_file: Path, tls: ssl.SSLContext, rule: Any
) -> Iterator[Server]:
    """An HTTPS front on loopback (a scripted_https) that passes every request on to the real
    registry at upstream_port, unless rule(method, path, headers) answers it (an Answer)
    instead: a firewall that denies, a registry that redirects blobs to a storage host or
    refuses uploads. Requests go on without their body: the front is for pulls and refusals."""
    import http.client

    upstream_tls = ssl.create_default_context(cafile=str(ca_file))
    hop = {"connection", "keep-alive", "transfer-encoding", "content-length"}

    def answer(method: str, path: str, headers: dict[str, str]) -> Answer:
        ruled = rule(method, path, headers)
        if ruled is not None:
            return ruled  # type: ignore[no-any-return]
        conn = http.client.HTTPSConnection(
            "127.0.0.1", upstream_port, context=upstream_tls, timeout=60
        )
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in hop}
            conn.request(method, path, headers=sent)
            resp = conn.getresponse()
            got = {k: v for k, v in resp.getheaders() if k.lower() not in hop | {"date"}}
            return resp.status, got, resp.read()
        finally:
            conn.close()

    with scripted_https(answer, tls) as server:
        yield server


def push_foreign_image(
    base: str, repo: str, tag: str, *, ca_file: Path, blob_in_registry: bool
) -> dict[str, Any]:
    """A real image whose one layer is foreign (a Windows base layer's media type, with a URL
    nothing answers at): with blob_in_registry the registry holds the layer too (what a push
    from a daemon that allows nondistributable artifacts leaves), without it only the URL
    does. Returns the manifest with `_digest`."""
    import hashlib

    import requests

    layer = layer_tar({"foreign.txt": f"a foreign layer of {repo}:{tag}\n".encode()})
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    s = requests.Session()
    s.verify = str(ca_file)
    s.trust_env = False
    config_digest = upload_blob(s, base, repo, config)
    if blob_in_registry:
        upload_blob(s, base, repo, layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": config_digest,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "size": len(layer),
                "digest": diff_id,
                "urls": [f"https://127.0.0.1:{closed_port()}/{repo}/layer.tar"],
            }
        ],
    }
    raw = json.dumps(manifest).encode()
    r = s.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        data=raw,
        headers={"Content-Type": manifest["mediaType"]},
        timeout=10,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return {**manifest, "_digest": "sha256:" + hashlib.sha256(raw).hexdigest()}


# ------------------------------------------------------------------------ on a terminal
def run_on_pty(argv: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its stdin, stdout and stderr (as a person
    would); its exit code and all it wrote. Reads are bounded by timeout."""
    import pty
    import select

    master, slave = pty.openpty()
    p = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(ROOT), close_fds=True
    )
    os.close(slave)
    chunks = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    rc = p.wait(10)
    os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")
