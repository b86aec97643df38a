"""TCP: can this host open a connection to the registry's port, on each address it resolves to."""

from __future__ import annotations

from typing import Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.models import Finding, Status, passed, problem
from diagnose.net import ConnectError, connect, registry_addresses
from diagnose.resolve import ResolveError
from diagnose.retry import RetriesExhausted

CONNECT_CAP_S = 5.0


REMEDY = {
    "refused": [
        "Nothing listens on that port at that address: check the port in the login server "
        "(ACR and most registries use 443) and that the registry is running.",
        "A proxy or load balancer in front of the registry may be down.",
    ],
    "timeout": [
        "Packets to the registry are dropped: a firewall, network security group or proxy is "
        "the usual cause. Allow outbound HTTPS (TCP 443) to the registry.",
        "For ACR with network rules or a private endpoint, this host must be allowed or reach "
        "the private address.",
    ],
    "reset": [
        "Something on the path resets the connection: a firewall or proxy is refusing it.",
    ],
    "unreachable": [
        "This host has no route to the registry's address: check its default route and, for "
        "an IPv6 address, whether this network has IPv6 at all.",
    ],
}


class TcpCheck(Check):
    id = "tcp"
    title = "TCP connection"
    order = 30
    depends_on = ("dns",)
    starts_after = ("dns",)
    timeout_s = 12.0
    faq_keys = ("network-connectivity", "firewall-propagation", "client-timeout")
    codes = (
        Code.CONNECTIVITY_TCP_REFUSED,
        Code.CONNECTIVITY_TCP_TIMEOUT,
        Code.CONNECTIVITY_TCP_RESET,
        Code.CONNECTIVITY_TCP_UNREACHABLE,
        Code.CONNECTIVITY_TCP_ERROR,
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
                code=Code.CONNECTIVITY_TCP_ERROR,
                faq=["network-connectivity"],
                evidence={"error": exc.kind},
            )
        tried: dict[str, Any] = {}
        for address in addresses[:8]:

            def attempt(address: str = address) -> float:
                sock, ms = connect(address, port, ctx.budget(CONNECT_CAP_S))
                sock.close()
                return ms

            try:
                ms, attempts = ctx.retry(
                    attempt,
                    lambda e: isinstance(e, ConnectError) and e.kind in ("timeout", "reset"),
                )
                tried[address] = {"ok": True, "ms": round(ms, 2), "attempts": attempts}
            except RetriesExhausted as exc:
                kind = exc.last.kind if isinstance(exc.last, ConnectError) else "error"
                tried[address] = {
                    "ok": False,
                    "error": kind,
                    "detail": str(exc.last)[:200],
                    "attempts": exc.attempts,
                }
            if ctx.remaining() < 0.5:
                break
        ok = {a: t for a, t in tried.items() if t["ok"]}
        evidence = {"port": port, "connections": tried}
        if ok and len(ok) == len(tried):
            best = min(t["ms"] for t in ok.values())
            return passed(f"connected to {', '.join(ok)} port {port} in {best:.1f} ms", **evidence)
        if ok:
            bad = {a: t["error"] for a, t in tried.items() if not t["ok"]}
            return problem(
                Status.WARN,
                f"port {port} answers on {', '.join(ok)} but not on "
                + ", ".join(f"{a} ({k})" for a, k in bad.items()),
                code=Code("CONNECTIVITY_TCP_" + next(iter(bad.values())).upper()),
                faq=["network-connectivity"],
                remediation=[
                    "Clients that try the failing address first will be slow or fail; "
                    "fix the route to it or remove it from DNS."
                ],
                evidence=evidence,
            )
        kinds = [t["error"] for t in tried.values()]
        kind = max(set(kinds), key=kinds.count) if kinds else "error"
        code = Code(f"CONNECTIVITY_TCP_{kind.upper()}")
        faq = ["network-connectivity", "firewall-propagation"]
        if kind == "timeout":
            faq = ["network-connectivity", "firewall-propagation", "client-timeout"]
        words = {
            "refused": "connection refused",
            "timeout": "timed out",
            "reset": "reset",
            "unreachable": "network unreachable",
        }.get(kind, "failed")
        return problem(
            Status.FAIL,
            f"cannot connect to {', '.join(tried) or reg.host} port {port}: {words}",
            code=code,
            faq=faq,
            remediation=REMEDY.get(kind, ["Check the network path to the registry."]),
            evidence=evidence,
        )
