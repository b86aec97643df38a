"""The HTTP proxy between this host and the registry: which one, set where, and whether it
opens a tunnel to the registry. A proxy is named by host:port only; its credentials never
appear."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.dockerhost import parse_daemon_json, systemd_proxy_env
from diagnose.models import Finding, Status, passed, problem
from diagnose.proxy import (
    ProxySetting,
    classify_proxy_error,
    go_uses_proxy,
    never_proxied,
    proxy_for,
    safe_proxy_url,
)

if TYPE_CHECKING:
    import http.client


def daemon_proxy(ctx: CheckContext) -> dict[str, str]:
    """The docker daemon's own proxy (what `docker pull` uses), and where it is set."""
    out: dict[str, str] = {}
    drop = systemd_proxy_env(ctx.options.host_root)
    for name in ("HTTPS_PROXY", "NO_PROXY"):
        if drop.get(name):
            out[name] = drop[name]
            out[f"{name}_source"] = "systemd drop-in docker.service.d"
    cfg = parse_daemon_json(ctx.host_path("/etc/docker/daemon.json")).data.get("proxies")
    if isinstance(cfg, dict):
        for key, name in (("https-proxy", "HTTPS_PROXY"), ("no-proxy", "NO_PROXY")):
            if isinstance(cfg.get(key), str) and cfg[key]:
                out[name] = cfg[key]
                out[f"{name}_source"] = "/etc/docker/daemon.json proxies"
    return out


class ProxyCheck(Check):
    id = "proxy"
    title = "HTTP proxy"
    order = 45
    timeout_s = 10.0
    faq_keys = ("proxy", "network-connectivity")
    codes = (Code.PROXY_ERROR,)

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        url = f"https://{reg.login_server}/v2/"
        setting = proxy_for(url, ctx.environ)
        evidence: dict[str, Any] = {}
        daemon = daemon_proxy(ctx)
        if daemon.get("HTTPS_PROXY"):
            safe = safe_proxy_url(daemon["HTTPS_PROXY"])
            evidence["daemon_proxy"] = {
                "proxy": safe[0] if safe else "(unparsable)",
                "source": daemon.get("HTTPS_PROXY_source"),
                "used_for_registry": go_uses_proxy(
                    reg.host, reg.effective_port, daemon.get("NO_PROXY", "")
                ),
            }
        daemon_note = ""
        if "daemon_proxy" in evidence:
            d = evidence["daemon_proxy"]
            daemon_note = (
                f"; docker pulls go through the daemon's proxy {d['proxy']} (from {d['source']})"
                if d["used_for_registry"]
                else "; the daemon sends the registry around its proxy (loopback or NO_PROXY)"
            )
        if setting is None:
            if never_proxied(reg.host):
                return passed(
                    f"{reg.host} is localhost or a loopback address: the clients never send it "
                    f"through a proxy{daemon_note}",
                    **evidence,
                )
            return passed(f"no proxy for {reg.host}: direct connection{daemon_note}", **evidence)
        evidence.update(setting.to_dict())
        kind, words, ms = self._tunnel(ctx, setting, reg.host, reg.effective_port)
        evidence["tunnel"] = kind
        if ms is not None:
            evidence["tunnel_ms"] = round(ms, 2)
        if kind == "ok":
            return passed(
                f"requests to {reg.login_server} go through the proxy {setting.hostport} (from "
                f"the {setting.source}); it opens a tunnel to the registry{daemon_note}",
                **evidence,
            )
        var = setting.source.split()[-1]
        fixes = {
            "refused": [
                f"Start the proxy at {setting.hostport}, or point {var} at the proxy "
                "that runs (or unset it if this network needs none)."
            ],
            "auth": [
                f"Put the proxy's user and password in {var} "
                "(http://user:password@host:port), or have this host allowed without."
            ],
            "denied": [
                f"Ask the proxy's owner to allow CONNECT to {reg.login_server} and to "
                "the registry's token and storage hosts."
            ],
        }.get(kind, [f"Check the proxy at {setting.hostport}."])
        fixes.append(
            f"If {reg.host} is reachable without the proxy, add it to NO_PROXY (now "
            f"{setting.no_proxy or 'unset'}); storage hosts that layers redirect to need it too."
        )
        return problem(
            Status.FAIL,
            f"the proxy {setting.hostport} (from the {setting.source}) fails for "
            f"{reg.login_server}: {words}",
            code=Code.PROXY_ERROR,
            faq=["proxy", "network-connectivity"],
            remediation=fixes,
            evidence=evidence,
        )

    def _tunnel(
        self, ctx: CheckContext, setting: ProxySetting, host: str, port: int
    ) -> tuple[str, str, float | None]:
        """CONNECT through the proxy as the Go clients do; (kind, words, milliseconds)."""
        import base64
        import http.client
        import ssl
        import time
        from urllib.parse import unquote, urlsplit

        headers = {}
        raw = ctx.environ.get(setting.source.split()[-1], "")
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        conn: http.client.HTTPConnection
        if setting.url.startswith("https://"):
            conn = http.client.HTTPSConnection(
                setting.host,
                setting.port,
                timeout=ctx.budget(5.0),
                context=ssl.create_default_context(),
            )
        else:
            conn = http.client.HTTPConnection(setting.host, setting.port, timeout=ctx.budget(5.0))
        conn.set_tunnel(host, port, headers=headers)
        t0 = time.monotonic()
        try:
            conn.connect()
        except OSError as exc:
            kind, words = classify_proxy_error(str(exc))
            return kind, words, None
        finally:
            conn.close()
        return "ok", "tunnel opened", (time.monotonic() - t0) * 1000
