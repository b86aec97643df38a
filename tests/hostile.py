"""Servers that misbehave on the wire, for the tests of transfers that break and of hostile
registries: a front that cuts a blob after N bytes (in front of the real registry), and a
scripted registry that trickles, never ends a body, sends a huge header, redirects in a loop
or answers with invalid UTF-8. Loopback only; every server stops when its test ends, and
every loop is bounded (by the peer closing, or by a few minutes at most)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

LIFETIME_S = 120.0  # no hostile connection outlives this, whatever the client does


@dataclass
class Front:
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def cutting_front(
    upstream_port: int, tls: ssl.SSLContext, digest: str, cut_after: int
) -> Iterator[Front]:
    """An HTTPS front relaying to the registry on upstream_port; GETs of blob `digest` are
    answered with the registry's status and headers (the whole Content-Length), then cut
    after `cut_after` bytes of the body: the connection is closed under the client."""
    front = Front(0)
    up_ctx = ssl.create_default_context()
    up_ctx.check_hostname = False
    up_ctx.verify_mode = ssl.CERT_NONE

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 64 * 1024 * 1024)) if length else None
            front.requests.append({"method": self.command, "path": self.path})
            up = http.client.HTTPSConnection("127.0.0.1", upstream_port, context=up_ctx, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = f"127.0.0.1:{upstream_port}"
            up.request(self.command, self.path, body=body, headers=headers)
            resp = up.getresponse()
            cut = self.command == "GET" and self.path.endswith(f"/blobs/{digest}")
            self.send_response_only(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding"):
                    self.send_header(k, v)
            if cut:
                self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            while self.command != "HEAD":
                chunk = resp.read(64 * 1024)
                if not chunk:
                    break
                if cut and sent + len(chunk) >= cut_after:
                    self.wfile.write(chunk[: cut_after - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
            up.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    front.port = httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield front
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------------ a hostile registry
CONFIG = json.dumps(
    {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
LAYER = b"hostile-layer" * 100
LAYER_DIGEST = "sha256:" + hashlib.sha256(LAYER).hexdigest()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(CONFIG),
            "digest": CONFIG_DIGEST,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(LAYER),
                "digest": LAYER_DIGEST,
            }
        ],
    }
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
MODES = ("trickle", "endless", "huge-header", "redirect-loop", "bad-utf8")
TARGETS = ("v2", "manifest", "config")


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _answer(body: bytes, ctype: str, method: str, extra: dict[str, str] | None = None) -> bytes:
    headers = {
        "Content-Type": ctype,
        "Content-Length": str(len(body)),
        "Docker-Distribution-API-Version": "registry/2.0",
        **(extra or {}),
    }
    return _head("200 OK", headers) + (b"" if method == "HEAD" else body)


@dataclass
class Hostile:
    port: int
    mode: str
    target: str
    seen: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _read_request(conn: ssl.SSLSocket) -> tuple[str, str] | None:
    data = b""
    conn.settimeout(10)
    while b"\r\n\r\n" not in data and len(data) < 64 * 1024:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1").split()
    return (line[0], line[1]) if len(line) >= 2 else None


def _which(path: str) -> str:
    p = path.split("?", 1)[0]
    if p == "/v2/":
        return "v2"
    if "/manifests/" in p:
        return "manifest"
    p = p.rstrip("x")  # where a redirect loop sends the client next
    if p.endswith(f"/blobs/{CONFIG_DIGEST}"):
        return "config"
    if p.endswith(f"/blobs/{LAYER_DIGEST}"):
        return "layer"
    return "other"


def _normal(kind: str, method: str) -> bytes:
    if kind == "v2":
        return _answer(b"{}", "application/json", method)
    if kind == "manifest":
        return _answer(
            MANIFEST,
            "application/vnd.docker.distribution.manifest.v2+json",
            method,
            {"Docker-Content-Digest": MANIFEST_DIGEST},
        )
    if kind == "config":
        return _answer(CONFIG, "application/octet-stream", method)
    if kind == "layer":
        return _answer(LAYER, "application/octet-stream", method)
    body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"not here"}]}'
    return _head("404 Not Found", {"Content-Length": str(len(body))}) + body


def _hostile(h: Hostile, conn: ssl.SSLSocket, method: str, path: str, kind: str) -> None:
    """Misbehave as h.mode says, until the client goes or the lifetime ends."""
    end = time.monotonic() + LIFETIME_S
    if h.mode == "trickle":
        whole = _normal(kind, method)
        for i in range(len(whole)):
            if h.stop.is_set() or time.monotonic() > end:
                return
            conn.sendall(whole[i : i + 1])
            time.sleep(2.0)
    elif h.mode == "endless":
        conn.sendall(_head("200 OK", {"Content-Type": "application/json", "Connection": "close"}))
        if method == "HEAD":
            return
        block = b'{"layers":[' + b" " * (64 * 1024)
        while not h.stop.is_set() and time.monotonic() < end:
            conn.sendall(block)
    elif h.mode == "huge-header":
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Padding: ")
        block = b"a" * (64 * 1024)
        for _ in range(64):  # 4 MiB of one header line, then the rest never comes
            if h.stop.is_set():
                return
            conn.sendall(block)
    elif h.mode == "redirect-loop":
        there = path.split("?", 1)[0]
        other = there + "x" if not there.endswith("x") else there[:-1]
        conn.sendall(
            _head(
                "307 Temporary Redirect",
                {"Location": other, "Content-Length": "0", "Connection": "close"},
            )
        )
    elif h.mode == "bad-utf8":
        if kind == "v2":
            body = b'{"\xff":1}'
            realm = f"https://127.0.0.1:{h.port}/tok\xffen"
            conn.sendall(
                _head(
                    "401 Unauthorized",
                    {
                        "Content-Length": str(len(body)),
                        "WWW-Authenticate": f'Bearer realm="{realm}",service="s\xfe"',
                        "Docker-Distribution-API-Version": "registry/2.0",
                        "Connection": "close",
                    },
                )
                + body
            )
            return
        body = b'{"schemaVersion": 2, "config": {"digest": "sha256:\xff\xfe"}, "\xc3\x28": 1}'
        ctype = "application/vnd.docker.distribution.manifest.v2+json; charset=\xff"
        conn.sendall(_answer(body, ctype, method, {"Connection": "close"}))


@contextlib.contextmanager
def hostile_registry(mode: str, target: str, tls: ssl.SSLContext) -> Iterator[Hostile]:
    """A registry answering every path normally, except the `target` (v2, manifest or
    config), which gets `mode` (one of MODES)."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    lsock.settimeout(0.2)
    h = Hostile(lsock.getsockname()[1], mode, target)

    def serve(raw: socket.socket) -> None:
        try:
            conn = tls.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        try:
            for _ in range(100):  # keep-alive, bounded
                req = _read_request(conn)
                if req is None:
                    return
                method, path = req
                kind = _which(path)
                h.seen.append(f"{method} {path}")
                if kind == target or (target == "token" and kind == "other"):
                    _hostile(h, conn, method, path, kind)
                    return
                conn.sendall(_normal(kind, method))
        except (OSError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def accept() -> None:
        while not h.stop.is_set():
            try:
                raw, _ = lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield h
    finally:
        h.stop.set()
        t.join(2)
        lsock.close()
