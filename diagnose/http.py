"""The HTTP client every check uses: requests, with the run's trust store and name resolution.

Two things differ from a plain `requests.Session`:
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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests

    from diagnose.x509pool import Trust

USER_AGENT = "registry-diagnose"

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


def make_session(
    ssl_context: ssl.SSLContext,
    *,
    pin: Callable[[str], str | None] | None = None,
    trust: Trust | None = None,
) -> requests.Session:
    """A session trusting `ssl_context`; `pin(host)` returns the address to connect to, if any.
    With `trust`, every TLS connection is judged by Go's rules too (diagnose.x509go)."""
    import requests
    from requests.adapters import HTTPAdapter

    if not _POOLS:
        _POOLS.update(_pool_classes())
    verifying = ssl_context.verify_mode != ssl.CERT_NONE
    pools = _pool_classes(trust) if trust is not None and verifying else _POOLS

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ssl_context
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            # requests makes the proxy's pool manager apart from the direct one: without this,
            # a request through a proxy would trust certifi's bundle, not what docker trusts
            proxy_kwargs["ssl_context"] = ssl_context
            if proxy.lower().startswith("https://"):
                # and the proxy's own certificate (an https:// proxy URL) against the same
                # store, as Go clients check it, not certifi's
                proxy_kwargs["proxy_ssl_context"] = ssl_context
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

        def build_connection_pool_key_attributes(
            self, request: requests.PreparedRequest, verify: Any, cert: Any = None
        ) -> tuple[Any, Any]:
            base = super().build_connection_pool_key_attributes(request, verify, cert)
            host_params: dict[str, Any] = dict(base[0])
            pool_kwargs: dict[str, Any] = dict(base[1])
            name = host_params.get("host")
            address = pin(name) if (pin is not None and name) else None
            if address and address != name:
                host_params["host"] = address
                if host_params.get("scheme") == "https":
                    pool_kwargs["server_hostname"] = name
            if host_params.get("scheme") == "https" and name:
                # Always let urllib3 match the host name itself. It then turns check_hostname
                # off on the context, for every session alike, so one context can be shared.
                pool_kwargs["assert_hostname"] = name if verifying else False
            return host_params, pool_kwargs

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            # requests hands every verifying connection certifi's bundle, and urllib3 loads it
            # into the context on each new connection: a trust docker does not have (the
            # context holds the system store and --ca-bundle already), and 20 ms of CPU a time
            super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
            conn.ca_certs = None
            conn.ca_cert_dir = None

        def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
            if pin is not None and request.url:
                parts = urlsplit(request.url)
                if parts.hostname and pin(parts.hostname):
                    request.headers["Host"] = parts.netloc.rpartition("@")[2]
            return super().send(request, *args, **kwargs)

    s = requests.Session()
    s.trust_env = False  # no ~/.netrc credentials; proxies are set per request below
    s.headers["User-Agent"] = USER_AGENT
    adapter = _Adapter(max_retries=0)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    if not ssl_context.check_hostname and ssl_context.verify_mode == ssl.CERT_NONE:
        s.verify = False
    return s


def warm(
    session: requests.Session, url: str, timeout: float, proxies: Mapping[str, str]
) -> str | None:
    """Open (TCP, proxy tunnel, TLS) the pooled connection a request to url would use, and
    leave it in the session's pool: a check can prove a host reachable with the very
    connection the next requests reuse, instead of paying for a handshake twice. Returns the
    TLS version; raises what connecting raised."""
    import requests

    adapter = session.get_adapter(url)
    prepared = requests.Request("GET", url).prepare()
    pool = adapter.get_connection_with_tls_context(  # type: ignore[attr-defined]
        prepared, session.verify, proxies=dict(proxies) or None
    )
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
