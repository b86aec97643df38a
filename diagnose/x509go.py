"""Certificates judged as Go's crypto/x509 judges them, because every client that pulls an image
(docker, containerd, podman, skopeo, CRI-O, the kubelet) is a Go program, and OpenSSL's verdict
differs from theirs where users get hurt: OpenSSL falls back to the Common Name, refuses RSA keys
its security level finds short, and wants a self-signed root where Go takes any certificate of
its pool as an anchor.

This is Certificate.Verify of Go 1.20 and later, fed with the chain the server really sent:
host names only against subjectAltName DNS and IP entries; chains built from the pool and the
certificates sent (parents found by their raw subject, never fetched: no AIA); signatures with
SHA-1 or MD5 refused except on the anchor; a parent must be a CA allowed to sign certificates;
intermediates must be CAs within their path length; name constraints honoured; the extended key
usage of the chain must allow serverAuth; an unhandled critical extension refuses the
certificate. RSA keys under 1024 bits come out as a warning: Go 1.24 refuses them, but only in
programs whose module targets Go 1.24 (GODEBUG rsa1024min), which the docker, containerd and
skopeo builds met so far do not. Errors carry Go's own wording, so a finding says what the
client will print."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from diagnose.x509pool import CertError, GoCert, Pool, Trust, hexid

if TYPE_CHECKING:
    import ssl

MAX_SIGNATURE_CHECKS = 100  # Go's maxChainSignatureChecks
MIN_RSA_BITS = 1024  # crypto/rsa since Go 1.24
UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"
PARENT_CANNOT_SIGN = (
    "x509: invalid signature: parent certificate cannot sign this kind of certificate"
)
UNIMPLEMENTED = "x509: cannot verify signature: algorithm unimplemented"
KU_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "crl_sign",
)
SERVER_AUTH, ANY_EKU = "1.3.6.1.5.5.7.3.1", "2.5.29.37.0"
SGC = ("2.16.840.1.113730.4.1", "1.3.6.1.4.1.311.10.3.3")  # accepted as serverAuth by Go
# signature algorithms Go refuses as insecure, by the name Go prints
INSECURE = {
    "1.2.840.113549.1.1.5": "SHA1-RSA",
    "1.3.14.3.2.29": "SHA1-RSA",
    "1.2.840.10045.4.1": "ECDSA-SHA1",
    "1.2.840.10040.4.3": "DSA-SHA1",
    "1.2.840.113549.1.1.4": "MD5-RSA",
    "1.2.840.113549.1.1.2": "MD2-RSA",
}
SUPPORTED = {
    "1.2.840.113549.1.1.11",
    "1.2.840.113549.1.1.12",
    "1.2.840.113549.1.1.13",
    "1.2.840.113549.1.1.10",
    "1.2.840.10045.4.3.2",
    "1.2.840.10045.4.3.3",
    "1.2.840.10045.4.3.4",
    "1.3.101.112",
}


# ------------------------------------------------------------------------------ verifying
LEAF, INTERMEDIATE, ROOT = 0, 1, 2


@dataclass
class GoError:
    """An error as crypto/x509 returns it: `kind` for us, `message` in Go's words."""

    kind: str
    message: str
    cert: GoCert | None = None
    hint: GoError | None = None
    hint_cert: GoCert | None = None


def go_quote(s: str) -> str:
    """Go's %q of a string (strconv.Quote), as its errors embed other errors."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def rsa_insecure(bits: int) -> str:
    return (
        f"crypto/rsa: {bits}-bit keys are insecure "
        "(see https://go.dev/pkg/crypto/rsa#hdr-Minimum_key_size)"
    )


def _go_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unknown_authority(cert: GoCert, hint: GoError | None, hint_cert: GoCert | None) -> GoError:
    msg = UNKNOWN_AUTHORITY
    if hint is not None and hint_cert is not None:
        msg += (
            f" (possibly because of {go_quote(hint.message)} while trying to verify "
            f"candidate authority certificate {go_quote(hint_cert.label)})"
        )
    return GoError("unknown-authority", msg, cert, hint, hint_cert)


def _check_signature_from(child: GoCert, parent: GoCert) -> GoError | None:
    """Certificate.CheckSignatureFrom: the parent may sign certificates, the algorithm is
    one Go accepts, the signature holds."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    present, is_ca, _ = parent.basic
    ku = parent._value("2.5.29.15")
    # Go reads a key usage with no bit set as no key usage at all
    signs = ku is None or ku.key_cert_sign or not any(getattr(ku, a) for a in KU_BITS)
    if (parent.x.version == x509.Version.v3 and not present) or (present and not is_ca):
        return GoError("ca-usage", PARENT_CANNOT_SIGN, parent)
    if not signs:
        return GoError("ca-usage", PARENT_CANNOT_SIGN, parent)
    oid = child.x.signature_algorithm_oid.dotted_string
    if oid in INSECURE:
        return GoError(
            "insecure-signature",
            f"x509: cannot verify signature: insecure algorithm {INSECURE[oid]}",
            child,
        )
    if oid not in SUPPORTED:
        return GoError("signature", UNIMPLEMENTED, child)
    try:
        child.x.verify_directly_issued_by(parent.x)
    except InvalidSignature:
        key = parent.x.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            return GoError("signature", "crypto/rsa: verification error", child)
        if isinstance(key, ec.EllipticCurvePublicKey):
            return GoError("signature", "x509: ECDSA verification failure", child)
        return GoError("signature", "x509: Ed25519 verification failure", child)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return GoError("signature", UNIMPLEMENTED, child)
    return None


def _reverse_labels(domain: str) -> list[str] | None:
    """Go's domainToReverseLabels: None for an absolute or malformed name."""
    labels = domain.split(".")[::-1]
    if not domain or labels[0] == "":
        return None
    if any(not label or any(ord(c) < 33 or ord(c) > 126 for c in label) for label in labels):
        return None
    return labels


def _match_domain(domain: str, constraint: str) -> bool:
    if not constraint:
        return True
    labels = _reverse_labels(domain) or []
    must_sub = constraint.startswith(".")
    wanted = _reverse_labels(constraint[1:] if must_sub else constraint) or []
    if len(labels) < len(wanted) or (must_sub and len(labels) == len(wanted)):
        return False
    return all(a.lower() == b.lower() for a, b in zip(wanted, labels, strict=False))


def _constraints(ca: GoCert) -> tuple[list[Any], list[Any]] | None:
    nc = ca._value("2.5.29.30")
    if nc is None:
        return None
    return list(nc.permitted_subtrees or ()), list(nc.excluded_subtrees or ())


def _check_names(ca: GoCert, chain: list[GoCert]) -> GoError | None:
    """Name constraints of a CA against the SANs of the certificates below it (DNS and IP)."""
    from cryptography import x509

    got = _constraints(ca)
    if got is None:
        return None
    permitted, excluded = got
    denied = "x509: a root or intermediate certificate is not authorized to sign for this name: "
    for cert in chain:
        if not cert.has_san:
            continue
        dns, ips = cert.sans
        names: list[tuple[str, str, Any]] = [("DNS name", n, n) for n in dns]
        names += [("IP address", str(ip), ip) for ip in ips]
        for kind, shown, value in names:
            if kind == "DNS name" and _reverse_labels(value) is None:
                return GoError("name-constraints", f"x509: cannot parse dnsName {go_quote(value)}")
            typ = x509.DNSName if kind == "DNS name" else x509.IPAddress

            def match(con: Any, kind: str = kind, value: Any = value) -> bool:
                if kind == "DNS name":
                    return _match_domain(value, con.value)
                net = con.value
                return bool(net.version == value.version and value in net)

            for con in (c for c in excluded if isinstance(c, typ)):
                if match(con):
                    shown_con = str(con.value)
                    return GoError(
                        "name-constraints",
                        f"{denied}{kind} {go_quote(shown)} is excluded by constraint "
                        f"{go_quote(shown_con)}",
                        ca,
                    )
            allowed = [c for c in permitted if isinstance(c, typ)]
            if allowed and not any(match(c) for c in allowed):
                return GoError(
                    "name-constraints",
                    f"{denied}{kind} {go_quote(shown)} is not permitted by any constraint",
                    ca,
                )
    return None


def _is_valid(cert: GoCert, kind: int, chain: list[GoCert], now: datetime) -> GoError | None:
    """Certificate.isValid: critical extensions, dates, name constraints, CA and path length."""
    if cert.unhandled_critical:
        return GoError("critical-extension", "x509: unhandled critical extension", cert)
    before, after = cert.x.not_valid_before_utc, cert.x.not_valid_after_utc
    expired = "x509: certificate has expired or is not yet valid: "
    if now < before:
        detail = f"current time {_go_time(now)} is before {_go_time(before)}"
        return GoError("not-yet-valid", expired + detail, cert)
    if now > after:
        return GoError(
            "expired", f"{expired}current time {_go_time(now)} is after {_go_time(after)}", cert
        )
    if kind != LEAF:
        err = _check_names(cert, chain)
        if err is not None:
            return err
    present, is_ca, max_path = cert.basic
    if kind == INTERMEDIATE and not (present and is_ca):
        msg = "x509: certificate is not authorized to sign other certificates"
        return GoError("ca-usage", msg, cert)
    if present and max_path >= 0 and len(chain) - 1 > max_path:
        msg = "x509: too many intermediates for path length constraint"
        return GoError("ca-usage", msg, cert)
    return None


def _ip(text: str) -> Any:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _valid_name(host: str, pattern: bool) -> bool:
    if not pattern:
        host = host.removesuffix(".")
    if not host or host == "*":
        return False
    for i, part in enumerate(host.split(".")):
        if not part:
            return False
        if pattern and i == 0 and part == "*":
            continue
        for j, c in enumerate(part):
            if c.isascii() and (c.isalnum() or c == "_" or (c == "-" and j != 0)):
                continue
            return False
    return True


def _match_hostnames(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower(), host.removesuffix(".").lower()
    if not pattern or not host:
        return False
    p, h = pattern.split("."), host.split(".")
    if len(p) != len(h):
        return False
    return all((i == 0 and a == "*") or a == b for i, (a, b) in enumerate(zip(p, h, strict=True)))


def verify_hostname(cert: GoCert, host: str) -> GoError | None:
    """Certificate.VerifyHostname and HostnameError's wording: SANs only, never the CN."""
    candidate = host[1:-1] if len(host) >= 3 and host[0] == "[" and host[-1] == "]" else host
    dns, ips = cert.sans
    ip = _ip(candidate)
    if ip is not None:
        if any(_ip(str(i)) == ip for i in ips):
            return None
        host = candidate
    else:
        name = host.lower()
        valid = _valid_name(name, False)
        for match in dns:
            if valid and _valid_name(match, True):
                if _match_hostnames(match, name):
                    return None
            elif match not in ("", ".") and match.lower() == name:
                return None
    if not cert.has_san and _match_hostnames(cert.common_name, host):
        msg = "x509: certificate relies on legacy Common Name field, use SANs instead"
        return GoError("legacy-cn", msg, cert)
    if ip is not None:
        if not ips:
            msg = (
                f"x509: cannot validate certificate for {host} because it doesn't contain "
                "any IP SANs"
            )
            return GoError("hostname", msg, cert)
        valid_for = ", ".join(str(i) for i in ips)
    else:
        valid_for = ", ".join(dns)
    if not valid_for:
        msg = f"x509: certificate is not valid for any names, but wanted to match {host}"
        return GoError("hostname", msg, cert)
    return GoError("hostname", f"x509: certificate is valid for {valid_for}, not {host}", cert)


def _already_in_chain(candidate: GoCert, chain: list[GoCert]) -> bool:
    for cert in chain:
        if cert.raw_subject != candidate.raw_subject or cert.key_der != candidate.key_der:
            continue
        a, b = cert.ext.get("2.5.29.17"), candidate.ext.get("2.5.29.17")
        if a is None and b is None:
            return True
        if a is not None and b is not None and a[1] == b[1]:
            return True
    return False


def _usage_ok(chain: list[GoCert]) -> bool:
    """checkChainForKeyUsage for serverAuth: every certificate with an EKU list allows it."""
    for cert in reversed(chain):
        eku = cert.eku
        if not eku or ANY_EKU in eku:
            continue
        if SERVER_AUTH not in eku and not any(o in eku for o in SGC):
            return False
    return True


class _Builder:
    def __init__(self, roots: Pool, sent: Pool, now: datetime) -> None:
        self.roots, self.sent, self.now = roots, sent, now
        self.checks = 0

    def build(self, chain: list[GoCert]) -> tuple[list[list[GoCert]], GoError | None]:
        """buildChains: every way up from chain[-1] to an anchor; Go's error otherwise."""
        cert = chain[-1]
        chains: list[list[GoCert]] = []
        err: GoError | None = None
        hint: list[Any] = [None, None]
        for kind, pool in ((ROOT, self.roots), (INTERMEDIATE, self.sent)):
            for cand in pool.parents(cert):
                try:
                    if _already_in_chain(cand, chain):
                        continue
                    self.checks += 1
                    if self.checks > MAX_SIGNATURE_CHECKS:
                        err = GoError(
                            "limit",
                            "x509: signature check attempts limit reached while verifying "
                            "certificate chain",
                        )
                        continue
                    unsigned = _check_signature_from(cert, cand)
                    invalid = None if unsigned else _is_valid(cand, kind, chain, self.now)
                except CertError:
                    continue
                if unsigned or invalid:
                    if hint[0] is None:
                        hint = [unsigned or invalid, cand]
                    # Go keeps a candidate's own invalidity (expired, constrained, not a CA)
                    # as the error, and a failed signature only as a hint
                    err = invalid or err
                    continue
                if kind == ROOT:
                    chains.append([*chain, cand])
                else:
                    found, err = self.build([*chain, cand])
                    chains += found
        if chains:
            return chains, None
        return chains, err or _unknown_authority(cert, hint[0], hint[1])


@dataclass(frozen=True)
class Verdict:
    """What a Go client concludes about a server's chain for a host name."""

    ok: bool
    reason: str  # ok, or the kind of Go error (legacy-cn, hostname, chain-incomplete, ...)
    error: str = ""  # Go's message
    chain: tuple[dict[str, Any], ...] = ()  # the chain Go builds (leaf first), when ok
    sent: tuple[dict[str, Any], ...] = ()  # what the server sent
    missing: dict[str, Any] | None = None  # the issuer nobody has, for unknown authority
    detail: dict[str, Any] = field(default_factory=dict)
    warning: str = ""  # accepted, but refused by clients whose module targets Go 1.24+

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "reason": self.reason}
        if self.error:
            out["go_error"] = self.error
        if self.chain:
            out["chain"] = [c["subject"] for c in self.chain]
        if self.missing:
            out["missing_issuer"] = self.missing
        if self.warning:
            out["go_1_24_error"] = self.warning
        return out


HINT_REASON = {
    "insecure-signature": "insecure-signature",
    "weak-key": "weak-key",
    "name-constraints": "name-constraints",
    "ca-usage": "ca-usage",
    "expired": "expired",
    "not-yet-valid": "not-yet-valid",
    "critical-extension": "critical-extension",
}


_EKU_NAMES = {
    SERVER_AUTH: "serverAuth",
    "1.3.6.1.5.5.7.3.2": "clientAuth",
    "1.3.6.1.5.5.7.3.3": "codeSigning",
    "1.3.6.1.5.5.7.3.4": "emailProtection",
    "1.3.6.1.5.5.7.3.8": "timeStamping",
    "1.3.6.1.5.5.7.3.9": "OCSPSigning",
    ANY_EKU: "anyExtendedKeyUsage",
}


def _culprit(hint: GoError, candidate: GoCert | None) -> dict[str, Any]:
    """Which certificate of the chain a hint is about, and what it allows, for the finding."""
    cert = hint.cert or candidate
    if cert is None:
        return {}
    out: dict[str, Any] = {"certificate": cert.x.subject.rfc4514_string()}
    if hint.kind == "weak-key":
        out["rsa_bits"] = cert.rsa_bits
    if hint.kind == "name-constraints":
        got = _constraints(cert)
        if got is not None:
            out["permitted"] = [str(n.value) for n in got[0]]
            out["excluded"] = [str(n.value) for n in got[1]]
    return out


def _missing(err: GoError, certs: list[GoCert]) -> tuple[str, dict[str, Any] | None]:
    """The issuer nobody has: the server must send it when it is an intermediate (the leaf
    says where to download it, or the server sends certificates that link to nothing)."""
    top = err.cert or certs[0]
    if top.self_issued:
        return "unknown-authority", None
    on_path = {certs[0].der}
    cur = certs[0]
    for _ in range(len(certs)):
        nxt = next((c for c in certs[1:] if c.raw_subject == cur.raw_issuer), None)
        if nxt is None or nxt.der in on_path:
            break
        on_path.add(nxt.der)
        cur = nxt
    unused = [c.x.subject.rfc4514_string() for c in certs[1:] if c.der not in on_path]
    info: dict[str, Any] = {
        "subject": top.x.issuer.rfc4514_string(),
        "authority_key_id": hexid(top.aki) or None,
        "below": top.x.subject.rfc4514_string(),
        "fetch_url": top.ca_issuers[0] if top.ca_issuers else None,
        "sent": len(certs),
        "unrelated_sent": unused,
    }
    intermediate = top is certs[0] and bool(info["fetch_url"] or unused)
    info["intermediate"] = intermediate
    return ("chain-incomplete" if intermediate else "unknown-authority"), info


def _pools(trust: Trust) -> Iterator[Pool]:
    empty = True
    for pool in trust.pools():
        empty = False
        yield pool
    if empty:
        yield Pool()


_VERDICTS: dict[tuple[Any, ...], tuple[float, Verdict]] = {}
_VERDICTS_LOCK = threading.Lock()
VERDICT_TTL_S = 30.0
MAX_VERDICTS = 256


def verify(sent: Sequence[bytes], host: str, trust: Trust, now: datetime | None = None) -> Verdict:
    """Go's verdict on a chain as sent (leaf first) for host, with that trust. A run meets the
    same chain on every connection to a host (the tls check's handshake, each pooled HTTP
    connection): the verdict is kept for a few seconds, keyed by all it depends on."""
    if now is not None:
        return _verify(sent, host, trust, now)
    key = (
        tuple(sent),
        host,
        frozenset(trust.files.digests),
        trust.system,
        (trust.environ or {}).get("SSL_CERT_FILE"),
        (trust.environ or {}).get("SSL_CERT_DIR"),
    )
    clock = time.monotonic()
    with _VERDICTS_LOCK:
        kept = _VERDICTS.get(key)
    if kept is not None and clock < kept[0]:
        return kept[1]
    verdict = _verify(sent, host, trust, datetime.now(UTC))
    with _VERDICTS_LOCK:
        if len(_VERDICTS) >= MAX_VERDICTS:
            _VERDICTS.clear()
        _VERDICTS[key] = (clock + VERDICT_TTL_S, verdict)
    return verdict


def _verify(sent: Sequence[bytes], host: str, trust: Trust, now: datetime) -> Verdict:
    try:
        certs = [GoCert(d) for d in sent]
        for c in certs:
            c.ext  # noqa: B018 - Go refuses the handshake on any certificate it cannot parse
    except ValueError as exc:
        msg = f"tls: failed to parse certificate from server: {exc}"
        return Verdict(False, "parse", msg)
    if not certs:
        return Verdict(False, "parse", "tls: received empty certificates message")
    shown = tuple(c.describe() for c in certs)
    leaf = certs[0]
    err = _is_valid(leaf, LEAF, [], now) or verify_hostname(leaf, host)
    if err is not None:
        return Verdict(False, err.kind, err.message, sent=shown)
    sent_pool = Pool(sent[1:])
    chains: list[list[GoCert]] = []
    err = None
    for pool in _pools(trust):
        if pool.contains(leaf):
            chains = [[leaf]]
        else:
            chains, err = _Builder(pool, sent_pool, now).build([leaf])
        if any(_usage_ok(c) for c in chains):
            break
    usable = [c for c in chains if _usage_ok(c)]
    if not chains:
        assert err is not None
        reason, missing, detail = err.kind, None, _culprit(err, err.cert)
        if err.kind == "unknown-authority":
            if err.hint is not None:
                reason = HINT_REASON.get(err.hint.kind, "unknown-authority")
                detail = _culprit(err.hint, err.hint_cert)
            else:
                reason, missing = _missing(err, certs)
        return Verdict(False, reason, err.message, sent=shown, missing=missing, detail=detail)
    if not usable:
        msg = "x509: certificate specifies an incompatible key usage"
        detail = {"eku": [_EKU_NAMES.get(o, o) for o in leaf.eku or ()]}
        return Verdict(False, "usage", msg, sent=shown, detail=detail)
    best = min(usable, key=len)
    chain = tuple(c.describe() for c in best)
    warning, detail = _small_rsa(best)
    return Verdict(True, "ok", chain=chain, sent=shown, warning=warning, detail=detail)


def _small_rsa(chain: list[GoCert]) -> tuple[str, dict[str, Any]]:
    """Go 1.24's crypto/rsa refuses keys under 1024 bits, but only in programs whose module
    targets Go 1.24 or later (GODEBUG rsa1024min): most clients built with Go 1.24 still accept
    them, so this is told as what a newer client will print, not as a failure."""
    for i, cert in enumerate(chain):
        bits = cert.rsa_bits
        if bits is None or bits >= MIN_RSA_BITS:
            continue
        detail = {"certificate": cert.x.subject.rfc4514_string(), "rsa_bits": bits}
        if i == 0:  # the handshake's signature is checked with the leaf's key
            return f"tls: invalid signature by the server certificate: {rsa_insecure(bits)}", detail
        hint = GoError("weak-key", rsa_insecure(bits), chain[i - 1])
        return _unknown_authority(chain[i - 1], hint, cert).message, detail
    return "", {}


# ------------------------------------------------------------------------- TLS handshakes
# what a Go client offers, without OpenSSL's own refusals (its security level): the handshake
# only fetches the chain, and the verdict is Go's
CLIENT_CIPHERS = "@SECLEVEL=0:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS"
# for contexts that verify with OpenSSL (HTTP sessions): no refusal of key sizes or digests of
# OpenSSL's own (level 2 refuses RSA under 2048 bits, which Go accepts); the session judges
# each chain by Go's rules after the handshake (diagnose.http)
GO_LIKE_CIPHERS = CLIENT_CIPHERS


_CLIENT: list[ssl.SSLContext] = []


def client_context() -> ssl.SSLContext:
    """A TLS 1.2+ client that fetches whatever chain the server sends, verifying nothing
    (made once, shared: nothing changes it after)."""
    if not _CLIENT:
        _CLIENT.append(_client_context())
    return _CLIENT[0]


def _client_context() -> ssl.SSLContext:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CLIENT_CIPHERS)
    return ctx


def go_like(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Bring an OpenSSL verifying context close to Go: no Common Name, any pool certificate an
    anchor, no key size refused (what Go refuses beyond that is refused after the handshake)."""
    import ssl

    ctx.hostname_checks_common_name = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.set_ciphers(GO_LIKE_CIPHERS)
    return ctx


def peer_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER."""
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13
    if public is not None:
        return [bytes(c) for c in public()]
    obj = getattr(tls, "_sslobj", None)
    getter = getattr(obj, "get_unverified_chain", None)  # Python 3.10 to 3.12, private
    if getter is not None:
        import _ssl

        got = getter() or []
        return [c.public_bytes(_ssl.ENCODING_DER) for c in got]
    der = tls.getpeercert(binary_form=True)
    return [der] if der else []


def go_reason(exc: BaseException) -> str | None:
    """The certificate verdict inside an exception from an HTTP request (requests wraps
    urllib3's error, which wraps the one diagnose.http raised with Go's words), if any."""
    import ssl

    seen: list[BaseException] = [exc]
    for err in seen:
        if isinstance(err, ssl.SSLCertVerificationError):
            return str(err.verify_message or err.reason or err)
        if len(seen) > 12:
            break
        more = [err.__cause__, err.__context__, getattr(err, "reason", None), *err.args]
        seen += [m for m in more if isinstance(m, BaseException) and m not in seen]
    return None
