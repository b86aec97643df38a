"""One registry endpoint walked the way a client that is configured for it would walk it: DNS,
TCP, TLS with the trust that client has (its own CA files and the system store, or none at all
with skip-verify), the certificate judged as Go's crypto/x509 judges it, then `GET /v2/`. Used
for the hosts a runtime's configuration sends a pull to (mirrors, rewritten locations), which
the registry-level checks never see."""

from __future__ import annotations

import http.client
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from diagnose.net import ConnectError, connect
from diagnose.resolve import ResolveError

if TYPE_CHECKING:
    from diagnose.context import CheckContext
    from diagnose.x509go import Verdict


@dataclass(frozen=True)
class Probe:
    """How far a client gets with one endpoint; `step` names where it stopped."""

    url: str
    ok: bool
    step: str  # ok | url | dns | tcp | ca | tls | http | api
    detail: str
    status: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None  # Go's verdict on the certificate, when it refused it

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "step": self.step,
            "detail": self.detail,
            "status": self.status,
            **self.evidence,
        }


def probe(
    ctx: CheckContext,
    url: str,
    *,
    ca_files: tuple[str, ...] = (),
    skip_verify: bool = False,
    extra_ca: str | None = None,
    strict_ca: bool = False,
    plain_http_fallback: bool = False,
    timeout: float = 5.0,
) -> Probe:
    """Walk url (scheme://host[:port]/path/) to an answer from its /v2/ endpoint. A CA file
    that holds no certificate stops the walk only with strict_ca (containerd refuses to pull;
    docker and containers/image skip the file)."""
    parts = urlsplit(url if "://" in url else "https://" + url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return Probe(url, False, "url", "the port is not a number")
    if parts.scheme not in ("http", "https") or not host:
        return Probe(url, False, "url", "not an http(s) URL with a host")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    budget = ctx.budget(timeout)
    try:
        addresses = ctx.resolver.addresses(host, port, budget)
    except ResolveError as exc:
        return Probe(url, False, "dns", f"{host} does not resolve: {exc}")
    if not addresses:
        return Probe(url, False, "dns", f"{host} has no address")
    t0 = time.monotonic()
    try:
        sock, connect_ms = connect(addresses[0], port, ctx.budget(timeout))
    except ConnectError as exc:
        return Probe(
            url,
            False,
            "tcp",
            f"connect to {host}:{port} ({addresses[0]}): {exc.kind}",
            evidence={"address": addresses[0], "kind": exc.kind},
        )
    evidence: dict[str, Any] = {"address": addresses[0], "connect_ms": round(connect_ms, 2)}
    if parts.scheme == "https":
        from diagnose.x509go import client_context, peer_chain, verify
        from diagnose.x509pool import CAFileError, Trust, pool_from_files

        try:
            files = pool_from_files(
                (*ca_files, *((extra_ca,) if extra_ca else ())), strict=strict_ca
            )
        except CAFileError as exc:
            sock.close()
            return Probe(url, False, "ca", f"the CA file {exc.path} cannot be used: {exc.why}")
        try:
            sock = client_context().wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            text = str(exc)
            if plain_http_fallback or "WRONG_VERSION_NUMBER" in text or "record layer" in text:
                return Probe(
                    url,
                    False,
                    "tls",
                    f"{host}:{port} does not speak TLS (plain HTTP?)",
                    None,
                    evidence,
                )
            return Probe(
                url, False, "tls", f"TLS with {host}:{port} failed: {text}", None, evidence
            )
        if not skip_verify:
            verdict = verify(peer_chain(sock), host, Trust(files, environ=ctx.environ))
            if not verdict.ok:
                sock.close()
                return Probe(
                    url,
                    False,
                    "tls",
                    f"the certificate of {host}:{port} is not trusted: {verdict.error}",
                    evidence={**evidence, "verify": verdict.evidence()},
                    verdict=verdict,
                )
    conn = http.client.HTTPConnection(host, port, timeout=ctx.budget(timeout))
    conn.sock = sock
    try:
        conn.request(
            "GET", path + "", headers={"Host": parts.netloc, "User-Agent": "registry-diagnose"}
        )
        resp = conn.getresponse()
        resp.read(4096)
        status = resp.status
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return Probe(url, False, "http", f"no HTTP answer from {host}:{port}: {type(exc).__name__}")
    finally:
        conn.close()
    evidence["ms"] = round((time.monotonic() - t0) * 1000, 2)
    if status in (200, 401):
        return Probe(
            url, True, "ok", f"{parts.netloc} answers {path} with {status}", status, evidence
        )
    return Probe(
        url,
        False,
        "api",
        f"{parts.netloc} answers {path} with HTTP {status}: not a registry API there",
        status,
        evidence,
    )


def certificate_verdict(
    ctx: CheckContext,
    host: str,
    port: int,
    *,
    ca_files: tuple[str, ...] = (),
    timeout: float = 5.0,
    run_bundle: bool = True,
) -> Verdict | None:
    """Go's verdict on the chain host:port sends, trusting the system store and ca_files (the
    run's --ca-bundle when none are given and run_bundle; a client's own trust passes
    run_bundle=False); None when no handshake could be made to ask."""
    from diagnose.x509go import client_context, peer_chain, verify
    from diagnose.x509pool import CAFileError, Trust, pool_from_files

    bundle = ctx.options.ca_bundle if run_bundle else None
    try:
        files = pool_from_files(ca_files or ((str(bundle),) if bundle else ()))
        addresses = ctx.resolver.addresses(host, port, ctx.budget(timeout))
        sock, _ = connect(addresses[0], port, ctx.budget(timeout))
    except (CAFileError, ResolveError, ConnectError, IndexError):
        return None
    try:
        with client_context().wrap_socket(sock, server_hostname=host) as tls:
            chain = peer_chain(tls)
    except (ssl.SSLError, OSError):
        return None
    finally:
        sock.close()
    return verify(chain, host, Trust(files, environ=ctx.environ))
