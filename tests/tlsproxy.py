"""A CONNECT proxy written for the tests: it opens tunnels as any HTTP proxy does, and for the
targets it is told to inspect it does what corporate TLS-inspecting proxies do: it ends the
client's TLS itself with a certificate for the requested host, signed by its own "inspection
CA" made at test time, opens TLS of its own to the real server, and relays the bytes between the
two. It can also refuse a target (403), reset the connection when asked for one, or listen with
TLS itself (a proxy that takes https:// URLs). Loopback only; every wait is bounded."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme

IDLE_S = 30.0
HEAD_LIMIT = 16 * 1024

Rule = Callable[[str, int], str]  # (host, port) -> "tunnel", "inspect", "deny" or "reset"


@dataclass
class InspectionCA:
    """The CA a TLS-inspecting proxy signs its certificates with, as a file clients may trust."""

    ca: trustme.CA
    file: Path
    subject: str
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def context_for(self, host: str) -> ssl.SSLContext:
        """A server context presenting a certificate for host, made on first use."""
        with self._lock:
            if host not in self._contexts:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                self.ca.issue_cert(host).configure_cert(ctx)
                self._contexts[host] = ctx
            return self._contexts[host]


def make_inspection_ca(directory: Path, name: str = "Example Corp TLS Inspection") -> InspectionCA:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=name, organization_unit_name="Proxy CA")
    path = directory / "inspection-ca.crt"
    ca.cert_pem.write_to_path(str(path))
    from cryptography import x509

    subject = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject.rfc4514_string()
    return InspectionCA(ca, path, subject)


@dataclass
class ConnectProxy:
    port: int
    connects: list[tuple[str, int, str]]  # (host, port, what the proxy did)
    url: str


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < HEAD_LIMIT:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Relay both ways until one side closes or nothing moves for IDLE_S. TLS sockets may hold
    decrypted bytes that select does not see (pending()): those are drained first."""
    peers = {a: b, b: a}
    while True:
        ready = [s for s in peers if isinstance(s, ssl.SSLSocket) and s.pending()]
        if not ready:
            ready, _, _ = select.select(list(peers), [], [], IDLE_S)
            if not ready:
                return
        for s in ready:
            try:
                data = s.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                peers[s].sendall(data)
            except OSError:
                return


def _serve_one(
    client: socket.socket,
    rule: Rule,
    inspection: InspectionCA | None,
    upstream: ssl.SSLContext | None,
    listen_tls: ssl.SSLContext | None,
    log: list[tuple[str, int, str]],
) -> None:
    client.settimeout(10)
    conn: socket.socket = client
    try:
        if listen_tls is not None:
            conn = listen_tls.wrap_socket(client, server_side=True)
        head = _read_head(conn)
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or parts[0] != "CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host, _, port_text = parts[1].rpartition(":")
        host, port = host.strip("[]"), int(port_text)
        action = rule(host, port)
        log.append((host, port, action))
        if action == "deny":
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        if action == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        far = socket.create_connection((host, port), timeout=10)
        try:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if action == "inspect":
                assert inspection is not None and upstream is not None
                conn = inspection.context_for(host).wrap_socket(conn, server_side=True)
                far = upstream.wrap_socket(far, server_hostname=host)
            conn.settimeout(IDLE_S)
            far.settimeout(IDLE_S)
            _pump(conn, far)
        finally:
            far.close()
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.close()
        with contextlib.suppress(OSError):
            client.close()


@contextlib.contextmanager
def connect_proxy(
    rule: Rule,
    *,
    inspection: InspectionCA | None = None,
    upstream_ca: Path | None = None,
    listen_tls: ssl.SSLContext | None = None,
) -> Iterator[ConnectProxy]:
    """The proxy on a loopback port. rule(host, port) says what to do with each CONNECT;
    "inspect" needs the inspection CA and the CA that signed the real server's certificate."""
    upstream = ssl.create_default_context(cafile=str(upstream_ca)) if upstream_ca else None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    log: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=_serve_one,
                args=(client, rule, inspection, upstream, listen_tls, log),
                daemon=True,
            ).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    scheme = "https" if listen_tls is not None else "http"
    try:
        yield ConnectProxy(port, log, f"{scheme}://127.0.0.1:{port}")
    finally:
        stop.set()
        thread.join(5)
        listener.close()
