"""Name resolution shared by every check in a run.

Without `--nameserver` addresses come from the system resolver, as docker gets them. With it, the
hosts file under the host root still wins (as it would on the host) and everything else comes from
the named DNS server, so the whole run, TCP, TLS and HTTP included, sees the same answers.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
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


class DnsLookup:
    """One name's A and AAAA answers from DNS, with the failure kind when it fails."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.cnames: list[str] = []
        self.queries: dict[str, Any] = {}
        self.error: ResolveError | None = None
        self.attempts = 0


def _rcodes(exc: Exception) -> list[str]:
    """The response codes (or errors) each nameserver gave, as dnspython collected them."""
    import dns.rcode

    codes: list[str] = []
    for err in getattr(exc, "kwargs", {}).get("errors", []) or []:
        response = err[4] if len(err) > 4 else None
        if response is not None:
            codes.append(dns.rcode.to_text(response.rcode()))
        elif len(err) > 3 and err[3] is not None:
            codes.append(type(err[3]).__name__)
    return list(dict.fromkeys(codes))


class HostResolver:
    """One per run; every check connects where the DNS check looked, from one lookup per name."""

    def __init__(self, nameserver: tuple[str, int] | None, host_root: Path) -> None:
        self.nameserver = nameserver
        self.host_root = host_root
        self._lock = threading.Lock()
        self._cache: dict[str, list[str]] = {}
        self._lookups: dict[str, DnsLookup] = {}
        self._name_locks: dict[str, threading.Lock] = {}
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

    def _name_lock(self, host: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(host, threading.Lock())

    def dns_lookup(self, host: str, remaining: Callable[[], float], tries: int) -> DnsLookup:
        """A and AAAA from DNS, once per name per run: concurrent callers share the answer."""
        host = host.lower()
        with self._name_lock(host):
            found = self._lookups.get(host)
            if found is None:
                found = self._lookups[host] = self._query(host, remaining, tries)
            return found

    def _query(self, host: str, remaining: Callable[[], float], tries: int) -> DnsLookup:
        import dns.exception
        import dns.resolver

        from diagnose.retry import RetriesExhausted, with_retries

        out = DnsLookup()

        def transient(exc: BaseException) -> bool:
            return isinstance(exc, ResolveError) and exc.kind in ("timeout", "servfail")

        for rdtype in ("A", "AAAA"):

            def query(rdtype: str = rdtype) -> tuple[Any, float]:
                # leave room for the other query type and a retry inside the caller's deadline
                lifetime = max(0.2, min(3.0, remaining() / 3 - 0.1))
                resolver = self.dns_resolver(lifetime)
                t0 = time.monotonic()
                try:
                    ans = resolver.resolve(host, rdtype, search=False, raise_on_no_answer=False)
                except dns.resolver.NXDOMAIN:
                    raise ResolveError("nxdomain", "the name does not exist (NXDOMAIN)") from None
                except dns.resolver.NoNameservers as exc:
                    codes = _rcodes(exc)
                    kind = "refused" if codes and set(codes) == {"REFUSED"} else "servfail"
                    what = "/".join(codes) or "SERVFAIL"
                    raise ResolveError(kind, f"the DNS server would not answer ({what})") from None
                except dns.exception.Timeout:
                    raise ResolveError("timeout", f"no DNS answer within {lifetime:.1f}s") from None
                except dns.exception.DNSException as exc:
                    raise ResolveError("error", f"the lookup failed: {exc}") from None
                return ans, (time.monotonic() - t0) * 1000

            try:
                (ans, ms), attempts = with_retries(
                    query, transient=transient, tries=tries, remaining=remaining
                )
            except RetriesExhausted as exc:
                out.attempts += exc.attempts
                last = exc.last
                err = last if isinstance(last, ResolveError) else ResolveError("error", str(last))
                out.queries[rdtype] = {"error": err.kind, "attempts": exc.attempts}
                if out.error is None or err.kind == "nxdomain":
                    out.error = err
                if err.kind in ("nxdomain", "timeout"):
                    break  # the other type will fail the same way; save the time
                continue
            out.attempts += attempts
            found = [rr.to_text() for rr in ans.rrset] if ans.rrset is not None else []
            chain = [
                str(rrset.name).rstrip(".") + " -> " + str(rrset[0].target).rstrip(".")
                for rrset in ans.chaining_result.cnames
            ]
            if chain and not out.cnames:
                out.cnames = chain
            out.addresses.extend(found)
            out.queries[rdtype] = {
                "answers": found,
                "ms": round(ms, 2),
                "attempts": attempts,
                "nameserver": str(ans.nameserver),
                "ttl": ans.rrset.ttl if ans.rrset is not None else None,
            }
        if out.addresses and (out.error is None or out.error.kind != "nxdomain"):
            out.error = None  # one query type failing in passing is not a failure
        if out.error is None and not out.addresses:
            out.error = ResolveError("nodata", "the name has neither an A nor an AAAA record")
        return out

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
            pinned = self.hosts().get(host)
            if pinned:
                found = pinned
            else:
                end = time.monotonic() + timeout
                look = self.dns_lookup(host, lambda: max(0.0, end - time.monotonic()), 2)
                if look.error is not None:
                    raise look.error
                found = look.addresses
        with self._lock:
            self._cache[host] = found
        return found
