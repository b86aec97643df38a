"""The HTTP client every check uses: urllib3's pools, with the run's trust store and name
resolution, behind a session that reads like requests' (the same exception names).

Not requests itself: it costs a run some 70 ms and 15 MB to import (it loads a character set
detector and every codec), a third of a millisecond per request, and it hands each new
connection certifi's bundle, a trust docker does not have. Two things differ from a plain
urllib3 pool manager:
- certificates are checked against the system store plus `--ca-bundle` (not certifi alone),
  because that is what docker on this host trusts;
- with `--nameserver` a request connects to the address the run resolved while still sending
  the real host name in SNI and Host and checking the certificate against it.
The session never reads ~/.netrc and never follows redirects by itself: checks follow them by
hand so that an Authorization header can never travel to another host.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from diagnose.x509pool import Trust

USER_AGENT = "registry-diagnose"
POOL_SIZE = 10  # kept-alive connections per host (checks run side by side)

# Response headers worth keeping as evidence; anything else (cookies above all) is dropped.
SAFE_HEADERS = (
    "content-type",
    "content-length",
    "date",
    "docker-distribution-api-version",
    "www-authenticate",
    "location",
    "server",
    "x-ms-correlation-request-id",
    "x-ms-request-id",
    "x-content-type-options",
    "retry-after",
    "strict-transport-security",
)


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    keep = {}
    for k, v in headers.items():
        if k.lower() in SAFE_HEADERS:
            keep[k] = v[:500]
    return keep


def _pool_classes(trust: Trust | None = None) -> dict[str, Any]:
    """Connection pools whose idle TLS connections survive a TLS 1.3 session ticket.

    A TLS 1.3 server sends session tickets after the handshake. On a connection nobody has
    read from since, they make the socket readable, and urllib3 takes a readable idle socket
    for one the server closed: it would drop every kept-alive connection and pay for TCP and
    TLS again. Here a readable socket is read without blocking first: records that are not
    application data (the tickets) are consumed and the connection stays; end of stream, or
    data nobody asked for, still count as dropped."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.util.ssl_match_hostname import CertificateError
    from urllib3.util.wait import wait_for_read

    from diagnose import wire

    class Watched(HTTPConnection):
        """A request made inside `wire.until(deadline)` ends at that deadline, its headers
        and body included, however slowly the server sends them."""

        _rd_watch: wire.Watch | None = None

        def request(self, *args: Any, **kwargs: Any) -> None:
            wire.release(self._rd_watch)  # the previous request on this connection is over
            self._rd_watch = None
            super().request(*args, **kwargs)

        def getresponse(self) -> Any:
            self._rd_watch = wire.watch(self.sock)
            resp = super().getresponse()
            if self._rd_watch is not None:
                resp._rd_watch = self._rd_watch  # type: ignore[attr-defined]
            return resp

        def close(self) -> None:
            wire.release(self._rd_watch)
            self._rd_watch = None
            super().close()

    class WatchedHTTPS(Watched, HTTPSConnection):
        pass

    class Releasing(HTTPConnectionPool):
        def _put_conn(self, conn: Any) -> None:
            if conn is not None:  # back in the pool: its request is over, and so its deadline
                wire.release(getattr(conn, "_rd_watch", None))
            super()._put_conn(conn)

    class WatchedPool(Releasing):
        ConnectionCls = Watched

    class TicketTolerantConnection(WatchedHTTPS):
        def connect(self) -> None:
            try:
                super().connect()
            except (ssl.SSLCertVerificationError, CertificateError) as exc:
                if trust is not None:
                    _go_words(self, trust, exc)
                raise
            if trust is not None:
                _go_verdict(self, trust)

        @property
        def is_connected(self) -> bool:
            sock = self.sock
            if sock is None:
                return False
            if not wait_for_read(sock, timeout=0.0):
                return True
            previous = sock.gettimeout()
            try:
                sock.setblocking(False)
                data = sock.recv(1)
            except ssl.SSLWantReadError:
                return True  # only session tickets (or other handshake records) were waiting
            except OSError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    sock.settimeout(previous)
            # end of stream (b""), or data nobody asked for: not a connection to reuse
            del data
            return False

    class TicketTolerantPool(Releasing, HTTPSConnectionPool):
        ConnectionCls = TicketTolerantConnection

    return {"http": WatchedPool, "https": TicketTolerantPool}


_POOLS: dict[str, Any] = {}


def _go_words(conn: Any, trust: Trust, exc: BaseException) -> None:
    """OpenSSL refused a chain (host name, issuer): fetch it once more, unverified, and raise
    Go's verdict on it instead, so that every check says what the clients say. Direct
    connections only: through a proxy the chain could be another."""
    import socket

    from diagnose.x509go import client_context, peer_chain, verify

    if conn._tunnel_host:
        return
    name = str(conn.assert_hostname or conn.server_hostname or conn.host)
    try:
        with (
            socket.create_connection((conn.host, conn.port), timeout=conn.timeout or 5.0) as raw,
            client_context().wrap_socket(raw, server_hostname=name) as tls,
        ):
            chain = peer_chain(tls)
    except (OSError, ssl.SSLError):
        return
    verdict = verify(chain, name, trust)
    if not verdict.ok:
        err = ssl.SSLCertVerificationError(1, verdict.error)
        err.verify_message, err.verify_code = verdict.error, 0
        raise err from exc


def _go_verdict(conn: Any, trust: Trust) -> None:
    """The chain of a connection OpenSSL accepted, judged as a Go client judges it: a chain
    Go refuses (SHA-1, an extended key usage without serverAuth, name constraints...) fails
    the connection with Go's own words, whatever host it is (registry, token service,
    storage)."""
    from diagnose.x509go import peer_chain, verify

    sock = conn.sock
    if not isinstance(sock, ssl.SSLSocket):
        return
    name = conn.assert_hostname or conn.server_hostname or conn._tunnel_host or conn.host
    verdict = verify(peer_chain(sock), str(name), trust)
    if verdict.ok:
        return
    conn.close()
    err = ssl.SSLCertVerificationError(1, verdict.error)
    err.verify_message, err.verify_code = verdict.error, 0
    raise err


# --------------------------------------------------------------------- errors, as requests
# names them: code written against requests' exceptions reads the same, and each keeps the
# urllib3 error it stands for (args[0], and __context__), so a classifier can look inside.
class RequestException(OSError):
    """A request that got no usable answer."""


class ConnectionError(RequestException):
    pass


class ProxyError(ConnectionError):
    pass


class SSLError(ConnectionError):
    pass


class Timeout(RequestException):
    pass


class ConnectTimeout(ConnectionError, Timeout):
    pass


class ReadTimeout(Timeout):
    pass


class ChunkedEncodingError(RequestException):
    pass


class ContentDecodingError(RequestException):
    pass


class InvalidURL(RequestException, ValueError):
    pass


class InvalidHeader(RequestException, ValueError):
    pass


class Response:
    """An answer: status, headers (case-insensitive), the URL asked, and the body read from
    `raw` (urllib3's response) as the caller wants it, decoded as Go's transport decodes."""

    def __init__(self, raw: Any, url: str) -> None:
        self.raw = raw
        self.url = url
        self.status_code: int = raw.status
        self.reason: str = raw.reason or ""
        self.headers: Any = raw.headers
        self._content: bytes | None = None
        self._content_consumed = False

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def iter_content(self, chunk_size: int = 1) -> Iterator[bytes]:
        import urllib3.exceptions as u3

        try:
            yield from self.raw.stream(chunk_size, decode_content=True)
        except u3.ProtocolError as exc:
            raise ChunkedEncodingError(exc) from exc
        except u3.DecodeError as exc:
            raise ContentDecodingError(exc) from exc
        except u3.ReadTimeoutError as exc:
            raise ConnectionError(exc) from exc
        except u3.SSLError as exc:
            raise SSLError(exc) from exc
        self._content_consumed = True

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.iter_content(64 * 1024))
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)

    def close(self) -> None:
        """A body read to its end leaves its connection in the pool; any other is dropped."""
        if not self._content_consumed:
            self.raw.close()
        release = getattr(self.raw, "release_conn", None)
        if release is not None:
            release()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _basic(user: str, password: str) -> str:
    """Basic credentials as Go's net/http writes them: base64 of the UTF-8 bytes (requests
    would send latin-1 where it can, and a password with "é" would differ)."""
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class Session:
    """Keep-alive connection pools per host (and per proxy), trusting `ssl_context`; requests
    never follow redirects by themselves (the checks follow them by hand, so that an
    Authorization header can never travel to another host), read no ~/.netrc and make no
    retries of their own."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        pools: Mapping[str, Any],
        pin: Callable[[str], str | None] | None,
    ) -> None:
        from urllib3 import PoolManager

        self.ssl_context = ssl_context
        self.verify = ssl_context.verify_mode != ssl.CERT_NONE
        self.headers = {
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "gzip, deflate",
            "Accept": "*/*",
            "Connection": "keep-alive",
        }
        self._pools = dict(pools)
        self._pin = pin
        self._direct = PoolManager(num_pools=32, maxsize=POOL_SIZE, ssl_context=ssl_context)
        self._direct.pool_classes_by_scheme = self._pools
        self._by_proxy: dict[str, Any] = {}

    def _manager(self, proxy: str | None) -> Any:
        if not proxy:
            return self._direct
        manager = self._by_proxy.get(proxy)
        if manager is None:
            from urllib3 import ProxyManager

            parts = urlsplit(proxy)
            headers = {}
            if parts.username:
                from urllib.parse import unquote

                user, password = unquote(parts.username), unquote(parts.password or "")
                headers = {"Proxy-Authorization": _basic(user, password)}
            kwargs: dict[str, Any] = {"ssl_context": self.ssl_context}
            if parts.scheme.lower() == "https":
                # the proxy's own certificate is judged by the same store, as Go clients do
                kwargs["proxy_ssl_context"] = self.ssl_context
            manager = ProxyManager(
                proxy, proxy_headers=headers, num_pools=32, maxsize=POOL_SIZE, **kwargs
            )
            manager.pool_classes_by_scheme = self._pools
            self._by_proxy[proxy] = manager
        return manager

    def pool_for(self, url: str, proxies: Mapping[str, str] | None = None) -> Any:
        """The connection pool a request to url uses (what `warm` opens a connection in), and
        the Host header it needs when the run pins the address."""
        return self._pool(url, proxies)[0]

    def _pool(self, url: str, proxies: Mapping[str, str] | None) -> tuple[Any, str | None]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise InvalidURL(f"not an http(s) URL with a host: {url[:100]}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise InvalidURL(f"the port of {url[:100]} is not a number") from None
        name = parts.hostname
        proxy = (proxies or {}).get(scheme) or (proxies or {}).get("all")
        kwargs: dict[str, Any] = {}
        host_header = None
        connect_to = name
        address = self._pin(name) if self._pin is not None and not proxy else None
        if address and address != name:
            connect_to = address
            host_header = parts.netloc.rpartition("@")[2]
            if scheme == "https":
                kwargs["server_hostname"] = name
        if scheme == "https":
            # urllib3 matches the host name itself: it turns check_hostname off on the context,
            # the same way for every session, so that one context can be shared
            kwargs["assert_hostname"] = name if self.verify else False
            kwargs["cert_reqs"] = "CERT_REQUIRED" if self.verify else "CERT_NONE"
        pool = self._manager(proxy).connection_from_host(
            connect_to, port, scheme, pool_kwargs=kwargs
        )
        return pool, host_header

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        data: bytes | Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        proxies: Mapping[str, str] | None = None,
        stream: bool = False,
        allow_redirects: bool = False,
    ) -> Response:
        import urllib3.exceptions as u3
        from urllib3 import Retry
        from urllib3 import Timeout as U3Timeout

        del allow_redirects  # never followed here: see the class
        if params:
            from urllib.parse import urlencode

            url += ("&" if "?" in url else "?") + urlencode(params)
        pool, host_header = self._pool(url, proxies)
        parts = urlsplit(url)
        merged = {**self.headers, **(headers or {})}
        if host_header:
            merged["Host"] = host_header
        if auth is not None:
            merged["Authorization"] = _basic(auth[0], auth[1])
        if isinstance(data, Mapping):  # a form, as requests encodes one
            from urllib.parse import urlencode

            data = urlencode(data).encode()
            merged.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if data is not None:
            merged.setdefault("Content-Length", str(len(data)))
        elif method.upper() in ("POST", "PUT", "PATCH"):
            merged.setdefault("Content-Length", "0")
        proxied = pool.proxy is not None and parts.scheme.lower() == "http"
        query = f"?{parts.query}" if parts.query else ""
        target = url if proxied else (parts.path or "/") + query
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        try:
            raw = pool.urlopen(
                method,
                target,
                body=data,
                headers=merged,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=Retry(0, read=False),
                timeout=U3Timeout(connect=connect, read=read),
            )
        except (u3.ProtocolError, OSError) as exc:
            raise ConnectionError(exc) from exc
        except u3.MaxRetryError as exc:
            reason = exc.reason
            if isinstance(reason, u3.ConnectTimeoutError) and not isinstance(
                reason, u3.NewConnectionError
            ):
                raise ConnectTimeout(exc) from exc
            if isinstance(reason, u3.ProxyError):
                raise ProxyError(exc) from exc
            if isinstance(reason, u3.SSLError):
                raise SSLError(exc) from exc
            raise ConnectionError(exc) from exc
        except u3.ClosedPoolError as exc:
            raise ConnectionError(exc) from exc
        except u3.ProxyError as exc:
            raise ProxyError(exc) from exc
        except u3.SSLError as exc:
            raise SSLError(exc) from exc
        except u3.ReadTimeoutError as exc:
            raise ReadTimeout(exc) from exc
        except u3.InvalidHeader as exc:
            raise InvalidHeader(exc) from exc
        except u3.LocationParseError as exc:
            raise InvalidURL(exc) from exc
        resp = Response(raw, url)
        if not stream:
            try:
                resp.content  # noqa: B018 - read now, so that the connection goes back
            finally:
                resp.close()
        return resp

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)

    def head(self, url: str, **kw: Any) -> Response:
        return self.request("HEAD", url, **kw)

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> Response:
        return self.request("PUT", url, **kw)

    def patch(self, url: str, **kw: Any) -> Response:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: Any) -> Response:
        return self.request("DELETE", url, **kw)

    def close(self) -> None:
        self._direct.clear()
        for manager in self._by_proxy.values():
            manager.clear()


def make_session(
    ssl_context: ssl.SSLContext,
    *,
    pin: Callable[[str], str | None] | None = None,
    trust: Trust | None = None,
) -> Session:
    """A session trusting `ssl_context`; `pin(host)` returns the address to connect to, if any.
    With `trust`, every TLS connection is judged by Go's rules too (diagnose.x509go)."""
    if not _POOLS:
        _POOLS.update(_pool_classes())
    verifying = ssl_context.verify_mode != ssl.CERT_NONE
    pools = _pool_classes(trust) if trust is not None and verifying else _POOLS
    return Session(ssl_context, pools, pin)


def warm(session: Session, url: str, timeout: float, proxies: Mapping[str, str]) -> str | None:
    """Open (TCP, proxy tunnel, TLS) the pooled connection a request to url would use, and
    leave it in the session's pool: a check can prove a host reachable with the very
    connection the next requests reuse, instead of paying for a handshake twice. Returns the
    TLS version; raises what connecting raised."""
    pool = session.pool_for(url, proxies)
    conn = pool._get_conn(timeout=timeout)
    try:
        conn.timeout = timeout
        if getattr(conn, "sock", None) is None:
            _connect(pool, conn)
        sock = conn.sock
        version = sock.version() if hasattr(sock, "version") else None
    except BaseException:
        conn.close()
        pool._put_conn(None)
        raise
    pool._put_conn(conn)
    return str(version) if version else None


def _connect(pool: Any, conn: Any) -> None:
    """Connect as urllib3's urlopen would: through a proxy, ask it for the tunnel (CONNECT)
    before TLS, instead of speaking TLS to the proxy itself."""
    from urllib3.util.proxy import connection_requires_http_tunnel

    proxy = getattr(pool, "proxy", None)
    if proxy is not None and connection_requires_http_tunnel(
        proxy, getattr(pool, "proxy_config", None), pool.scheme
    ):
        pool._prepare_proxy(conn)
    else:
        conn.connect()
