"""Where a parser meets a server's bytes: whatever a server sends (a broken status line,
invalid UTF-8, a header line over 64 KiB, a chunked body that lies, a body shorter or
longer than it said, a body that never parses), the registry API reader either returns at
most its limit or raises a requests exception that says how the transfer broke, in one line
and never as the bare name of an exception; the JSON, error-body and rate-limit parsers
never raise at all."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnose import http as web
from diagnose import wire
from diagnose.http import make_session
from diagnose.oci import parse_errors, rate_limit
from diagnose.registryapi import json_object, read_body, requester

EXCEPTION_NAME = re.compile(r"\b[A-Z][a-z]+(Error|Exception)\b")


class _Raw:
    """A plain-HTTP server on loopback that answers each request with the bytes it is
    given, then closes the connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answer = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError), conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer)
                conn.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def raw() -> Iterator[_Raw]:
    server = _Raw()
    yield server
    server.stop.set()
    server.thread.join(2)
    server.sock.close()


def _ctx(deadline_s: float = 5.0) -> Any:
    """The little of a CheckContext the registry API reader uses."""
    session = make_session(ssl.create_default_context())
    return SimpleNamespace(
        registry=SimpleNamespace(host="127.0.0.1", login_server="127.0.0.1"),
        deadline=time.monotonic() + deadline_s,
        options=SimpleNamespace(insecure=False),
        http=lambda verify=True: session,
        budget=lambda cap: min(cap, 2.0),
        proxies=lambda url: {},
    )


STATUS = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.0 429 x"]),
    st.binary(max_size=40),
)
HEADER = st.one_of(
    st.sampled_from(
        [
            b"Content-Length: 10",
            b"Content-Length: 99999999",
            b"Content-Length: -1",
            b"Content-Length: \xff",
            b"Transfer-Encoding: chunked",
            b"Content-Type: application/json; charset=\xff",
            b"RateLimit-Remaining: 0;w=\xff",
            b"Retry-After: \xfe\xff",
            b"X-Long: " + b"a" * 70000,
        ]
    ),
    st.binary(max_size=60),
)
BODY = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"5\r\nhello\r\n0\r\n\r\n",
            b"zz\r\nhello",
            b'{"errors":[{"code":"\xff","message":"\xc3\x28"}]}',
            b'{"tags":["\xff"]}',
        ]
    ),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=STATUS, headers=st.lists(HEADER, max_size=4), body=BODY, limit=st.integers(1, 512))
def test_reader_meets_any_bytes(raw, status, headers, body, limit):
    raw.answer = b"\r\n".join([status, *headers]) + b"\r\n\r\n" + body
    call = requester(_ctx())
    try:
        resp = call("GET", f"http://127.0.0.1:{raw.port}/v2/x/manifests/1", stream=True)
        data = read_body(resp, limit)
    except web.RequestException as exc:
        text = str(exc)
        assert isinstance(exc, wire.Broken), repr(exc)
        assert "\n" not in text and not EXCEPTION_NAME.search(text), text
        assert exc.brk.kind in wire.KINDS
        return
    assert len(data) <= limit + 1
    parse_errors(data)
    rate_limit(resp.headers)
    json_object(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_json_object_says_what_is_wrong_in_one_line(data):
    doc, why = json_object(data)
    assert (doc is None) == bool(why)
    assert "\n" not in why
    if doc is not None:
        assert isinstance(doc, dict)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "Retry-After",
                "X-RateLimit-Limit",
                "Docker-RateLimit-Source",
            ]
        ),
        st.text(max_size=40),
    )
)
def test_rate_limit_headers_never_raise(headers):
    rl = rate_limit(headers)
    if rl is not None:
        assert rl.remaining is None or rl.remaining >= 0


def _errors() -> st.SearchStrategy[BaseException]:
    import http.client

    import urllib3.exceptions as u3

    leaves = st.sampled_from(
        [
            ConnectionResetError(104, "Connection reset by peer"),
            ConnectionRefusedError(111, "refused"),
            TimeoutError("timed out"),
            ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
            http.client.IncompleteRead(b"abc", 10),
            http.client.RemoteDisconnected("closed"),
            http.client.LineTooLong("header line"),
            http.client.BadStatusLine("\xff"),
            socket.gaierror(-2, "Name or service not known"),
            OSError("something else ?sig=SECRET"),
        ]
    )

    def wrap(e: BaseException) -> st.SearchStrategy[BaseException]:
        return st.sampled_from(
            [
                e,
                u3.ProtocolError("Connection aborted.", e),
                web.ConnectionError(u3.ProtocolError("Connection broken: x", e)),
                web.ChunkedEncodingError(u3.ProtocolError("Connection broken", e)),
                web.ReadTimeout(u3.ReadTimeoutError(None, None, "Read timed out.")),  # type: ignore[arg-type]
            ]
        )

    return leaves.flatmap(wrap)


@settings(max_examples=300, deadline=None)
@given(_errors(), st.booleans(), st.integers(0, 10**9), st.none() | st.integers(0, 10**9))
def test_every_break_is_told_in_words(exc, fired, received, expected):
    brk = wire.broken(exc, host="r.test", received=received, expected=expected, fired=fired).brk
    assert brk.kind in wire.KINDS
    text = brk.describe()
    assert "\n" not in text and "SECRET" not in text
    assert not EXCEPTION_NAME.search(text), text
    assert "r.test (the registry)" in text and text.endswith("on attempt 1")
    if fired:
        assert brk.kind == "timeout"


def test_the_watchdog_ends_a_request_at_its_deadline(raw):
    """A server that never answers: the read timeout alone would wait 10 s; the deadline ends
    the request after 1 s, and says so."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        call = requester(_ctx(deadline_s=1.5))
        t0 = time.monotonic()
        with pytest.raises(wire.Broken) as caught:
            call("GET", f"http://127.0.0.1:{silent.getsockname()[1]}/v2/")
        took = time.monotonic() - t0
    finally:
        silent.close()
    assert took < 2.5, took
    assert caught.value.brk.kind == "timeout" and caught.value.brk.phase == "headers"
    assert "had not finished the answer's headers" in str(caught.value)
