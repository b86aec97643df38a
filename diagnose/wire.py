"""Transfers that break, told apart as a Go client meets them: reset, closed early, stalled
(no byte for N seconds) or timed out (a trickle that outlives the deadline); after how many
bytes of how many, from which host (the registry or the storage it redirected to), on which
attempt. Never the bare name of an exception.

Two pieces every check that moves bytes shares:
- `classify` turns whatever requests, urllib3, http.client, ssl or a socket raised into a
  `Break`, and `Broken` carries it (a requests ConnectionError, so existing handlers catch it);
- a watchdog ends any request at its deadline, headers included: a per-read timeout cannot see
  a server that sends one byte every few seconds, so the socket is shut down from outside when
  the time is up (`until(deadline)` around the request; the run's connections register).
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from diagnose import http as web

STALL_S = 10.0  # no byte for this long: the transfer has stalled
TRICKLE_BPS = 1024  # slower than this when the deadline came: a trickle, not a slow link
CHUNK = 64 * 1024

KINDS = (
    "reset",  # the peer (or a middlebox) reset the connection
    "closed",  # the body ended before the bytes promised (Content-Length, descriptor size)
    "stalled",  # no byte for STALL_S seconds
    "timeout",  # bytes kept coming (or none), but the deadline came first
    "refused",
    "unreachable",
    "dns",
    "tls",
    "proxy",
    "header",  # a header line or a header block over what the clients accept
    "protocol",  # not HTTP, or broken HTTP framing
    "redirects",  # a redirect loop, or more redirects than a client follows
    "too-large",  # more bytes than the clients accept
    "error",
)


@dataclass(frozen=True)
class Break:
    """How one transfer broke, in the words a user can act on."""

    kind: str
    host: str = ""
    role: str = "registry"  # "storage": the host a blob redirect led to; "token": the realm
    received: int = 0
    expected: int | None = None
    attempt: int = 1
    phase: str = "body"  # connect, headers or body
    seconds: float = 0.0
    stall_s: float | None = None
    detail: str = ""

    @property
    def where(self) -> str:
        who = {
            "registry": "the registry",
            "token": "the token service",
        }.get(self.role, "the storage host it redirected to")
        return f"{self.host} ({who})" if self.host else who

    @property
    def amount(self) -> str:
        if self.phase != "body":
            return "before the answer's headers were complete"
        of = f" of {self.expected:,}" if self.expected is not None else ""
        return f"after {self.received:,}{of} bytes"

    def describe(self) -> str:
        """One line: what happened, where, after how much, on which attempt."""
        text = {
            "reset": f"reset by {self.where} {self.amount}",
            "closed": f"closed early by {self.where} {self.amount}",
            "stalled": f"stalled: no byte from {self.where} for {self.stall_s or STALL_S:g} s, "
            f"{self.amount}",
            "timeout": self._timeout(),
            "refused": f"connection to {self.where} refused",
            "unreachable": f"{self.where} is unreachable",
            "dns": f"the name of {self.where} does not resolve",
            "tls": f"TLS with {self.where} failed",
            "proxy": f"the proxy failed on the way to {self.where}",
            "header": f"{self.where} sent a header over what the clients accept",
            "protocol": f"{self.where} broke the HTTP protocol {self.amount}",
            "redirects": f"{self.where} redirects without end",
            "too-large": f"{self.where} sent more than {self.expected or 0:,} bytes",
            "error": f"the transfer from {self.where} failed {self.amount}",
        }.get(self.kind, f"the transfer from {self.where} failed")
        if self.detail:
            text += f" ({self.detail})"
        return f"{text}, on attempt {self.attempt}"

    def _timeout(self) -> str:
        if self.phase == "connect":
            return f"connecting to {self.where} timed out"
        rate = self.received / self.seconds if self.seconds > 0 else 0.0
        sent = f"sent {self.received:,} bytes in {self.seconds:.1f} s"
        trickle = " (a trickle)" if rate < TRICKLE_BPS else ""
        of = f" of {self.expected:,}" if self.expected is not None else ""
        if self.phase == "headers":
            return (
                f"timed out: {self.where} had not finished the answer's headers after "
                f"{self.seconds:.1f} s (it trickles, or never answers)"
            )
        return f"timed out: {self.where} {sent}{of}{trickle} before the deadline"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


class Broken(web.ConnectionError):
    """A transfer that broke, with how (`brk`)."""

    def __init__(self, brk: Break) -> None:
        super().__init__(brk.describe())
        self.brk = brk


# ----------------------------------------------------------------------------- classifying
_QUERY = re.compile(r"\?\S*")


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (causes, contexts, exceptions among its args,
    urllib3's `reason`), breadth first, bounded."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < 16:
        e = todo.pop(0)
        if any(e is seen for seen in out):
            continue
        out.append(e)
        more = [e.__cause__, e.__context__, getattr(e, "reason", None)]
        more += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        todo.extend(m for m in more if isinstance(m, BaseException))
    return out


def _detail(exc: BaseException) -> str:
    """The innermost message, one line, no URL query (a storage URL's signature stays out)."""
    text = " ".join(str(exc).split())
    text = _QUERY.sub("?…", text)
    return text[:160]


def classify(exc: BaseException, *, fired: bool = False) -> tuple[str, str, str]:
    """(kind, phase, detail) for whatever a request or a read raised. `fired`: our own
    deadline ended it (the watchdog shut the socket), whatever the socket then said."""
    import urllib3.exceptions as u3

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, Broken):
            return e.brk.kind, e.brk.phase, e.brk.detail
    connect = any(
        isinstance(e, u3.NewConnectionError | u3.ConnectTimeoutError | web.ConnectTimeout)
        for e in chain
    )
    phase = "connect" if connect else "headers"
    if any(isinstance(e, web.ChunkedEncodingError) for e in chain) or any(
        isinstance(e, u3.ProtocolError) and "Connection broken" in str(e) for e in chain
    ):
        phase = "body"
    if fired:
        return "timeout", phase, ""

    def has(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    if has(web.ProxyError, u3.ProxyError):
        return "proxy", "connect", _detail(chain[-1])
    line = has(http.client.LineTooLong)
    if line is not None:
        return "header", "headers", "a header line over 64 KiB"
    many = next((e for e in chain if "got more than 100 headers" in str(e)), None)
    if many is not None:
        return "header", "headers", "more than 100 header lines"
    if has(ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return "reset", phase, ""
    if has(ConnectionRefusedError):
        return "refused", "connect", ""
    if has(socket.gaierror, u3.NameResolutionError):
        return "dns", "connect", ""
    if has(ssl.SSLEOFError, ssl.SSLZeroReturnError) and not connect:
        return "closed", phase, ""
    if has(http.client.IncompleteRead, u3.IncompleteRead, http.client.RemoteDisconnected):
        return "closed", phase, ""
    chunk = has(u3.InvalidChunkLength)
    if chunk is not None:
        return ("closed" if not getattr(chunk, "length", b"") else "protocol"), "body", ""
    if has(web.ConnectTimeout, u3.ConnectTimeoutError):
        return "timeout", "connect", ""
    if has(web.ReadTimeout, u3.ReadTimeoutError, TimeoutError):
        return "stalled", phase, ""
    if has(ssl.SSLError, web.SSLError):
        return "tls", "connect", _detail(chain[-1])
    bad = has(http.client.BadStatusLine, http.client.HTTPException)
    if bad is not None:
        return "protocol", phase, _detail(bad)
    if any("Connection broken" in str(e) or "Connection aborted" in str(e) for e in chain):
        return "closed", phase, ""
    return "error", phase, _detail(chain[-1])


def broken(
    exc: BaseException,
    *,
    host: str,
    role: str = "registry",
    received: int = 0,
    expected: int | None = None,
    attempt: int = 1,
    seconds: float = 0.0,
    fired: bool = False,
    body: bool = False,
) -> Broken:
    """A Broken for exc, with what is known of the transfer it ended."""
    if isinstance(exc, Broken):
        return exc
    kind, phase, detail = classify(exc, fired=fired)
    if body:
        phase = "body"
    return Broken(
        Break(
            kind,
            host=host,
            role=role,
            received=received,
            expected=expected,
            attempt=attempt,
            phase=phase,
            seconds=round(seconds, 2),
            stall_s=STALL_S if kind == "stalled" else None,
            detail=detail,
        )
    )


def how(exc: BaseException, url: str, role: str = "registry", fired: bool = False) -> str:
    """How a request to url broke, in words (never the bare name of an exception)."""
    from urllib.parse import urlsplit

    host = urlsplit(url).netloc.rpartition("@")[2]
    return broken(exc, host=host, role=role, fired=fired).brk.describe()


def retryable(brk: Break) -> bool:
    """A cut a client retries (docker and containerd do, for a layer)."""
    return brk.kind in ("reset", "closed", "stalled")


# ------------------------------------------------------------------------------- watchdog
@dataclass(eq=False)
class Watch:
    """One request's socket and the moment it must end."""

    at: float
    sock: socket.socket | None
    fired: bool = False
    live: bool = True


@dataclass(eq=False)
class Guard:
    """The deadline set for the requests this thread makes, and the watches they opened."""

    at: float
    watches: list[Watch] = field(default_factory=list)

    @property
    def fired(self) -> bool:
        return any(w.fired for w in self.watches)


_local = threading.local()


class _Reaper:
    """One thread for the whole process: sleeps until the earliest deadline, then shuts down
    the socket of a request still running, so the reading thread sees it end at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, w: Watch) -> None:
        with self._cond:
            heapq.heappush(self._heap, (w.at, next(self._ids), w))
            if len(self._heap) > 4096:  # drop the released ones
                self._heap = [e for e in self._heap if e[2].live]
                heapq.heapify(self._heap)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and not self._heap[0][2].live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(30.0)
                    if not self._heap:
                        self._thread = None
                        return
                    continue
                at = self._heap[0][0]
                left = at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                _, _, w = heapq.heappop(self._heap)
            _fire(w)


def _fire(w: Watch) -> None:
    sock = w.sock
    if not w.live or sock is None:
        return
    w.fired = True
    with contextlib.suppress(OSError, ValueError):
        # the plain socket's shutdown, not SSLSocket's (which drops its TLS state under the
        # reading thread): the reader then meets end of stream at once
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_REAPER = _Reaper()


@contextlib.contextmanager
def until(at: float) -> Iterator[Guard]:
    """Requests this thread makes inside the block end at `at` (monotonic), headers and body
    alike; the guard tells afterwards whether the deadline ended one."""
    guard = Guard(at)
    previous = getattr(_local, "guard", None)
    _local.guard = guard
    try:
        yield guard
    finally:
        _local.guard = previous


def watch(sock: Any) -> Watch | None:
    """Called by the run's connections as a request awaits its answer: the socket is shut at
    the deadline of the `until` block around it (None outside one)."""
    guard: Guard | None = getattr(_local, "guard", None)
    if guard is None or sock is None:
        return None
    w = Watch(guard.at, sock)
    guard.watches.append(w)
    if guard.at <= time.monotonic():
        _fire(w)
    else:
        _REAPER.add(w)
    return w


def release(w: Watch | None) -> None:
    """The request is over (its connection is reused or closed): nothing to end any more."""
    if w is not None:
        w.live = False
        w.sock = None


def watch_of(resp: Any) -> Watch | None:
    """The watch of a requests (or urllib3) response, if its request had a deadline."""
    raw = getattr(resp, "raw", resp)
    found = getattr(raw, "_rd_watch", None)
    return found if isinstance(found, Watch) else None


# -------------------------------------------------------------------------------- reading
@dataclass
class Body:
    """What a bounded read got: the bytes (when kept), how many, and whether it went over."""

    data: bytes
    count: int
    over: bool
    seconds: float


def drain(
    resp: web.Response,
    limit: int,
    *,
    host: str,
    role: str = "registry",
    attempt: int = 1,
    keep: bool = True,
    sink: Callable[[bytes], Any] | None = None,
    expected: int | None = None,
) -> Body:
    """Read the body until it ends or passes `limit` (then stop, one byte past it: a server
    that sends without end costs no more than that), feeding `sink`; the response is closed
    either way. A break raises Broken with the bytes received so far."""
    import urllib3.exceptions as u3

    buf = bytearray()
    count = 0
    t0 = time.monotonic()
    if expected is None:
        length = resp.headers.get("Content-Length", "")
        expected = int(length) if length.isascii() and length.isdigit() else None
    try:
        while True:
            chunk = resp.raw.read(min(CHUNK, limit + 1 - count), decode_content=True)
            if not chunk:
                resp._content_consumed = True  # its connection is reused now
                break
            count += len(chunk)
            if sink is not None:
                sink(chunk)
            if keep:
                buf += chunk
            if count > limit:
                return Body(bytes(buf), count, True, time.monotonic() - t0)
    except (web.RequestException, u3.HTTPError, OSError, http.client.HTTPException) as exc:
        w = watch_of(resp)
        raise broken(
            exc,
            host=host,
            role=role,
            received=count,
            expected=expected,
            attempt=attempt,
            seconds=time.monotonic() - t0,
            fired=bool(w and w.fired),
            body=True,
        ) from None
    finally:
        resp.close()
        release(watch_of(resp))
    return Body(bytes(buf), count, False, time.monotonic() - t0)
