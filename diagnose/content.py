"""Blobs as the clients fetch them: redirects followed by hand (no Authorization header to
another host), and every blob read whole checked against its descriptor's digest and size,
so that bytes a client would refuse are never passed as good. A cut transfer is retried as
the clients retry a layer, and each attempt's break is kept."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from diagnose.context import CheckContext
from diagnose.registryapi import MAX_MANIFEST, auth_for, base_url, follow, read_body, requester
from diagnose.secrets import safe_url
from diagnose.wire import Break, Broken, drain, retryable

ERROR_BODY = 64 * 1024  # of an answer that is not a success: enough for the `errors` array
TRICKLE_BPS = 1024


@dataclass
class BlobRead:
    """What fetching one blob gave. verdict: ok (read whole, digest and size match), probed
    (one byte asked for and served), answer (not a success: status, headers, body), broken
    (the transfer broke: brk), digest / size (the bytes are not the ones named), unverified
    (a slow but moving transfer the time left could not finish)."""

    digest: str
    size: int | None
    verdict: str = ""
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    data: bytes | None = None
    received: int = 0
    over: bool = False
    actual: str | None = None
    brk: Break | None = None
    earlier: list[Break] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        host = self.facts.get("host", "")
        role = "the storage host" if self.facts.get("storage_host") else "the registry"
        return f"{role} ({host})" if host else role


def fetch(
    ctx: CheckContext,
    digest: str,
    *,
    size: int | None = None,
    whole: bool = False,
    keep: bool = False,
    attempts: int = 1,
    soft_deadline: float | None = None,
) -> BlobRead:
    """GET a blob: whole (checked against digest and size, kept in memory with keep) or one
    byte of it (a Range probe). A break is retried up to `attempts` times while time is left;
    a proxy's own failure raises requests' ProxyError, for the proxy findings."""
    rd = BlobRead(digest, size)
    headers, auth = auth_for(ctx)
    call = requester(ctx)
    url = f"{base_url(ctx)}/blobs/{digest}"
    extra = {} if whole else {"Range": "bytes=0-0"}
    algorithm, _, want_hex = digest.partition(":")
    for attempt in range(1, attempts + 1):
        _one(ctx, rd, call, url, headers, extra, auth, attempt, soft_deadline, keep, whole)
        if rd.verdict != "broken" or rd.brk is None:
            break
        if attempt < attempts and retryable(rd.brk) and ctx.remaining() > 3.0:
            rd.earlier.append(rd.brk)
            continue
        break
    if rd.verdict == "read":
        rd.verdict = _judge(rd, algorithm, want_hex)
    rd.facts["attempts"] = len(rd.earlier) + 1
    return rd


def _one(
    ctx: CheckContext,
    rd: BlobRead,
    call: Any,
    url: str,
    headers: dict[str, str],
    extra: dict[str, str],
    auth: Any,
    attempt: int,
    soft_deadline: float | None,
    keep: bool,
    whole: bool,
) -> None:
    t0 = time.monotonic()
    kw: dict[str, Any] = {"stream": True, "attempt": attempt}
    if soft_deadline is not None:
        kw["deadline"] = soft_deadline
    rd.verdict, rd.brk = "", None
    try:
        resp, hops = follow(call, "GET", url, headers={**headers, **extra}, auth=auth, **kw)
    except Broken as exc:
        rd.verdict, rd.brk = "broken", exc.brk
        if exc.brk.role == "storage":  # the storage host a redirect led to failed
            rd.facts["storage_host"] = exc.brk.host.rpartition(":")[0].strip("[]") or exc.brk.host
        return
    final = hops[-1]
    rd.facts["host"] = urlsplit(final).netloc.rpartition("@")[2]
    if len(hops) > 1:
        rd.facts["redirects"] = [safe_url(u) for u in hops[1:]]
        # served from elsewhere (another host, or another port of it): the storage endpoint
        if urlsplit(final).netloc.lower() != urlsplit(url).netloc.lower():
            rd.facts["storage_host"] = (urlsplit(final).hostname or "").lower()
    rd.status = resp.status_code
    rd.headers = resp.headers
    rd.facts["status"] = resp.status_code
    # until the answer's headers, storage redirects included
    rd.facts["first_byte_ms"] = round((time.monotonic() - t0) * 1000, 2)
    if resp.status_code not in (200, 206):
        try:
            rd.body = read_body(resp, ERROR_BODY)[:ERROR_BODY]
        except Broken:
            rd.body = b""  # the status is the answer; a body that breaks adds nothing
        rd.verdict = "answer"
        return
    if not whole:
        resp.close()
        rd.verdict = "probed"
        return
    hasher = _hasher(rd.digest)
    length = resp.headers.get("Content-Length", "")
    said = int(length) if length.isascii() and length.isdigit() else None
    limit = rd.size if rd.size is not None else MAX_MANIFEST
    try:
        body = drain(
            resp,
            limit,
            host=rd.facts["host"],
            role=getattr(resp, "_rd_role", "registry"),
            attempt=attempt,
            keep=keep,
            sink=hasher.update if hasher is not None else None,
            expected=rd.size if rd.size is not None else said,
        )
    except Broken as exc:
        brk = exc.brk
        moving = brk.seconds > 0 and brk.received / brk.seconds >= TRICKLE_BPS
        if brk.kind == "timeout" and soft_deadline is not None and moving:
            rd.verdict, rd.received = "unverified", brk.received  # a slow link, not a fault
        else:
            rd.verdict, rd.brk, rd.received = "broken", brk, brk.received
        return
    rd.received, rd.over = body.count, body.over
    rd.data = body.data if keep else None
    rd.actual = f"{rd.digest.partition(':')[0]}:{hasher.hexdigest()}" if hasher else None
    if rd.size is not None and not body.over and body.count < rd.size and said != body.count:
        # the body ended cleanly before the size the descriptor promises: cut short
        rd.verdict = "broken"
        rd.brk = Break(
            "closed",
            host=rd.facts["host"],
            role=getattr(resp, "_rd_role", "registry"),
            received=body.count,
            expected=rd.size,
            attempt=attempt,
            seconds=round(body.seconds, 2),
        )
        return
    rd.verdict = "read"


def _hasher(digest: str) -> Any:
    algorithm = digest.partition(":")[0]
    return hashlib.new(algorithm) if algorithm in ("sha256", "sha384", "sha512") else None


def _judge(rd: BlobRead, algorithm: str, want_hex: str) -> str:
    if rd.over or (rd.size is not None and rd.received != rd.size):
        return "size"
    if rd.actual is None:
        return "unverified"  # an algorithm we cannot compute: the clients refuse it too
    return "ok" if rd.actual == f"{algorithm}:{want_hex}" else "digest"


def descriptor_size(desc: Mapping[str, Any]) -> int | None:
    size = desc.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def config_read(ctx: CheckContext, doc: Mapping[str, Any]) -> BlobRead | None:
    """The image config, read whole once per run (it is small) and checked; None when the
    manifest names none."""
    desc = doc.get("config")
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        return None
    digest = str(desc["digest"])
    size = descriptor_size(desc)
    if size is not None:
        size = min(size, MAX_MANIFEST + 1)  # a config claiming more is refused unread

    def read() -> BlobRead:
        return fetch(ctx, digest, size=size, whole=True, keep=True, attempts=2)

    result: BlobRead = ctx.once(f"config:{digest}", read)
    return result
