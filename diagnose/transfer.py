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
from diagnose.wire import STALL_S, Break, broken, release, until, watch

CHUNK = 256 * 1024
MB = 1_000_000


class TransferError(Exception):
    """A download that did not happen: `brk` says how it broke (diagnose.wire), or
    `status`/`headers`/`body` hold an answer that is not a success."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        brk: Any = None,
        status: int = 0,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.brk = brk
        self.status = status
        self.headers = headers or {}
        self.body = body


@dataclass
class Transfer:
    url: str
    status: int = 0
    bytes: int = 0
    complete: bool = False
    digest_ok: bool | None = None
    size: int | None = None  # the descriptor's
    phases: dict[str, float] = field(default_factory=dict)  # seconds
    first_byte_at: float = 0.0
    ended_at: float = 0.0
    marks: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes so far)
    redirected_to: str | None = None
    hasher: Any = field(default_factory=hashlib.sha256)

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
    url: str,
    resolve: Resolve,
    ctx: ssl.SSLContext,
    timeout: float,
    phases: dict[str, float],
    role: str = "registry",
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
        brk = Break(
            {"error": "error", "timeout": "timeout"}.get(exc.kind, exc.kind),
            host=f"{host}:{port}",
            role=role,
            phase="connect",
            detail=str(exc)[:160],
        )
        raise TransferError(exc.kind, brk.describe(), brk=brk) from None
    phases["connect"] = phases.get("connect", 0.0) + time.monotonic() - t
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    if parts.scheme == "https":
        t = time.monotonic()
        try:
            sock = ctx.wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            brk = Break("tls", host=f"{host}:{port}", role=role, phase="connect", detail=str(exc))
            raise TransferError("tls", brk.describe(), brk=brk) from None
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
    size: int | None = None,
    max_redirects: int = 3,
) -> Transfer:
    """GET url until the body ends, max_bytes are read, or the deadline passes. A transfer
    that breaks (reset, closed early, no byte for STALL_S) raises TransferError with `brk`;
    an answer that is not a success raises it with the status, headers and body."""
    result = Transfer(url=url.split("?", 1)[0], size=size)
    phases = result.phases
    sent_headers = dict(headers)
    home = (urlsplit(url).hostname or "").lower()
    for _ in range(max_redirects + 1):
        timeout = max(0.2, deadline - time.monotonic())
        role = "registry" if (urlsplit(url).hostname or "").lower() == home else "storage"
        conn, path = _open(url, resolve, ctx, timeout, phases, role)
        netloc = urlsplit(url).netloc
        t = time.monotonic()
        with until(deadline) as guard:
            try:
                conn.request(
                    "GET",
                    path,
                    headers={"Host": netloc, "User-Agent": "registry-diagnose", **sent_headers},
                )
                w = watch(conn.sock)  # the headers end at the deadline, however slow
                resp = conn.getresponse()
                release(w)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                brk = broken(
                    exc, host=netloc, role=role, seconds=time.monotonic() - t, fired=guard.fired
                ).brk
                raise TransferError(
                    brk.kind, f"GET {result.url}: {brk.describe()}", brk=brk
                ) from None
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
            try:
                conn.sock.settimeout(max(0.05, min(2.0, deadline - time.monotonic())))
                body = resp.read(64 * 1024)
            except (OSError, http.client.HTTPException):
                body = b""
            conn.close()
            raise TransferError(
                "http",
                f"GET {result.url} answered HTTP {resp.status}",
                status=resp.status,
                headers=dict(resp.getheaders()),
                body=body,
            )
        _body(result, conn, resp, deadline, max_bytes, netloc, role)
        if result.complete and digest and digest.startswith("sha256:"):
            result.digest_ok = result.hasher.hexdigest() == digest.split(":", 1)[1]
            if size is not None and result.bytes != size:
                result.digest_ok = False
        return result
    raise TransferError("redirect", f"more than {max_redirects} redirects for {result.url}")


def _body(
    result: Transfer,
    conn: http.client.HTTPConnection,
    resp: http.client.HTTPResponse,
    deadline: float,
    max_bytes: int,
    host: str,
    role: str,
) -> None:
    """Read the body into result: until its end, max_bytes, or the deadline (a measurement
    may end there); no byte for STALL_S is a stall, and a body that ends early a cut."""
    length = resp.getheader("Content-Length")
    expected = int(length) if length and length.isascii() and length.isdigit() else result.size
    last = time.monotonic()
    try:
        while result.bytes < max_bytes and time.monotonic() < deadline:
            conn.sock.settimeout(max(0.05, min(2.0, deadline - time.monotonic())))
            try:
                chunk = resp.read(min(CHUNK, max_bytes - result.bytes))
            except TimeoutError:
                if time.monotonic() - last >= STALL_S:
                    raise
                continue
            last = time.monotonic()
            if not chunk:
                result.complete = True
                break
            result.bytes += len(chunk)
            result.hasher.update(chunk)
            result.marks.append((time.monotonic(), result.bytes))
    except (OSError, http.client.HTTPException) as exc:
        brk = broken(
            exc,
            host=host,
            role=role,
            received=result.bytes,
            expected=expected,
            seconds=time.monotonic() - result.first_byte_at,
            body=True,
        ).brk
        raise TransferError(brk.kind, f"reading {result.url}: {brk.describe()}", brk=brk) from None
    finally:
        result.ended_at = time.monotonic()
        conn.close()
    result.phases["transfer"] = result.ended_at - result.first_byte_at
    if result.complete and expected is not None and result.bytes < expected:
        # http.client ends a body that stops short without a word: it was cut
        brk = Break(
            "closed",
            host=host,
            role=role,
            received=result.bytes,
            expected=expected,
            seconds=round(result.ended_at - result.first_byte_at, 2),
        )
        raise TransferError(brk.kind, f"reading {result.url}: {brk.describe()}", brk=brk)
    if expected is not None and result.bytes >= expected:
        result.complete = True


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
