"""Name resolution shared by every check in a run.

Without `--nameserver` addresses come from the system resolver, as docker gets them. With it, the
hosts file under the host root still wins (as it would on the host) and everything else comes from
the named DNS server, so the whole run, TCP, TLS and HTTP included, sees the same answers.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dns.resolver


class ResolveError(Exception):
    """A name could not be turned into addresses; `kind` tells why (nxdomain, servfail, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_nameserver(text: str) -> tuple[str, int]:
    """IP, IP:PORT or [IPv6]:PORT; raises ValueError with a one-line reason."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"nameserver {text!r}: expected [IPv6]:PORT")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r} is not an IP address") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"nameserver {whole!r}: the port must be 1-65535")
    return int(text)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def read_hosts(path: Path) -> dict[str, list[str]]:
    """Name -> addresses from a hosts file; unreadable or odd lines are ignored, as libc does."""
    out: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or not is_ip(fields[0]):
            continue
        for name in fields[1:]:
            out.setdefault(name.lower().rstrip("."), []).append(fields[0])
    return out


def system_addresses(host: str, port: int, timeout: float) -> list[str]:
    """getaddrinfo bounded in time: libc has no timeout of its own worth trusting."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            box["ok"] = list(dict.fromkeys(str(i[4][0]) for i in infos))
        except OSError as exc:
            box["err"] = exc

    t = threading.Thread(target=work, daemon=True, name=f"getaddrinfo {host}")
    t.start()
    t.join(max(0.05, timeout))
    if "ok" in box:
        return box["ok"]  # type: ignore[return-value]
    err = box.get("err")
    if err is None:
        raise ResolveError(
            "timeout", f"the system resolver gave no answer for {host} in {timeout:.1f}s"
        )
    if isinstance(err, socket.gaierror) and err.errno in (socket.EAI_NONAME, socket.EAI_NODATA):
        raise ResolveError("nxdomain", f"the system resolver does not know {host}")
    raise ResolveError("error", f"the system resolver failed for {host}: {err}")


class HostResolver:
    """One per run; caches answers so dependent checks connect where the DNS check looked."""

    def __init__(self, nameserver: tuple[str, int] | None, host_root: Path) -> None:
        self.nameserver = nameserver
        self.host_root = host_root
        self._lock = threading.Lock()
        self._cache: dict[str, list[str]] = {}
        self._hosts: dict[str, list[str]] | None = None

    @property
    def hosts_file(self) -> Path:
        return self.host_root / "etc" / "hosts"

    def hosts(self) -> dict[str, list[str]]:
        if self._hosts is None:
            self._hosts = read_hosts(self.hosts_file)
        return self._hosts

    def dns_resolver(self, timeout: float) -> dns.resolver.Resolver:
        """A dnspython resolver pointed where the run says (raises ResolveError if it can't be)."""
        import dns.resolver

        if self.nameserver is not None:
            r = dns.resolver.Resolver(configure=False)
            r.nameservers = [self.nameserver[0]]
            r.port = self.nameserver[1]
        else:
            conf = self.host_root / "etc" / "resolv.conf"
            try:
                r = (
                    dns.resolver.Resolver(filename=str(conf))
                    if conf.exists()
                    else dns.resolver.Resolver()
                )
            except dns.resolver.NoResolverConfiguration as exc:
                raise ResolveError("config", f"no usable nameserver in {conf}: {exc}") from None
        r.timeout = max(0.1, min(timeout, 2.0))
        r.lifetime = max(0.1, timeout)
        r.cache = None
        return r

    def addresses(self, host: str, port: int, timeout: float) -> list[str]:
        """Where a connection to host would go, in the order it would be tried."""
        host = host.strip("[]").lower()
        if is_ip(host):
            return [host]
        with self._lock:
            cached = self._cache.get(host)
        if cached:
            return cached
        if self.nameserver is None:
            found = system_addresses(host, port, timeout)
        else:
            found = self.hosts().get(host) or self._dns_addresses(host, timeout)
        with self._lock:
            self._cache[host] = found
        return found

    def remember(self, host: str, addresses: list[str]) -> None:
        if addresses and self.nameserver is not None and host.lower() not in self.hosts():
            with self._lock:
                self._cache[host.lower()] = list(addresses)

    def _dns_addresses(self, host: str, timeout: float) -> list[str]:
        import dns.exception
        import dns.resolver

        r = self.dns_resolver(timeout)
        found: list[str] = []
        nx = False
        for rdtype in ("A", "AAAA"):
            try:
                ans = r.resolve(host, rdtype, search=False)
                found.extend(str(rr) for rr in ans)
            except dns.resolver.NXDOMAIN:
                nx = True
                break
            except dns.resolver.NoAnswer:
                continue
            except dns.resolver.NoNameservers as exc:
                raise ResolveError(
                    "servfail", f"no DNS server could answer for {host}: {exc}"
                ) from None
            except dns.exception.Timeout:
                raise ResolveError(
                    "timeout", f"no DNS answer for {host} in {timeout:.1f}s"
                ) from None
            except dns.exception.DNSException as exc:
                raise ResolveError("error", f"DNS lookup of {host} failed: {exc}") from None
        if nx:
            raise ResolveError("nxdomain", f"{host} does not exist in DNS (NXDOMAIN)")
        if not found:
            raise ResolveError("nodata", f"{host} has no A or AAAA record")
        return found
