"""DNS: does the login server resolve, to what, through which names, and do the DNS answer
and the host's own resolver agree (docker uses the latter)."""

from __future__ import annotations

import ipaddress
from typing import Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.models import Finding, Status, passed, problem, skipped
from diagnose.resolve import DnsLookup, ResolveError, is_ip

FAQ = ("network-connectivity",)


def classify(address: str) -> str:
    """loopback, private, link-local, shared (CGNAT) or public."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "shared"
    if ip.is_private:
        return "private"
    return "public"


class DnsCheck(Check):
    id = "dns"
    title = "DNS resolution"
    order = 20
    timeout_s = 10.0
    faq_keys = ("network-connectivity", "client-timeout")
    codes = (Code.CONNECTIVITY_DNS_ERROR, Code.CONNECTIVITY_DNS_MISMATCH)

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        host = reg.host
        if is_ip(host):
            return skipped(f"{host} is an IP address: nothing to resolve", addresses=[host])
        if host == "localhost" or host.endswith(".localhost"):
            return skipped(f"{host} is resolved by this host itself, never by DNS")
        ns = ctx.options.nameserver
        evidence: dict[str, Any] = {
            "name": host,
            "nameserver": f"{ns[0]}:{ns[1]}" if ns else "system configuration",
        }
        try:
            conf = ctx.resolver.dns_resolver(1.0)
            evidence["nameservers"] = [str(n) for n in conf.nameservers]
        except ResolveError as exc:
            return problem(
                Status.FAIL,
                str(exc),
                code=Code.CONNECTIVITY_DNS_ERROR,
                faq=FAQ,
                remediation=[
                    "Give this host a working nameserver in /etc/resolv.conf, "
                    "or point the run at one with --nameserver."
                ],
                evidence=evidence,
            )
        look = ctx.resolver.dns_lookup(host, ctx.remaining, ctx.options.tries)
        evidence.update(
            queries=look.queries,
            cname_chain=look.cnames,
            addresses=look.addresses,
            attempts=look.attempts,
        )
        # What the host itself would use: the hosts file plus the named DNS server, or the libc
        # resolver. Docker resolves through the latter.
        system, system_error = self._system(ctx, host, look)
        evidence["system_addresses"] = system
        if system_error is not None:
            evidence["system_error"] = system_error.kind
        if look.error is not None:
            return self._dns_failed(ctx, host, look.error, system, evidence)
        if system_error is not None:
            return problem(
                Status.FAIL,
                f"DNS knows {host} but this host's resolver does not ({system_error})",
                code=Code.CONNECTIVITY_DNS_ERROR,
                faq=FAQ,
                remediation=[
                    "Check /etc/nsswitch.conf and any local resolver (systemd-resolved, dnsmasq) "
                    "between this host and its DNS servers.",
                ],
                evidence=evidence,
            )
        kinds = {a: classify(a) for a in look.addresses}
        evidence["address_kinds"] = kinds
        privatelink = any(".privatelink." in c for c in look.cnames)
        evidence["private_endpoint"] = privatelink or any(k == "private" for k in kinds.values())
        if system and not set(system) & set(look.addresses):
            return problem(
                Status.WARN,
                f"DNS says {host} is {', '.join(look.addresses)} but this host resolves it to "
                f"{', '.join(system)}",
                code=Code.CONNECTIVITY_DNS_MISMATCH,
                faq=FAQ,
                remediation=[
                    f"Docker connects to {', '.join(system)}. Look for an entry for {host} in "
                    "/etc/hosts or a local resolver that overrides DNS, and remove it if stale.",
                    "With a private endpoint, make sure the private DNS zone is linked to this "
                    "host's network.",
                ],
                evidence=evidence,
            )
        via = f" via {' -> '.join(c.split(' -> ')[-1] for c in look.cnames)}" if look.cnames else ""
        a_ms = look.queries.get("A", {}).get("ms")
        timing = f" in {a_ms:.0f} ms" if isinstance(a_ms, float) else ""
        extra = ""
        if privatelink:
            extra = "; private endpoint (privatelink) in use"
        elif any(k == "private" for k in kinds.values()):
            extra = "; private address: a private endpoint or internal registry"
        return passed(f"{host} -> {', '.join(look.addresses)}{via}{timing}{extra}", **evidence)

    def _system(
        self, ctx: CheckContext, host: str, look: DnsLookup
    ) -> tuple[list[str], ResolveError | None]:
        if ctx.options.nameserver is not None:
            pinned = ctx.resolver.hosts().get(host)
            if pinned:
                return pinned, None
            return look.addresses, look.error
        try:
            return ctx.resolver.addresses(host, 443, ctx.budget(3.0)), None
        except ResolveError as exc:
            return [], exc

    def _dns_failed(
        self,
        ctx: CheckContext,
        host: str,
        err: ResolveError,
        system: list[str],
        evidence: dict[str, Any],
    ) -> Finding:
        evidence["error"] = err.kind
        if system:
            return problem(
                Status.WARN,
                f"DNS cannot resolve {host} ({err}); this host resolves it to "
                f"{', '.join(system)} by other means (hosts file or a local resolver)",
                code=Code.CONNECTIVITY_DNS_MISMATCH,
                faq=FAQ,
                remediation=[
                    "Other machines (and containers with their own DNS) will not find the "
                    "registry: add the name to DNS, or make sure every client has the same "
                    "hosts entry.",
                ],
                evidence=evidence,
            )
        steps = {
            "nxdomain": [
                f"Check the spelling of {host}.",
                "For ACR, the login server is <registry name>.azurecr.io in lower case; "
                "`az acr show -n <name> --query loginServer` prints it.",
                "If the registry uses a private endpoint, this host must use the DNS zone that "
                "holds its privatelink record.",
            ],
            "timeout": [
                "The DNS server did not answer: check that this host can reach it "
                "(`dig @<server> <name>`), and that no firewall drops DNS (UDP and TCP 53).",
            ],
            "servfail": [
                "The DNS server failed to answer (SERVFAIL): its upstream, the zone or its "
                "DNSSEC signatures are broken; try another server with --nameserver to compare.",
            ],
            "refused": [
                "The DNS server refuses to answer for this name (REFUSED): it does not serve "
                "this zone or does not accept queries from this host. Use the resolver this "
                "network provides.",
            ],
        }.get(err.kind, ["Check this host's DNS configuration (/etc/resolv.conf)."])
        faq = ("network-connectivity", "client-timeout") if err.kind == "timeout" else FAQ
        return problem(
            Status.FAIL,
            f"cannot resolve {host}: {err}",
            code=Code.CONNECTIVITY_DNS_ERROR,
            faq=faq,
            remediation=steps,
            evidence=evidence,
        )
