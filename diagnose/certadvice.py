"""What to tell a user about a certificate the Go clients refuse: the cause in Go's own words,
the code and knowledge-base entries, and the fix. For a chain the server sends without its
intermediate the fix is on the server; a client can only be helped by holding the intermediate
where it looks, and each client looks somewhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from diagnose.codes import Code

if TYPE_CHECKING:
    from diagnose.x509go import Verdict

CLIENTS = "docker, containerd, podman, skopeo, the kubelet"
# the knowledge-base entries a refused certificate can lead to, for the checks' faq_keys
CERTIFICATE_FAQ = (
    "certificate-trust",
    "certificate-legacy-cn",
    "certificate-chain-incomplete",
    "certificate-weak",
    "certificate-key-usage",
    "certificate-name-constraints",
)


@dataclass(frozen=True)
class Advice:
    """A refused certificate, told: why (a clause after "not trusted: "), code, FAQ, steps."""

    code: Code
    faq: list[str]
    why: str
    steps: list[str]


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """host and port of `host[:port][/path]` or a URL (443 when none is given)."""
    from urllib.parse import urlsplit

    rest = endpoint.split("://", 1)[-1].split("/", 1)[0]
    try:
        parts = urlsplit("//" + rest)
        return parts.hostname or rest, parts.port or 443
    except ValueError:
        return rest, 443


def folder(host: str, port: int) -> str:
    """The certs.d folder name docker and containers/image use: host, or host:port."""
    return host if port == 443 else f"{host}:{port}"


def trust_locations(host: str, port: int) -> str:
    """Where each client reads CA certificates for this registry (Go takes any of them as an
    anchor, an intermediate as well as a root)."""
    hp = folder(host, port)
    return (
        f"docker: /etc/docker/certs.d/{hp}/ca.crt; podman, skopeo and CRI-O: "
        f"/etc/containers/certs.d/{hp}/ (any .crt); containerd: `ca = ...` in "
        f"/etc/containerd/certs.d/{host}:{port}/hosts.toml; every client: the system store "
        "(/usr/local/share/ca-certificates/, then update-ca-certificates)"
    )


def endpoint_advice(verdict: Verdict | None, where: str) -> Advice | None:
    """Advice for an endpoint a runtime walks (a URL or host[:port]) whose certificate Go
    refused, when the certificate or the chain sent is at fault rather than the trust."""
    if verdict is None or verdict.reason == "unknown-authority":
        return None
    return advise(verdict, *split_endpoint(where))


def advise(v: Verdict, host: str, port: int, names: list[str] | None = None) -> Advice:
    """The finding for a refused certificate of host:port."""
    err, d, m = v.error or v.warning, v.detail, v.missing or {}
    reason = "weak-key" if v.ok and v.warning else v.reason
    who = str(d.get("certificate") or "its certificate")
    trust = ["certificate-trust", "network-connectivity"]
    if reason == "legacy-cn":
        from diagnose.resolve import is_ip

        san = f"IP:{host}" if is_ip(host) else f"DNS:{host}"
        return Advice(
            Code.TLS_CERT_NO_SAN,
            ["certificate-legacy-cn", "certificate-trust"],
            f"its certificate names {host} only in the Common Name, with no subjectAltName; "
            f"Go clients ({CLIENTS}) ignore the Common Name and refuse it: {err}",
            [
                f"Issue the certificate again with a subjectAltName for {host}; with OpenSSL "
                f'add `-addext "subjectAltName = {san}"` to the request.',
                "curl, OpenSSL and browsers of old may still accept the Common Name, which is "
                "why the registry can look fine from them.",
            ],
        )
    if reason == "hostname":
        shown = ", ".join(names or []) or "other names"
        return Advice(
            Code.CONNECTIVITY_SSL_ERROR,
            ["certificate-trust", "network-connectivity", "registry-api-v2"],
            f"its certificate is for {shown}, not {host} ({err})",
            [
                "Use the name the certificate was issued for, or reissue the certificate "
                "with this name.",
                "A proxy that intercepts TLS presents its own certificate: check which "
                "issuer is shown in the evidence.",
            ],
        )
    if reason == "chain-incomplete":
        url = m.get("fetch_url")
        unrelated = m.get("unrelated_sent") or []
        sent = (
            f"sends {', '.join(unrelated)} instead of it"
            if unrelated
            else "sends its certificate without it"
        )
        return Advice(
            Code.TLS_CHAIN_INCOMPLETE,
            ["certificate-chain-incomplete", "certificate-trust"],
            f"its certificate was issued by the intermediate {m.get('subject')} (key id "
            f"{m.get('authority_key_id') or 'none'}) and the server {sent}; Go clients "
            f"never download a missing intermediate: {err}",
            [
                "Fix the server, not the clients: make it send its full chain, its own "
                "certificate followed by the intermediate(s), in one PEM file for nginx or the "
                "registry's `http.tls.certificate` (Let's Encrypt's fullchain.pem, not cert.pem)."
                + (f" The intermediate can be downloaded from {url}." if url else ""),
                "Until then a client works only when the intermediate is where it looks: "
                + trust_locations(host, port)
                + ". Every client and node needs it.",
            ],
        )
    if reason == "unknown-authority":
        if m:
            issuer = m.get("subject")
            why = (
                f"its certificate chains to an issuer this host does not trust ({issuer}, key "
                f"id {m.get('authority_key_id') or 'none'}): {err}"
            )
            extra = [
                f"If {issuer} is an intermediate rather than your root CA, the server must "
                "send it with its certificate: Go clients never download it."
            ]
        else:
            why = f"its certificate is not trusted: {err}"
            extra = []
        return Advice(
            Code.CONNECTIVITY_SSL_ERROR,
            trust,
            why,
            [
                f"Give the clients the registry's CA: {trust_locations(host, port)}.",
                "To check a CA file with this tool, pass it with --ca-bundle.",
                *extra,
            ],
        )
    if reason in ("insecure-signature", "weak-key"):
        if reason == "weak-key":
            why = (
                f"{who} has an RSA key of {d.get('rsa_bits')} bits: Go clients whose module "
                "targets Go 1.24 or later refuse RSA keys under 1024 bits; clients built "
                f"otherwise (docker and skopeo to this day) still accept it. Go 1.24 says: {err}"
            )
            fix = "Give it a new key of 2048 bits or more (or ECDSA P-256) and issue it again."
        else:
            why = f"{who} is signed with SHA-1, which Go clients refuse on all but a root: {err}"
            fix = "Have its CA sign it again with SHA-256."
        return Advice(Code.TLS_CERT_WEAK, ["certificate-weak", "certificate-trust"], why, [fix])
    if reason in ("usage", "ca-usage", "critical-extension"):
        if reason == "usage":
            ekus = ", ".join(d.get("eku") or []) or "none"
            why = (
                f"its extended key usage ({ekus}), or that of a CA above it, does not allow a "
                f"TLS server (serverAuth): {err}"
            )
            fix = "Issue the certificate again with `extendedKeyUsage = serverAuth`."
        else:
            why = f"{who} cannot be part of a chain Go accepts: {err}"
            fix = "Issue the CA certificate again as a CA (basicConstraints CA:TRUE, keyCertSign)."
        return Advice(
            Code.TLS_CERT_USAGE, ["certificate-key-usage", "certificate-trust"], why, [fix]
        )
    if reason == "name-constraints":
        permitted = ", ".join(d.get("permitted") or []) or "other names"
        return Advice(
            Code.TLS_CERT_NAME_CONSTRAINTS,
            ["certificate-name-constraints", "certificate-trust"],
            f"{who} may only issue certificates for {permitted}, and {host} is not among "
            f"them: {err}",
            [
                f"Issue the registry's certificate from a CA allowed to sign for {host}, or "
                "serve the registry under a name the CA may sign for."
            ],
        )
    if reason == "expired":
        return Advice(
            Code.CONNECTIVITY_SSL_ERROR,
            ["certificate-expired", "clock-skew", "network-connectivity"],
            f"{who} expired: {err}",
            [
                "Renew the certificate." if who == "its certificate" else f"Renew {who}.",
                "If the certificate looks valid elsewhere, check this host's clock "
                "(`timedatectl`).",
            ],
        )
    if reason == "not-yet-valid":
        return Advice(
            Code.CONNECTIVITY_SSL_ERROR,
            ["clock-skew", "certificate-expired", "network-connectivity"],
            f"{who} is not valid yet: {err}",
            ["This host's clock is probably behind: synchronise it (`timedatectl set-ntp true`)."],
        )
    return Advice(
        Code.CONNECTIVITY_SSL_ERROR,
        trust,
        f"its certificate is not accepted: {err}",
        ["Inspect the chain: `openssl s_client -connect <host>:<port> -showcerts`."],
    )
