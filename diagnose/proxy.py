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
    from diagnose.models import Finding


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
