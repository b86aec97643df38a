"""Which HTTP proxy a request to the registry goes through, where that setting came from, and
what a proxy failure means.

The container clients are Go programs, and Go reads the proxy environment its own way: upper
case before lower case, `HTTPS_PROXY` for https URLs with no fallback to `ALL_PROXY`, and never a
proxy for the name `localhost` or a literal loopback address (a name that merely resolves to
127.0.0.1 is proxied: Go decides before it resolves). The run follows the same rules, so it
goes where the clients go. A proxy is only ever named as host:port: its user-info is a credential.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from diagnose.codes import Code
from diagnose.dockerhost import no_proxy_covers

if TYPE_CHECKING:
    from diagnose.models import Finding, Status
    from diagnose.proxyprobe import CertSeen, Probe


@dataclass(frozen=True)
class ProxySetting:
    """A proxy that applies to one URL, named safely."""

    url: str  # scheme://host:port, never user-info
    host: str
    port: int
    source: str  # e.g. "environment HTTPS_PROXY"
    has_credentials: bool
    no_proxy: str
    no_proxy_source: str | None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, object]:
        return {
            "proxy": self.url,
            "source": self.source,
            "proxy_credentials": self.has_credentials,
            "no_proxy": self.no_proxy or None,
            "no_proxy_source": self.no_proxy_source,
        }


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name, "")
        if value.strip():
            return name, value.strip()
    return None


def never_proxied(host: str) -> bool:
    """Go's rule (golang.org/x/net/http/httpproxy, useProxy), decided on the name as written,
    before any lookup: the name "localhost" and a literal loopback address never go through a
    proxy; any other name does, even one that resolves to 127.0.0.1 (or "x.localhost")."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if h == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # Go's IsLoopback sees ::ffff:127.0.0.1 as IPv4
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def go_uses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether a Go client sends a request for host:port through the proxy it has, given
    NO_PROXY: the loopback rule first, then the NO_PROXY entries."""
    if never_proxied(host):
        return False
    return not (no_proxy and no_proxy_covers(no_proxy, host, port))


def safe_proxy_url(raw: str) -> tuple[str, str, int, bool] | None:
    """(scheme://host:port, host, port, had user-info) of a proxy setting; None if unusable."""
    text = raw if "://" in raw else f"http://{raw}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    scheme = parts.scheme.lower() or "http"
    port = port or (443 if scheme == "https" else 1080 if scheme.startswith("socks") else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}", host, port, "@" in parts.netloc


def proxy_for(url: str, env: Mapping[str, str] | None = None) -> ProxySetting | None:
    """The proxy a Go client (docker CLI, skopeo, podman, containerd) uses for url, or None."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    scheme = parts.scheme.lower()
    if not host:
        return None
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    found = _first(env, *names)
    if found is None:
        return None
    no = _first(env, "NO_PROXY", "no_proxy")
    no_proxy = no[1] if no else ""
    port = parts.port or (443 if scheme == "https" else 80)
    if not go_uses_proxy(host, port, no_proxy):
        return None
    safe = safe_proxy_url(found[1])
    if safe is None:
        return None
    shown, phost, pport, creds = safe
    return ProxySetting(
        shown,
        phost,
        pport,
        f"environment {found[0]}",
        creds,
        no_proxy,
        f"environment {no[0]}" if no else None,
    )


def requests_proxies(url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `proxies=` mapping for requests that sends url where a Go client would send it."""
    env = os.environ if env is None else env
    setting = proxy_for(url, env)
    if setting is None:
        return {}
    names = (
        ("HTTPS_PROXY", "https_proxy") if url.startswith("https") else ("HTTP_PROXY", "http_proxy")
    )
    found = _first(env, *names)
    assert found is not None
    raw = found[1] if "://" in found[1] else f"http://{found[1]}"
    return {urlsplit(url).scheme: raw}


def no_proxy_status(host: str, port: int, env: Mapping[str, str] | None = None) -> str:
    """'direct' (no proxy, or NO_PROXY covers it), 'loopback' or 'proxied'."""
    env = os.environ if env is None else env
    if never_proxied(host):
        return "loopback"
    return "direct" if proxy_for(f"https://{host}:{port}/", env) is None else "proxied"


_PROXY_STATUS = re.compile(r"Tunnel connection failed: (\d{3})\s*([^'\")]*)")


def classify_proxy_error(text: str) -> tuple[str, str]:
    """(kind, words) for the text of a proxy failure: refused, auth, denied, dns, timeout, tls."""
    t = text[:2000]
    m = _PROXY_STATUS.search(t)
    if m:
        status = int(m.group(1))
        reason = m.group(2).strip()
        if status == 407:
            return (
                "auth",
                f"the proxy asks for credentials (407 {reason or 'Proxy Authentication Required'})",
            )
        return "denied", f"the proxy refused to open a tunnel to the registry ({status} {reason})"
    low = t.lower()
    if "reset by peer" in low or "remote end closed" in low or "remotedisconnected" in low:
        return "reset", "the proxy dropped the connection when asked for a tunnel (reset)"
    if "refused" in low:
        return "refused", "nothing accepts connections at the proxy's address (connection refused)"
    if "name or service not known" in low or "failed to resolve" in low or "nodename" in low:
        return "dns", "the proxy's host name does not resolve"
    if "timed out" in low or "timeout" in low:
        return "timeout", "the proxy did not answer in time"
    if "ssl" in low or "certificate" in low:
        return (
            "tls",
            "TLS through the proxy failed (a proxy that inspects TLS needs its CA trusted)",
        )
    return "other", "the request through the proxy failed"


def proxy_failure(
    url: str, error: str, attempts: int, evidence: dict[str, Any], env: Mapping[str, str]
) -> Finding:
    """A request that failed at the proxy: name the proxy (host:port), where it is set, what
    it did, and whether NO_PROXY could take the registry around it."""
    from diagnose.models import Status, problem

    setting = proxy_for(url, env)
    kind, words = classify_proxy_error(error)
    host = urlsplit(url).hostname or "?"
    evidence.update(proxy_error=kind)
    if setting is None:
        where = "a proxy"
        fixes = ["Check the proxy settings of this environment."]
    else:
        evidence.update(setting.to_dict())
        where = f"the proxy {setting.hostport} (from the {setting.source})"
        fixes = {
            "refused": [
                f"Start the proxy at {setting.hostport}, or correct {setting.source.split()[-1]}"
                " to the proxy that runs.",
            ],
            "auth": [
                f"Give the proxy's credentials in {setting.source.split()[-1]} "
                "(http://user:password@host:port), or ask for this host to be allowed without.",
            ],
            "denied": [
                f"Ask the proxy's owner to allow CONNECT to {host}:443 (and to the registry's "
                "storage and token hosts).",
            ],
        }.get(kind, [f"Check the proxy at {setting.hostport}."])
        fixes.append(
            f"Or, if {host} is reachable without the proxy, add it to NO_PROXY "
            f"(now {setting.no_proxy or 'unset'}); for docker pulls, the daemon's own proxy "
            "(daemon.json `proxies` or a systemd drop-in) is the one that counts."
        )
    return problem(
        Status.FAIL,
        f"GET {url} failed at {where}: {words} ({attempts} attempt(s))",
        code=Code.PROXY_ERROR,
        faq=["proxy", "network-connectivity"],
        remediation=fixes,
        evidence=evidence,
    )


# ------------------------------------------------------------------ verdicts on a tried proxy
@dataclass(frozen=True)
class ProxyRole:
    """Whose proxy a verdict is about, and how to word it: the environment's (skopeo, podman,
    containerd's ctr, this tool) or the docker daemon's own."""

    who: str  # "the proxy 127.0.0.1:3128 (from the environment HTTPS_PROXY)"
    proxy: str  # scheme://host:port as set
    setting: str  # where the proxy URL is written
    no_proxy: str  # NO_PROXY as the client has it ("" when unset)
    trust: str  # whose trust store judged the certificate, in words
    docker: bool  # the daemon's proxy: docker's remedies first, and a restart
    error_code: Code
    bad: Status  # FAIL, or WARN when it could not be tried from the client's own network
    note: str = ""  # said after every summary: where the proxy was tried from
    no_proxy_setting: str = ""  # where NO_PROXY is written (the environment when empty)


def _ca_folder(host: str, port: int) -> str:
    return host if port == 443 else f"{host}:{port}"


def environment_role(setting: ProxySetting) -> ProxyRole:
    """The environment's proxy, judged with this run's trust store: a verdict for skopeo,
    podman, containerd's ctr and this tool, which read HTTPS_PROXY as Go does."""
    from diagnose.models import Status

    return ProxyRole(
        who=f"the proxy {setting.hostport} (from the {setting.source})",
        proxy=setting.url,
        setting=setting.source.split()[-1],
        no_proxy=setting.no_proxy,
        trust="this host's trust store (with --ca-bundle)",
        docker=False,
        error_code=Code.PROXY_ERROR,
        bad=Status.FAIL,
    )


def proxy_tls_failure(
    url: str,
    issuer: str,
    compared: bool,
    attempts: int,
    evidence: dict[str, Any],
    env: Mapping[str, str],
) -> Finding | None:
    """A request that failed in TLS through the environment's proxy, when the proxy check saw
    that proxy re-sign the registry's certificate with a CA this host does not trust: name the
    proxy and its CA instead of a bare TLS failure."""
    from diagnose.models import Status, problem

    setting = proxy_for(url, env)
    if setting is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or 443
    evidence.update(setting.to_dict(), inspection_issuer=issuer)
    return problem(
        Status.FAIL,
        f"GET {url} failed in TLS after {attempts} attempt(s): the proxy {setting.hostport} "
        f"(from the {setting.source}) "
        + (
            f"re-signs the registry's certificate with its own CA ({issuer})"
            if compared
            else f"hands over a certificate issued by {issuer}"
        )
        + ", which this host's trust store does not trust",
        code=Code.PROXY_TLS_INSPECTION,
        faq=["proxy-tls-inspection", "certificate-trust", "proxy"],
        remediation=inspection_remedies(environment_role(setting), host, port, issuer),
        evidence=evidence,
    )


def inspection_remedies(role: ProxyRole, host: str, port: int, issuer: str) -> list[str]:
    """Trust the inspection CA where each client looks, or take the registry around the proxy."""
    folder = _ca_folder(host, port)
    hp = urlsplit(role.proxy).netloc or role.proxy
    steps = {
        "docker": f"docker: copy the CA to /etc/docker/certs.d/{folder}/ca.crt (read at every "
        "pull, no restart), or add it to the system store (update-ca-certificates) and restart "
        "the daemon.",
        "containers": f"podman, skopeo, CRI-O: copy it to /etc/containers/certs.d/{folder}/ as a "
        ".crt file, or add it to the system store.",
        "containerd": f'containerd (and the kubelet through it): `ca = "/path/to/the-ca.crt"` in '
        f"/etc/containerd/certs.d/{folder}/hosts.toml, or the system store and a restart of "
        "containerd.",
        "ours": "this tool: --ca-bundle with the CA file.",
    }
    order = ["docker", "containers", "containerd", "ours"]
    if not role.docker:
        order = ["containers", "containerd", "ours", "docker"]
    return [
        f"Trust the inspection CA ({issuer}) where each client looks; get it from the proxy's "
        f"owner, or see the chain the proxy hands out with `openssl s_client -proxy {hp} "
        f"-connect {host}:{port} -showcerts`.",
        *(steps[k] for k in order),
        f"Or take the registry around the proxy: add {host} (and its token and storage hosts) "
        f"to NO_PROXY{_where_no_proxy(role)} (now {role.no_proxy or 'unset'}), where it can be "
        "reached directly.",
    ]


def _where_no_proxy(role: ProxyRole) -> str:
    return f" in {role.no_proxy_setting}" if role.no_proxy_setting else ""


def _tunnel_fixes(kind: str, role: ProxyRole, host: str, port: int) -> list[str]:
    hp = urlsplit(role.proxy).netloc or role.proxy
    restart = "; then restart the daemon" if role.docker else ""
    fixes = {
        "refused": f"Start the proxy at {hp}, or correct {role.setting} to the proxy that "
        f"runs (or remove it if this network needs none){restart}.",
        "dns": f"Correct the proxy's host name in {role.setting}{restart}.",
        "timeout": f"Check that {hp} is the proxy's address and that a firewall lets this host "
        "reach it.",
        "auth": f"Put the proxy's user and password in {role.setting} "
        f"(http://user:password@host:port), or have this host allowed without{restart}.",
        "denied": f"Ask the proxy's owner to allow CONNECT to {host}:{port} (and to the "
        "registry's token and storage hosts).",
        "reset": f"Ask the proxy's owner to allow CONNECT to {host}:{port}: the proxy drops the "
        "request instead of answering it.",
        "closed": f"Ask the proxy's owner to allow CONNECT to {host}:{port}: the proxy hangs up "
        "instead of answering it.",
        "proxy-cert": "Trust the CA of the proxy's own certificate, or write the proxy as "
        f"http:// if it also speaks plain HTTP{restart}.",
    }
    out = [fixes.get(kind, f"Check the proxy at {hp}.")]
    out.append(
        f"If {host} is reachable without the proxy, add it to NO_PROXY{_where_no_proxy(role)} "
        f"(now {role.no_proxy or 'unset'}); the storage hosts layers redirect to need it too."
    )
    return out


def judge_tunnel(
    probe: Probe,
    direct: CertSeen | None,
    role: ProxyRole,
    host: str,
    port: int,
    *,
    token: bool = False,
    evidence: dict[str, Any] | None = None,
) -> Finding:
    """The verdict on one tried proxy: a tunnel that fails, a scheme written wrong, a proxy
    that re-signs the registry's certificate (with a CA the client trusts or not), or a
    clean tunnel. token: the host is the registry's token service, not the registry."""
    from diagnose.models import passed, problem
    from diagnose.proxyprobe import reissued

    target = f"{host}:{port}"
    what = f"the token service {target}" if token else target
    ev = dict(evidence or {})
    ev["tunnel"] = probe.to_dict()
    if direct is not None:
        ev["direct_certificate"] = direct.to_dict()
    go = f"; a Go client prints `{probe.go_says}`" if probe.go_says else ""
    restart = ", then restart the daemon" if role.docker else ""
    if probe.kind in ("https-for-plain", "http-for-tls"):
        plain = probe.kind == "https-for-plain"
        hp = urlsplit(role.proxy).netloc or role.proxy
        return problem(
            role.bad,
            f"{role.who}: {probe.words}{go}{role.note}",
            code=Code.PROXY_SCHEME_MISMATCH,
            faq=["proxy-https-scheme", "proxy"] if plain else ["proxy-tls-scheme", "proxy"],
            remediation=[
                f"Write the proxy as {'http' if plain else 'https'}://{hp} in {role.setting}"
                f"{restart}."
                + (
                    " HTTPS to the registry still goes through it in a CONNECT tunnel, "
                    "encrypted end to end."
                    if plain
                    else ""
                ),
            ],
            evidence=ev,
        )
    if not probe.tunnel_open:
        if token:
            summary = (
                f"the registry answers, but {role.who} fails for its token service "
                f"{target}: {probe.words}{go}{role.note}"
            )
        else:
            summary = f"{role.who} fails for {what}: {probe.words}{go}{role.note}"
        return problem(
            role.bad,
            summary,
            code=Code.PROXY_TOKEN_REFUSED if token else role.error_code,
            faq=["proxy-token-service", "proxy"] if token else ["proxy", "network-connectivity"],
            remediation=_tunnel_fixes(probe.kind, role, host, port),
            evidence=ev,
        )
    if probe.kind == "tls":
        return problem(
            role.bad,
            f"{role.who} opens a tunnel to {what}, but TLS inside it fails: {probe.words}"
            f"{role.note}",
            code=Code.PROXY_TOKEN_REFUSED if token else role.error_code,
            faq=["proxy-tls-inspection", "proxy"],
            remediation=[
                "A proxy that inspects TLS may refuse server names or protocols it does not "
                f"know: ask its owner to let {host} through untouched, or add it to NO_PROXY.",
            ],
            evidence=ev,
        )
    cert = probe.cert
    if cert is None:
        return passed(f"{role.who} opens a tunnel to {what}{role.note}", **ev)
    inspected = reissued(cert, direct) if direct is not None else None
    if inspected is False or (inspected is None and probe.trusted):
        whose = "the registry's own" if inspected is False else "trusted"
        return passed(
            f"{role.who} opens a tunnel to {what}; the certificate inside it is {whose}{role.note}",
            **ev,
        )
    ev["inspection"] = {
        "issuer": cert.issuer,
        "trusted": bool(probe.trusted),
        "direct_issuer": direct.issuer if direct is not None else None,
        "compared": direct is not None,
    }
    if direct is not None:
        seen = (
            f"{role.who} inspects TLS: it re-signs {what}'s certificate with its own CA "
            f"({cert.issuer}) instead of the registry's issuer ({direct.issuer})"
        )
    else:
        seen = (
            f"through {role.who}, {what}'s certificate is issued by {cert.issuer}, and the "
            "registry cannot be reached directly to compare: a proxy that inspects TLS signs "
            "with a CA of its own like this"
        )
    if probe.trusted:
        return passed(f"{seen}; {role.trust} trusts that CA{role.note}", **ev)
    return problem(
        role.bad,
        f"{seen}, which {role.trust} does not trust ({probe.verify_error}): clients fail with "
        f"`x509: certificate signed by unknown authority`{role.note}",
        code=Code.PROXY_TLS_INSPECTION,
        faq=["proxy-tls-inspection", "certificate-trust", "proxy"],
        remediation=inspection_remedies(role, host, port, cert.issuer),
        evidence=ev,
    )
