"""TLS: protocol and cipher negotiated, whether TLS 1.0/1.1 is still accepted, and whether the
certificate the server sends is one a Go client (docker, containerd, podman) trusting the system
store and --ca-bundle accepts: judged by Go's crypto/x509 rules (diagnose.x509go), not
OpenSSL's, where the two disagree (Common Name, missing intermediates, key sizes)."""

from __future__ import annotations

import threading
import time
import warnings
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from diagnose.certadvice import CERTIFICATE_FAQ
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.facts import SCHEME
from diagnose.models import Finding, Status, passed, problem
from diagnose.net import ConnectError, connect, registry_addresses
from diagnose.resolve import ResolveError, is_ip
from diagnose.workers import WORKERS

if TYPE_CHECKING:
    import ssl

    from diagnose.x509go import Verdict

HANDSHAKE_CAP_S = 6.0
EXPIRY_WARN_DAYS = 14


class Handshake:
    """The outcome of one TLS handshake attempt."""

    def __init__(self) -> None:
        self.ok = False
        self.kind = ""  # timeout, reset, eof, plain-http, protocol, verify, tls, refused...
        self.detail = ""
        self.protocol: str | None = None
        self.cipher: tuple[str, str, int] | None = None
        self.der: bytes | None = None
        self.chain: list[bytes] = []
        self.ms = 0.0


def handshake(
    address: str, port: int, sni: str | None, context: ssl.SSLContext, timeout: float
) -> Handshake:
    import ssl

    from diagnose.x509go import peer_chain

    out = Handshake()
    try:
        sock, _ = connect(address, port, timeout)
    except ConnectError as exc:
        out.kind, out.detail = exc.kind, str(exc)
        return out
    t0 = time.monotonic()
    try:
        with context.wrap_socket(sock, server_hostname=sni) as tls:
            out.ms = (time.monotonic() - t0) * 1000
            out.ok = True
            out.protocol = tls.version()
            out.cipher = tls.cipher()
            out.der = tls.getpeercert(binary_form=True)
            out.chain = peer_chain(tls) or ([out.der] if out.der else [])
    except ssl.SSLError as exc:
        reason = (exc.reason or "").upper()
        out.detail = f"{exc.reason or exc}"
        if reason in (
            "WRONG_VERSION_NUMBER",
            "HTTP_REQUEST",
            "RECORD_LAYER_FAILURE",
            "PACKET_LENGTH_TOO_LONG",
        ):
            out.kind = "plain-http"
        elif "PROTOCOL" in reason or reason in ("NO_PROTOCOLS_AVAILABLE",):
            out.kind = "protocol"
        elif isinstance(exc, ssl.SSLEOFError) or "EOF" in reason:
            out.kind = "eof"
        else:
            out.kind = "tls"
    except (TimeoutError, OSError) as exc:
        kind = (
            "timeout"
            if isinstance(exc, TimeoutError)
            else ("reset" if isinstance(exc, ConnectionResetError | BrokenPipeError) else "error")
        )
        out.kind, out.detail = kind, f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    return out


_LEGACY: list[ssl.SSLContext] = []
_DESCRIBED: dict[bytes, dict[str, Any]] = {}


def legacy_context() -> ssl.SSLContext:
    """A client that offers only TLS 1.0/1.1, to learn whether the server still accepts them
    (made once: nothing changes it after)."""
    if not _LEGACY:
        _LEGACY.append(_legacy_context())
    return _LEGACY[0]


def _legacy_context() -> ssl.SSLContext:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def describe_cert(der: bytes) -> dict[str, Any]:
    """Subject, issuer, names and validity of a DER certificate, for evidence (the parse kept
    for the process: a probe meets the same certificate every time; days_left is fresh)."""
    kept = _DESCRIBED.get(der)
    if kept is None:
        kept = _describe(der)
        if len(_DESCRIBED) >= 64:
            _DESCRIBED.clear()
        _DESCRIBED[der] = kept
    out = dict(kept)
    not_after = out.pop("_not_after", None)
    if isinstance(not_after, datetime):
        out["days_left"] = round((not_after - datetime.now(UTC)).total_seconds() / 86400, 1)
    return out


def _describe(der: bytes) -> dict[str, Any]:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return {"error": f"certificate does not parse: {exc}"}
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [
            *san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        ]
    except x509.ExtensionNotFound:
        pass
    now = datetime.now(UTC)
    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "self_signed": cert.subject == cert.issuer,
        "names": names,
        "serial": format(cert.serial_number, "x"),
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": round((not_after - now).total_seconds() / 86400, 1),
        "sha256": cert.fingerprint(_sha256()).hex(),
        "_not_after": not_after,
    }


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


class TlsCheck(Check):
    id = "tls"
    title = "TLS and certificate"
    order = 40
    depends_on = ("tcp",)
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = (
        *CERTIFICATE_FAQ,
        "certificate-expired",
        "insecure-registry",
        "tls12",
        "network-connectivity",
        "client-timeout",
        "clock-skew",
        "firewall-propagation",
        "registry-api-v2",
    )
    codes = (
        Code.CONNECTIVITY_SSL_ERROR,
        Code.CONNECTIVITY_TLS_VERSION_ERROR,
        Code.TLS_CERT_EXPIRING,
        Code.INSECURE_REGISTRY,
        Code.TLS_CERT_NO_SAN,
        Code.TLS_CHAIN_INCOMPLETE,
        Code.TLS_CERT_WEAK,
        Code.TLS_CERT_USAGE,
        Code.TLS_CERT_NAME_CONSTRAINTS,
    )

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        port = reg.effective_port
        try:
            addresses = registry_addresses(ctx)
        except ResolveError as exc:
            return problem(
                Status.FAIL,
                f"no address to connect to: {exc}",
                code=Code.CONNECTIVITY_SSL_ERROR,
                faq=["network-connectivity"],
            )
        if not addresses:
            return problem(
                Status.FAIL,
                f"{reg.host} has no address to connect to",
                code=Code.CONNECTIVITY_SSL_ERROR,
                faq=["network-connectivity"],
            )
        sni = None if is_ip(reg.host) else reg.host
        server_name = reg.host.strip("[]")
        from diagnose.x509go import client_context

        # whether the old protocols are still accepted is asked at the same time, on the first
        # address, so that it costs no round trips of its own
        legacy: dict[str, Any] = {}
        legacy_done = threading.Event()

        def ask_legacy() -> None:
            try:
                self._legacy(addresses[0], port, sni, ctx, legacy)
            finally:
                legacy_done.set()

        WORKERS.submit(ask_legacy)
        # the first address that takes a connection, as a client would use it; the handshake
        # only fetches the chain the server sends: the verdict on it is Go's, below
        client = client_context()
        for address in addresses[:4]:
            main = handshake(address, port, sni, client, ctx.budget(HANDSHAKE_CAP_S))
            if main.kind not in ("refused", "unreachable"):
                break
        evidence: dict[str, Any] = {
            "address": address,
            "port": port,
            "sni": sni,
            "ca_bundle": str(ctx.options.ca_bundle) if ctx.options.ca_bundle else None,
            "handshake_ms": round(main.ms, 2),
        }
        legacy_done.wait(ctx.budget(HANDSHAKE_CAP_S))
        evidence["legacy_tls"] = legacy or {"accepted": None, "detail": "probe did not finish"}
        if main.protocol:
            evidence["protocol"] = main.protocol
        if main.cipher:
            evidence["cipher"] = {
                "name": main.cipher[0],
                "protocol": main.cipher[1],
                "bits": main.cipher[2],
            }
        cert = describe_cert(main.der) if main.der else None
        if cert:
            evidence["certificate"] = cert
        evidence["scheme"] = "https"
        ctx.put(SCHEME, "https")
        if not main.ok:
            return self._failed(ctx, reg.login_server, main, cert, legacy, evidence)
        verdict = self._verdict(ctx, main.chain, server_name)
        evidence["verify"] = verdict.evidence()
        evidence["chain_sent"] = list(verdict.sent)
        if verdict.ok and not verdict.warning:
            return self._healthy(reg.login_server, main, cert, legacy, evidence)
        return self._untrusted(ctx, reg.login_server, verdict, cert, evidence)

    @staticmethod
    def _verdict(ctx: CheckContext, chain: list[bytes], host: str) -> Verdict:
        """Go's verdict with the trust this run was given: the system store and --ca-bundle."""
        from diagnose.x509go import Verdict, verify
        from diagnose.x509pool import CAFileError, Trust, pool_from_files

        bundle = ctx.options.ca_bundle
        try:
            files = pool_from_files([bundle] if bundle else [])
        except CAFileError as exc:
            return Verdict(False, "parse", f"the --ca-bundle file cannot be read: {exc}")
        return verify(chain, host, Trust(files, environ=ctx.environ))

    def _legacy(
        self, address: str, port: int, sni: str | None, ctx: CheckContext, out: dict[str, Any]
    ) -> None:
        hs = handshake(address, port, sni, legacy_context(), ctx.budget(HANDSHAKE_CAP_S))
        out["accepted"] = hs.ok
        if hs.ok:
            out["protocol"] = hs.protocol
        else:
            out["detail"] = hs.kind

    def _healthy(
        self,
        name: str,
        hs: Handshake,
        cert: dict[str, Any] | None,
        legacy: dict[str, Any],
        evidence: dict[str, Any],
    ) -> Finding:
        legacy_note = f"; still accepts {legacy.get('protocol')}" if legacy.get("accepted") else ""
        days = cert.get("days_left") if cert else None
        if isinstance(days, float) and days < EXPIRY_WARN_DAYS:
            return problem(
                Status.WARN,
                f"certificate of {name} expires in {days:.0f} days ({cert and cert['not_after']})",
                code=Code.TLS_CERT_EXPIRING,
                faq=["certificate-expired", "network-connectivity"],
                remediation=[
                    "Renew the registry's certificate before it expires; every pull and "
                    "push fails from that moment."
                ],
                evidence=evidence,
            )
        cipher = hs.cipher[0] if hs.cipher else "?"
        expiry = f", certificate valid {days:.0f} more days" if isinstance(days, float) else ""
        return passed(f"{hs.protocol} with {cipher}, trusted{expiry}{legacy_note}", **evidence)

    def _failed(
        self,
        ctx: CheckContext,
        name: str,
        hs: Handshake,
        cert: dict[str, Any] | None,
        legacy: dict[str, Any],
        evidence: dict[str, Any],
    ) -> Finding:
        evidence["error"] = hs.kind
        insecure = ctx.options.insecure
        if hs.kind == "plain-http":
            if insecure:
                evidence["scheme"] = "http"
                ctx.put(SCHEME, "http")
                return problem(
                    Status.WARN,
                    f"{name} speaks plain HTTP, not TLS: allowed because of --insecure",
                    code=Code.INSECURE_REGISTRY,
                    faq=["insecure-registry", "tls12"],
                    remediation=[
                        "Traffic and credentials to this registry are not encrypted. Docker "
                        "accepts it only when the registry is in the daemon's "
                        "`insecure-registries`; prefer giving it a TLS certificate.",
                    ],
                    evidence=evidence,
                )
            return problem(
                Status.FAIL,
                f"{name} answers in plain HTTP, not TLS",
                code=Code.CONNECTIVITY_SSL_ERROR,
                faq=["insecure-registry", "tls12", "registry-api-v2"],
                remediation=[
                    "Serve the registry over TLS (docker expects HTTPS), or, for a test "
                    "registry, list it in `insecure-registries` in /etc/docker/daemon.json and "
                    "re-run with --insecure.",
                ],
                evidence=evidence,
            )
        if hs.kind == "protocol" or (hs.kind in ("tls", "eof") and legacy.get("accepted")):
            offered = legacy.get("protocol") or "an older protocol"
            return problem(
                Status.FAIL,
                f"{name} offers only {offered}: TLS 1.2 or later is required",
                code=Code.CONNECTIVITY_TLS_VERSION_ERROR,
                faq=["tls12"],
                remediation=[
                    "Enable TLS 1.2 (or 1.3) on the registry or on the proxy in front of it.",
                    "If a TLS-inspecting proxy sits between this host and the registry, it must "
                    "offer TLS 1.2 too.",
                ],
                evidence=evidence,
            )
        if hs.kind == "timeout":
            return problem(
                Status.FAIL,
                f"TLS handshake with {name} timed out: the port accepts connections but "
                "never answers",
                code=Code.CONNECTIVITY_SSL_ERROR,
                faq=["network-connectivity", "client-timeout"],
                remediation=[
                    "Something accepts the connection without speaking TLS: a proxy, a firewall "
                    "or a service that is not the registry. Check the port and the path.",
                ],
                evidence=evidence,
            )
        if hs.kind in ("reset", "eof"):
            return problem(
                Status.FAIL,
                f"the connection to {name} was "
                f"{'reset' if hs.kind == 'reset' else 'closed'} during the TLS handshake",
                code=Code.CONNECTIVITY_SSL_ERROR,
                faq=["network-connectivity", "firewall-propagation"],
                remediation=[
                    "A firewall, proxy or the registry's own network rules ended the connection; "
                    "check that this host is allowed to reach the registry.",
                ],
                evidence=evidence,
            )
        return problem(
            Status.FAIL,
            f"TLS with {name} failed: {hs.kind} {hs.detail}".strip(),
            code=Code.CONNECTIVITY_SSL_ERROR,
            faq=["network-connectivity", "tls12"],
            remediation=[
                "Compare with `openssl s_client -connect <host>:<port> "
                "-servername <host>` from this host."
            ],
            evidence=evidence,
        )

    def _untrusted(
        self,
        ctx: CheckContext,
        name: str,
        verdict: Verdict,
        cert: dict[str, Any] | None,
        evidence: dict[str, Any],
    ) -> Finding:
        """A chain Go refuses (or, with only a warning, one clients built for Go 1.24 and
        later refuse)."""
        from diagnose.certadvice import advise

        reg = ctx.registry
        host = reg.host.strip("[]") if reg else name
        port = reg.effective_port if reg else 443
        advice = advise(verdict, host, port, cert.get("names") if cert else None)
        if verdict.ok:
            return problem(
                Status.WARN,
                f"{name}: {advice.why}",
                code=advice.code,
                faq=advice.faq,
                remediation=advice.steps,
                evidence=evidence,
            )
        evidence["error"] = "verify"
        if ctx.options.insecure:
            return problem(
                Status.WARN,
                f"{name}: {advice.why}; accepted because of --insecure",
                code=Code.INSECURE_REGISTRY,
                faq=advice.faq,
                remediation=[
                    "Docker accepts this only for registries listed in "
                    "`insecure-registries`; fix the certificate instead.",
                    *advice.steps,
                ],
                evidence=evidence,
            )
        return problem(
            Status.FAIL,
            f"{name} is not trusted: {advice.why}",
            code=advice.code,
            faq=advice.faq,
            remediation=advice.steps,
            evidence=evidence,
        )
