"""Trying a proxy the way a Go client uses it, and saying what a Go client would see.

A Go client reaches an https URL through a proxy in three steps: it connects to the proxy (in TLS
when the proxy URL says https://), asks it for a tunnel (`CONNECT host:port`), then speaks TLS
with the registry inside the tunnel. Each step fails in its own way, and the mistakes people make
show up at a precise step: a proxy URL written https:// for a proxy that speaks plain HTTP fails
the first (`proxyconnect tcp: tls: first record does not look like a TLS handshake`), http:// for
a proxy that speaks TLS fails the second, and a proxy that inspects TLS passes both and hands over
a certificate of its own making at the third. The probe walks the same steps, with the trust
store of the client being judged, and keeps the certificate seen through the tunnel so that it
can be set beside the one the registry sends directly.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from diagnose.net import connect
from diagnose.proxy import safe_proxy_url
from diagnose.resolve import ResolveError, is_ip
from diagnose.secrets import register

if TYPE_CHECKING:
    from diagnose.context import CheckContext

HEAD_LIMIT = 16 * 1024
# what Go prints for each way a proxy fails (net/http transport, crypto/tls)
GO_FIRST_RECORD = "proxyconnect tcp: tls: first record does not look like a TLS handshake"
GO_TLS_TIMEOUT = "proxyconnect tcp: net/http: TLS handshake timeout"

# dial(host, port, timeout) -> an open socket; raises OSError (or a subclass of Exception with
# a `kind`) when it cannot connect
Dial = Callable[[str, int, float], socket.socket]
Budget = Callable[[float], float]


@dataclass(frozen=True)
class ProxyUrl:
    """A proxy setting, parsed; the password never leaves this object except in the header."""

    shown: str  # scheme://host:port, no user-info
    scheme: str
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, raw: str) -> ProxyUrl | None:
        safe = safe_proxy_url(raw)
        if safe is None:
            return None
        shown, host, port, _ = safe
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
        auth = None
        if parts.username is not None:
            password = unquote(parts.password or "")
            register(password)
            pair = f"{unquote(parts.username)}:{password}"
            auth = "Basic " + base64.b64encode(pair.encode()).decode()
            register(auth)
        return cls(shown, shown.split("://", 1)[0], host, port, auth)


@dataclass(frozen=True)
class CertSeen:
    """A server certificate as a client received it: who it names and who signed it."""

    subject: str
    issuer: str
    issuer_key_id: str | None
    names: tuple[str, ...]
    sha256: str

    @classmethod
    def from_der(cls, der: bytes) -> CertSeen | None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        names: list[str] = []
        with contextlib.suppress(x509.ExtensionNotFound):
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [
                *san.get_values_for_type(x509.DNSName),
                *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
            ]
        key_id = None
        with contextlib.suppress(x509.ExtensionNotFound, ValueError):
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            key_id = aki.key_identifier.hex() if aki.key_identifier else None
        return cls(
            cert.subject.rfc4514_string(),
            cert.issuer.rfc4514_string(),
            key_id,
            tuple(names[:20]),
            cert.fingerprint(hashes.SHA256()).hex(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "issuer_key_id": self.issuer_key_id,
            "names": list(self.names),
            "sha256": self.sha256,
        }


def reissued(through: CertSeen, direct: CertSeen) -> bool:
    """Whether the certificate seen through a proxy was signed by someone other than the one
    that signed the registry's own: another issuer name, or the same name with another key."""
    if through.sha256 == direct.sha256:
        return False
    if through.issuer != direct.issuer:
        return True
    return bool(
        through.issuer_key_id
        and direct.issuer_key_id
        and through.issuer_key_id != direct.issuer_key_id
    )


@dataclass
class Probe:
    """What trying the proxy for one host:port came to.

    kind: ok, refused, timeout, dns, unreachable, auth, denied, reset, closed, garbage,
    https-for-plain, http-for-tls, proxy-cert, proxy-tls, tls (TLS inside the tunnel failed
    without a certificate to judge)."""

    kind: str
    words: str
    go_says: str | None = None
    status: int | None = None
    ms: float | None = None
    cert: CertSeen | None = None
    trusted: bool | None = None
    verify_error: str | None = None

    @property
    def tunnel_open(self) -> bool:
        return self.kind in ("ok", "tls")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.kind}
        if self.status is not None:
            out["status"] = self.status
        if self.ms is not None:
            out["ms"] = round(self.ms, 2)
        if self.go_says:
            out["go_says"] = self.go_says
        if self.cert is not None:
            out["certificate"] = self.cert.to_dict()
            out["trusted"] = self.trusted
        if self.verify_error:
            out["verify_error"] = self.verify_error
        return out


class _Stop(Exception):
    def __init__(self, probe: Probe) -> None:
        super().__init__(probe.words)
        self.probe = probe


def _dial_failure(exc: Exception, proxy: ProxyUrl) -> Probe:
    kind = getattr(exc, "kind", None) or ("timeout" if isinstance(exc, TimeoutError) else "")
    where = f"dial tcp {proxy.hostport}"
    if kind == "refused" or isinstance(exc, ConnectionRefusedError):
        return Probe(
            "refused",
            f"nothing accepts connections at the proxy's address {proxy.hostport} "
            "(connection refused)",
            f"proxyconnect tcp: {where}: connect: connection refused",
        )
    if kind == "timeout":
        return Probe(
            "timeout",
            f"the proxy {proxy.hostport} does not answer (connection timed out)",
            f"proxyconnect tcp: {where}: i/o timeout",
        )
    if kind in ("nxdomain", "servfail", "refused-dns", "no-answer", "dns") or isinstance(
        exc, socket.gaierror
    ):
        return Probe(
            "dns",
            f"the proxy's host name {proxy.host} does not resolve",
            f"proxyconnect tcp: dial tcp: lookup {proxy.host}: no such host",
        )
    if kind == "unreachable":
        return Probe(
            "unreachable",
            f"no route to the proxy {proxy.hostport}",
            f"proxyconnect tcp: {where}: connect: no route to host",
        )
    return Probe("other", f"connecting to the proxy {proxy.hostport} failed: {exc}")


def _read_head(sock: Any, budget: float) -> bytes:
    """The proxy's answer to CONNECT, up to the blank line (bounded in size and time)."""
    deadline = time.monotonic() + budget
    data = b""
    while b"\r\n\r\n" not in data and len(data) < HEAD_LIMIT:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _go_quote(line: bytes) -> str:
    """A line as Go's %q shows it, near enough to recognise."""
    out = []
    for b in line[:40]:
        ch = chr(b)
        out.append(ch if 32 <= b < 127 and ch not in '"\\' else f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def _connect_request(host: str, port: int, proxy: ProxyUrl) -> bytes:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", "User-Agent: registry-diagnose"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _speaks_tls(proxy: ProxyUrl, dial: Dial, budget: Budget) -> bool:
    """Whether the proxy's port completes a TLS handshake (of any certificate)."""
    plain = unverified_context()
    try:
        sock = dial(proxy.host, proxy.port, budget(3.0))
    except Exception:
        return False
    try:
        sock.settimeout(budget(3.0))
        with plain.wrap_socket(sock, server_hostname=proxy.host):
            return True
    except (OSError, ValueError):
        return False
    finally:
        sock.close()


def _speaks_plain_http(proxy: ProxyUrl, host: str, port: int, dial: Dial, budget: Budget) -> bool:
    try:
        sock = dial(proxy.host, proxy.port, budget(3.0))
    except Exception:
        return False
    try:
        sock.sendall(_connect_request(host, port, proxy))
        return _read_head(sock, budget(3.0)).startswith(b"HTTP/")
    except OSError:
        return False
    finally:
        sock.close()


def _open_to_proxy(
    proxy: ProxyUrl, target: tuple[str, int], trust: ssl.SSLContext, dial: Dial, budget: Budget
) -> Any:
    """The connection to the proxy itself, in TLS when its URL says https://."""
    try:
        sock = dial(proxy.host, proxy.port, budget(4.0))
    except Exception as exc:
        raise _Stop(_dial_failure(exc, proxy)) from None
    if proxy.scheme != "https":
        return sock
    sock.settimeout(budget(4.0))
    try:
        return trust.wrap_socket(sock, server_hostname=proxy.host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        why = str(exc.verify_message or exc.reason or exc)
        raise _Stop(
            Probe(
                "proxy-cert",
                f"the proxy's own certificate is not trusted ({why})",
                "proxyconnect tcp: tls: failed to verify certificate: x509: ...",
                verify_error=why,
            )
        ) from None
    except (OSError, ValueError) as exc:
        sock.close()
        seen = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        raise _Stop(_https_for_plain(proxy, target, seen, exc, dial, budget)) from None


def _https_for_plain(
    proxy: ProxyUrl,
    target: tuple[str, int],
    seen: str,
    exc: BaseException,
    dial: Dial,
    budget: Budget,
) -> Probe:
    """TLS with the proxy failed: a plain-HTTP proxy behind an https:// URL, or something else."""
    if not _speaks_plain_http(proxy, *target, dial, budget):
        return Probe(
            "proxy-tls",
            f"TLS with the proxy {proxy.hostport} itself failed ({exc or seen})",
            "proxyconnect tcp: tls: ...",
        )
    go = GO_TLS_TIMEOUT if seen == "timeout" else GO_FIRST_RECORD
    waited = (
        " (this proxy waits for the rest of what it takes for a request, so a Go client gives "
        "up on the handshake after 10 seconds)"
        if seen == "timeout"
        else ""
    )
    return Probe(
        "https-for-plain",
        "its URL says https://, but it speaks plain HTTP: the client starts TLS with the "
        f"proxy and gets an HTTP answer back{waited}",
        go,
    )


def _http_for_tls(proxy: ProxyUrl, answer: bytes, reset: bool) -> Probe:
    if reset:
        saw, go = "resets the connection", "read: connection reset by peer"
    elif not answer:
        saw, go = "closes the connection without a word", "unexpected EOF"
    else:
        line = answer.split(b"\r\n", 1)[0]
        saw, go = (
            "answers with bytes that are not HTTP",
            f"malformed HTTP response {_go_quote(line)}",
        )
    return Probe(
        "http-for-tls",
        "its URL says http://, but it speaks TLS: the client sends its CONNECT in clear "
        f"text, and the proxy {saw}",
        go,
    )


def _ask_tunnel(
    sock: Any, proxy: ProxyUrl, host: str, port: int, dial: Dial, budget: Budget
) -> None:
    """Send CONNECT and read the answer; raise _Stop unless it is 200."""
    reset = False
    try:
        sock.sendall(_connect_request(host, port, proxy))
        answer = _read_head(sock, budget(5.0))
    except TimeoutError:
        raise _Stop(
            Probe("timeout", f"the proxy {proxy.hostport} did not answer CONNECT in time")
        ) from None
    except (ConnectionResetError, BrokenPipeError):
        answer, reset = b"", True
    except OSError as exc:
        raise _Stop(Probe("other", f"asking the proxy for a tunnel failed: {exc}")) from None
    if not answer.startswith(b"HTTP/"):
        if proxy.scheme == "http" and _speaks_tls(proxy, dial, budget):
            raise _Stop(_http_for_tls(proxy, answer, reset))
        if reset:
            raise _Stop(
                Probe(
                    "reset",
                    f"the proxy {proxy.hostport} resets the connection when asked for a "
                    f"tunnel to {host}:{port}",
                    "read: connection reset by peer",
                )
            )
        if not answer:
            raise _Stop(
                Probe(
                    "closed",
                    f"the proxy {proxy.hostport} closes the connection when asked for a "
                    f"tunnel to {host}:{port}",
                    "unexpected EOF",
                )
            )
        line = answer.split(b"\r\n", 1)[0]
        raise _Stop(
            Probe(
                "garbage",
                f"the proxy {proxy.hostport} does not answer CONNECT in HTTP",
                f"malformed HTTP response {_go_quote(line)}",
            )
        )
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    reason = (parts[2] if len(parts) > 2 else "").strip()[:100]
    if status == 200:
        return
    if status == 407:
        raise _Stop(
            Probe(
                "auth",
                f"the proxy asks for credentials (407 {reason or 'Proxy Authentication Required'})"
                + (": the ones in the proxy URL were refused" if proxy.authorization else ""),
                reason or "Proxy Authentication Required",
                status=status,
            )
        )
    if status == 400 and proxy.scheme == "http" and b"HTTPS server" in answer:
        raise _Stop(_http_for_tls_400(proxy))
    raise _Stop(
        Probe(
            "denied",
            f"the proxy refuses a tunnel to {host}:{port} ({status} {reason})".rstrip(),
            reason or f"{status}",
            status=status,
        )
    )


def _http_for_tls_400(proxy: ProxyUrl) -> Probe:
    return Probe(
        "http-for-tls",
        "its URL says http://, but it speaks TLS: it answers the clear-text CONNECT with 400 "
        "(an HTTP request to an HTTPS server)",
        "Bad Request",
        status=400,
    )


def _handshake(sock: Any, context: ssl.SSLContext, host: str, budget: Budget) -> Any:
    """TLS with the registry inside the tunnel (a tunnel in TLS itself when the proxy is)."""
    sni = host.strip("[]")
    if isinstance(sock, ssl.SSLSocket):
        from urllib3.util.ssltransport import SSLTransport

        sock.settimeout(budget(5.0))
        return SSLTransport(sock, context, server_hostname=sni)
    sock.settimeout(budget(5.0))
    return context.wrap_socket(sock, server_hostname=sni)


def unverified_context() -> ssl.SSLContext:
    """A client that takes any certificate, to see who signed it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def try_proxy(
    proxy: ProxyUrl,
    host: str,
    port: int,
    *,
    trust: ssl.SSLContext,
    dial: Dial,
    budget: Budget,
    tls: bool = True,
) -> Probe:
    """Connect to the proxy, ask for a tunnel to host:port, and (tls) speak TLS with host in it,
    judging the certificate with `trust` (the store of the client being judged). Without tls
    (a plain-HTTP registry, which Go reaches with ordinary requests to the proxy, no CONNECT)
    only the connection to the proxy is tried."""
    t0 = time.monotonic()
    try:
        sock = _open_to_proxy(proxy, (host, port), trust, dial, budget)
        try:
            if not tls:
                return Probe("ok", "the proxy accepts connections", ms=_ms(t0))
            _ask_tunnel(sock, proxy, host, port, dial, budget)
            ms = _ms(t0)
            try:
                with contextlib.closing(_handshake(sock, trust, host, budget)) as inner:
                    der = inner.getpeercert(binary_form=True)
                return Probe(
                    "ok",
                    "tunnel opened",
                    ms=ms,
                    cert=CertSeen.from_der(der) if der else None,
                    trusted=True,
                )
            except ssl.SSLCertVerificationError as exc:
                why = str(exc.verify_message or exc.reason or exc)
            except (OSError, ValueError) as exc:
                return Probe(
                    "tls", f"TLS with {host}:{port} inside the tunnel failed: {exc}", ms=ms
                )
        finally:
            sock.close()
    except _Stop as stop:
        return stop.probe
    # the certificate is not trusted: fetch it again without judging, to say who signed it
    seen = _certificate_only(proxy, host, port, dial, budget)
    return Probe("ok", "tunnel opened", ms=ms, cert=seen, trusted=False, verify_error=why)


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000


def _certificate_only(
    proxy: ProxyUrl, host: str, port: int, dial: Dial, budget: Budget
) -> CertSeen | None:
    try:
        sock = _open_to_proxy(proxy, (host, port), unverified_context(), dial, budget)
        try:
            _ask_tunnel(sock, proxy, host, port, dial, budget)
            with contextlib.closing(_handshake(sock, unverified_context(), host, budget)) as inner:
                der = inner.getpeercert(binary_form=True)
        finally:
            sock.close()
    except (_Stop, OSError, ValueError):
        return None
    return CertSeen.from_der(der) if der else None


def direct_certificate(
    addresses: list[str], host: str, port: int, dial: Dial, budget: Budget
) -> CertSeen | None:
    """The certificate the registry sends to a client that connects without the proxy; None
    when it cannot be reached directly from here."""
    # a network that lets only the proxy out drops direct connections: a short wait, once
    for address in addresses[:2]:
        try:
            sock = dial(address, port, budget(2.0))
        except Exception as exc:
            if isinstance(exc, TimeoutError) or getattr(exc, "kind", None) == "timeout":
                return None
            continue
        try:
            sock.settimeout(budget(3.0))
            with unverified_context().wrap_socket(sock, server_hostname=host.strip("[]")) as tls:
                der = tls.getpeercert(binary_form=True)
            return CertSeen.from_der(der) if der else None
        except (OSError, ValueError):
            continue
        finally:
            sock.close()
    return None


# ------------------------------------------------------------------ as a check runs it
def dialer(ctx: CheckContext) -> Callable[[str, int, float], socket.socket]:
    """Connect as the run resolves names (the hosts file under --host-root, --nameserver)."""

    def dial(host: str, port: int, timeout: float) -> socket.socket:
        if is_ip(host):
            addresses = [host.strip("[]")]
        else:
            try:
                addresses = ctx.resolver.addresses(host, port, timeout)
            except ResolveError as exc:
                raise socket.gaierror(str(exc)) from None
        if not addresses:
            raise socket.gaierror(f"{host} has no address")
        sock, _ = connect(addresses[0], port, timeout)
        return sock

    return dial


def known_addresses(ctx: CheckContext, host: str, port: int) -> list[str]:
    """host's addresses as the run resolves them; none when it does not resolve."""
    if is_ip(host):
        return [host.strip("[]")]
    try:
        return ctx.resolver.addresses(host, port, ctx.budget(3.0))
    except ResolveError:
        return []


def seen_directly(ctx: CheckContext, probe: Probe, host: str, port: int) -> CertSeen | None:
    """The certificate host sends without the proxy, when one came through the tunnel."""
    if probe.cert is None:
        return None
    return direct_certificate(known_addresses(ctx, host, port), host, port, dialer(ctx), ctx.budget)
