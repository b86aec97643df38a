"""The HTTP proxies between the clients and the registry: the environment's (skopeo, podman,
containerd's ctr, helm, this tool) and the docker daemon's own (what `docker pull` uses). Each
is tried the way a Go client uses it: connect, CONNECT, TLS inside the tunnel, with the trust
store of the client judged, and the certificate that comes through set beside the one the
registry sends directly, so that a TLS-inspecting proxy is named with the CA it signs with. A
proxy is named by host:port only; its credentials never appear."""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any
from urllib.parse import urlsplit

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.dockerhost import (
    daemon_proxy_settings,
    docker_ca_files,
    parse_daemon_json,
    registry_listed,
)
from diagnose.facts import API_ANSWER, DAEMON, PROXY_TLS, DaemonInfo, ProxyTls
from diagnose.models import Finding, Status, passed, problem
from diagnose.proxy import (
    ProxyRole,
    environment_role,
    go_uses_proxy,
    judge_tunnel,
    never_proxied,
    proxy_for,
    safe_proxy_url,
)
from diagnose.proxyprobe import (
    ProxyUrl,
    dialer,
    known_addresses,
    reissued,
    seen_directly,
    try_proxy,
    unverified_context,
)
from diagnose.resolve import is_ip
from diagnose.vantage import vantage

PROXY_FAQ = (
    "proxy",
    "proxy-https-scheme",
    "proxy-tls-scheme",
    "proxy-tls-inspection",
    "proxy-token-service",
    "certificate-trust",
    "network-connectivity",
)


class ProxyCheck(Check):
    id = "proxy"
    title = "HTTP proxy"
    order = 45
    timeout_s = 15.0
    faq_keys = PROXY_FAQ
    codes = (Code.PROXY_ERROR, Code.PROXY_SCHEME_MISMATCH, Code.PROXY_TLS_INSPECTION)

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        url = f"https://{reg.login_server}/v2/"
        setting = proxy_for(url, ctx.environ)
        if setting is None:
            if never_proxied(reg.host):
                return passed(
                    f"{reg.host} is localhost or a loopback address: the clients never send it "
                    "through a proxy"
                )
            return passed(f"no proxy for {reg.host}: direct connection")
        var = setting.source.split()[-1]
        proxy = ProxyUrl.parse(ctx.environ.get(var, ""))
        assert proxy is not None  # proxy_for parsed the same value
        role = environment_role(setting)
        host, port = reg.host, reg.effective_port
        probe = try_proxy(
            proxy, host, port, trust=ctx.ssl_context(), dial=dialer(ctx), budget=ctx.budget
        )
        direct = seen_directly(ctx, probe, host, port)
        if probe.cert is not None:
            ctx.put(
                PROXY_TLS,
                ProxyTls(
                    setting.hostport,
                    setting.source,
                    probe.cert.issuer,
                    bool(probe.trusted),
                    None if direct is None else reissued(probe.cert, direct),
                ),
            )
        return judge_tunnel(probe, direct, role, host, port, evidence=setting.to_dict())


def _docker_host(ctx: CheckContext) -> str | None:
    from diagnose.engine import DEFAULT_HOST

    if ctx.options.docker_host is not None:
        return ctx.options.docker_host
    return (ctx.environ.get("DOCKER_HOST") or DEFAULT_HOST) if ctx.live_host else None


def _insecure_for_docker(
    ctx: CheckContext, info: DaemonInfo, data: dict[str, Any], server: str, host: str, port: int
) -> str | None:
    """Why docker checks no certificate for this registry, if it does not: an address in
    127.0.0.0/8 (insecure by default), insecure-registries, or the running daemon's word."""
    addresses = known_addresses(ctx, host, port)
    if any(ipaddress.ip_address(a).is_loopback for a in addresses if is_ip(a)):
        return "it resolves to a loopback address, which docker treats as insecure"
    listed = data.get("insecure-registries")
    if isinstance(listed, list) and registry_listed([str(x) for x in listed], server, addresses):
        return "it is in insecure-registries"
    configs = info.registry_config.get("IndexConfigs") or {}
    if isinstance(configs.get(server), dict) and configs[server].get("Secure") is False:
        return "the running daemon lists it as insecure"
    return None


def _docker_trust(ctx: CheckContext, host: str, port: int) -> ssl.SSLContext:
    """What docker trusts for one registry: the system store plus certs.d/HOST[:PORT]/*.crt."""
    from diagnose.tlscontext import check_ca_file, verifying_context

    usable = []
    for ca in docker_ca_files(ctx.options.host_root, host, port):
        try:  # docker skips a file it cannot read
            check_ca_file(ca)
        except ValueError:
            continue
        usable.append(ca)
    return verifying_context(usable, environ=ctx.environ)


class DaemonProxyCheck(Check):
    id = "daemon-proxy"
    title = "Docker daemon's proxy"
    order = 225
    runtimes = ("docker",)
    depends_on = ("docker-daemon",)
    starts_after = ("dns",)
    timeout_s = 25.0
    faq_keys = PROXY_FAQ
    codes = (
        Code.DAEMON_PROXY_ERROR,
        Code.PROXY_SCHEME_MISMATCH,
        Code.PROXY_TLS_INSPECTION,
        Code.PROXY_TOKEN_REFUSED,
    )

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        root = ctx.options.host_root
        ctx.result("docker-daemon")
        info = ctx.fact(DAEMON) or DaemonInfo(present=None)
        data = parse_daemon_json(root / "etc/docker/daemon.json").data
        settings = daemon_proxy_settings(root, data, info.proxies)
        evidence: dict[str, Any] = {
            "settings": {
                name: {"value": _shown(name, value), "source": source}
                for name, (value, source) in settings.items()
            }
            or None
        }
        var = "HTTPS_PROXY" if reg.scheme == "https" else "HTTP_PROXY"
        server, host, port = reg.login_server, reg.host, reg.effective_port
        if var not in settings:
            looked = "docker.service drop-ins, daemon.json `proxies`" + (
                ", the running daemon" if info.present else ""
            )
            return passed(
                f"no {var} for the docker daemon ({looked}): it reaches {server} directly",
                **evidence,
            )
        raw, source = settings[var]
        no_proxy = settings.get("NO_PROXY", ("", ""))[0]
        proxy = ProxyUrl.parse(raw)
        shown = proxy.hostport if proxy else "(unparsable)"
        if not go_uses_proxy(host, port, no_proxy):
            why = (
                "a loopback name or address, which Go never sends through a proxy"
                if never_proxied(host)
                else f"NO_PROXY ({no_proxy}) covers it"
            )
            return passed(
                f"the docker daemon sends {server} around its proxy {shown}: {why}", **evidence
            )
        if proxy is None:
            return problem(
                Status.FAIL,
                f"the daemon's {var} (from {source}) is not a usable proxy URL",
                code=Code.DAEMON_PROXY_ERROR,
                faq=["proxy"],
                remediation=[f"Write {var} as http://host:port in {source}, then restart."],
                evidence=evidence,
            )
        where = vantage(root, ctx.live_host, _docker_host(ctx))
        evidence["vantage"] = {"shares_network": where.shared, "how": where.words}
        insecure = _insecure_for_docker(ctx, info, data, server, host, port)
        folder = host if port == 443 else f"{host}:{port}"
        role = ProxyRole(
            who=f"the daemon's proxy {shown} (from {source})",
            proxy=proxy.shown,
            setting=f"{var} in {source}",
            no_proxy=no_proxy,
            trust=(
                f"docker, which checks no certificate for {server} ({insecure}),"
                if insecure
                else f"docker (the system store and /etc/docker/certs.d/{folder}/)"
            ),
            docker=True,
            error_code=Code.DAEMON_PROXY_ERROR,
            bad=Status.FAIL if where.shared else Status.WARN,
            note=f"; {where.words}",
            no_proxy_setting=settings.get("NO_PROXY", ("", source))[1],
        )
        trust = unverified_context() if insecure else _docker_trust(ctx, host, port)
        probe = try_proxy(
            proxy,
            host,
            port,
            trust=trust,
            dial=dialer(ctx),
            budget=ctx.budget,
            tls=reg.scheme == "https",
        )
        direct = seen_directly(ctx, probe, host, port)
        finding = judge_tunnel(probe, direct, role, host, port, evidence=evidence)
        if finding.status is not Status.PASS or reg.scheme != "https":
            return finding
        return self._token_service(ctx, proxy, role, trust, no_proxy, evidence) or finding

    def _token_service(
        self,
        ctx: CheckContext,
        proxy: ProxyUrl,
        role: ProxyRole,
        trust: ssl.SSLContext,
        no_proxy: str,
        evidence: dict[str, Any],
    ) -> Finding | None:
        """The token service the registry sends clients to, through the same proxy: a proxy
        that lets the registry through and drops the token request fails every pull too."""
        reg = ctx.registry
        assert reg is not None
        ctx.result("api")
        answer = ctx.fact(API_ANSWER)
        challenge = answer.challenge if answer is not None else None
        if challenge is None or challenge.scheme != "bearer" or not challenge.realm:
            return None
        realm = urlsplit(challenge.realm)
        host = (realm.hostname or "").lower()
        port = realm.port or (443 if realm.scheme == "https" else 80)
        if (
            not host
            or realm.scheme != "https"
            or (host, port) == (reg.host.lower(), reg.effective_port)
            or not go_uses_proxy(host, port, no_proxy)
        ):
            return None
        probe = try_proxy(proxy, host, port, trust=trust, dial=dialer(ctx), budget=ctx.budget)
        if probe.tunnel_open and probe.trusted is not False:
            evidence["token_service_tunnel"] = probe.to_dict()
            return None
        direct = seen_directly(ctx, probe, host, port)
        return judge_tunnel(probe, direct, role, host, port, token=True, evidence=evidence)


def _shown(name: str, value: str) -> str:
    """A proxy setting as it may be shown: NO_PROXY as is, a proxy URL without user-info."""
    if name == "NO_PROXY":
        return value
    safe = safe_proxy_url(value)
    return safe[0] if safe else "(unparsable)"
