"""Timed blob transfers: every phase of a download measured separately (DNS, connect, TLS,
first byte, transfer, redirect), within a byte and a time budget that a slow link cannot
stretch. Redirects are followed by hand, without the Authorization header."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from diagnose.net import ConnectError, connect

CHUNK = 256 * 1024
MB = 1_000_000


class TransferError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Transfer:
    url: str
    status: int = 0
    bytes: int = 0
    complete: bool = False
    digest_ok: bool | None = None
    phases: dict[str, float] = field(default_factory=dict)  # seconds
    first_byte_at: float = 0.0
    ended_at: float = 0.0
    marks: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes so far)
    redirected_to: str | None = None

    def rate_after(self, start: float) -> float:
        """Bytes per second from `start` (absolute monotonic time) to the end; a transfer that
        ended within the warm-up (a fast link) is measured whole instead."""
        base = next(((t, b) for t, b in self.marks if t >= start), None)
        if base is None or self.ended_at - base[0] < 0.05:
            span = self.ended_at - self.first_byte_at
            return self.bytes / span if span > 0 else 0.0
        return (self.bytes - base[1]) / (self.ended_at - base[0])


Resolve = Callable[[str, int], list[str]]


def _open(
    url: str, resolve: Resolve, ctx: ssl.SSLContext, timeout: float, phases: dict[str, float]
) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    t = time.monotonic()
    addresses = resolve(host, port)
    phases["dns"] = phases.get("dns", 0.0) + time.monotonic() - t
    t = time.monotonic()
    try:
        sock, _ = connect(addresses[0], port, timeout)
    except ConnectError as exc:
        raise TransferError(exc.kind, f"connect to {host}:{port} failed: {exc}") from None
    phases["connect"] = phases.get("connect", 0.0) + time.monotonic() - t
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    if parts.scheme == "https":
        t = time.monotonic()
        try:
            sock = ctx.wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise TransferError("tls", f"TLS with {host} failed: {exc}") from None
        phases["tls"] = phases.get("tls", 0.0) + time.monotonic() - t
    conn.sock = sock
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return conn, path


def download(
    url: str,
    *,
    headers: dict[str, str],
    resolve: Resolve,
    ctx: ssl.SSLContext,
    deadline: float,
    max_bytes: int,
    digest: str | None = None,
    max_redirects: int = 3,
) -> Transfer:
    """GET url until the body ends, max_bytes are read, or the deadline passes."""
    result = Transfer(url=url.split("?", 1)[0])
    phases = result.phases
    sent_headers = dict(headers)
    for _ in range(max_redirects + 1):
        timeout = max(0.2, deadline - time.monotonic())
        conn, path = _open(url, resolve, ctx, timeout, phases)
        netloc = urlsplit(url).netloc
        t = time.monotonic()
        try:
            conn.request(
                "GET",
                path,
                headers={"Host": netloc, "User-Agent": "registry-diagnose", **sent_headers},
            )
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransferError("http", f"GET {result.url} failed: {type(exc).__name__}") from None
        result.status = resp.status
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            phases["redirect"] = phases.get("redirect", 0.0) + time.monotonic() - t
            url = urljoin(url, resp.getheader("Location") or "")
            result.redirected_to = url.split("?", 1)[0]
            sent_headers = {
                k: v for k, v in sent_headers.items() if k.lower() != "authorization"
            }  # never to another host
            conn.close()
            continue
        result.first_byte_at = time.monotonic()
        phases["first_byte"] = result.first_byte_at - t
        if resp.status not in (200, 206):
            conn.close()
            raise TransferError("http", f"GET {result.url} answered HTTP {resp.status}")
        hasher = hashlib.sha256()
        length = resp.getheader("Content-Length")
        try:
            while result.bytes < max_bytes and time.monotonic() < deadline:
                conn.sock.settimeout(max(0.05, min(2.0, deadline - time.monotonic())))
                try:
                    chunk = resp.read(min(CHUNK, max_bytes - result.bytes))
                except TimeoutError:
                    continue
                if not chunk:
                    result.complete = True
                    break
                result.bytes += len(chunk)
                hasher.update(chunk)
                result.marks.append((time.monotonic(), result.bytes))
        except (OSError, http.client.HTTPException) as exc:
            raise TransferError(
                "http", f"reading {result.url} failed: {type(exc).__name__}"
            ) from None
        finally:
            result.ended_at = time.monotonic()
            conn.close()
        if length is not None and result.bytes >= int(length):
            result.complete = True
        phases["transfer"] = result.ended_at - result.first_byte_at
        if result.complete and digest and digest.startswith("sha256:"):
            result.digest_ok = hasher.hexdigest() == digest.split(":", 1)[1]
        return result
    raise TransferError("redirect", f"more than {max_redirects} redirects for {result.url}")


def parallel(jobs: list[Callable[[], Transfer]]) -> tuple[list[Transfer], list[str]]:
    """Run downloads at once (docker fetches several layers at a time)."""
    out: list[Transfer | None] = [None] * len(jobs)
    errors: list[str] = []

    def run(i: int, job: Callable[[], Transfer]) -> None:
        try:
            out[i] = job()
        except TransferError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(i, j), daemon=True) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [t for t in out if t is not None], errors


def aggregate_rate(transfers: list[Transfer], warm_up: float) -> float:
    """Bytes per second of all streams together, after the warm-up from the first byte."""
    if not transfers:
        return 0.0
    first = min(t.first_byte_at for t in transfers)
    start = first + warm_up
    end = max(t.ended_at for t in transfers)
    if end - start < 0.05:  # all done within the warm-up: measure the whole transfer
        return sum(t.bytes for t in transfers) / (end - first) if end > first else 0.0
    moved = 0
    for t in transfers:
        base = next((b for when, b in t.marks if when >= start), t.bytes)
        moved += t.bytes - base
    return moved / (end - start)


def phases_ms(t: Transfer) -> dict[str, Any]:
    return {k: round(v * 1000, 1) for k, v in t.phases.items()}
