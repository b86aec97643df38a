"""How containerd (ctr, nerdctl, the kubelet's CRI) would reach the registry: config.toml's
registry settings, then certs.d/<host>/hosts.toml. Every host it would try is walked in the
order containerd tries them, with the CA, client certificate and skip_verify that hosts.toml
gives it, so a dead mirror, a missing CA file or a CA containerd was never told about shows as
the pull will show it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnose.certadvice import CERTIFICATE_FAQ
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.models import Finding, Issue, Status, combine, passed, skipped
from diagnose.reference import hub_domain

if TYPE_CHECKING:
    from diagnose.containers import HostEntry, HostsToml
    from diagnose.x509go import Verdict

NOT_HERE = "containerd is not on this host (--runtime containerd to check)"


def _host_key(entry: HostEntry, hosts: HostsToml) -> str:
    return "server" if entry.server else f'[host."{entry.url}"]'


def _where(hosts: HostsToml, entry: HostEntry) -> str:
    from diagnose.containers import line_of

    needle = "server" if entry.server else entry.url
    line = line_of(Path(hosts.path), needle) if hosts.exists else None
    return (
        f"{hosts.path}" + (f" line {line}" if line else "") if hosts.exists else "(no hosts.toml)"
    )


class ContainerdHostsCheck(Check):
    id = "containerd-hosts"
    title = "containerd registry hosts (hosts.toml)"
    order = 260
    runtimes = ("containerd",)
    depends_on = ("container-runtimes",)
    timeout_s = 20.0
    faq_keys = (
        "containerd-hosts",
        "insecure-registry",
        *CERTIFICATE_FAQ,
    )
    codes = (
        Code.CONTAINERD_CONFIG_ERROR,
        Code.CONTAINERD_CA_MISSING,
        Code.MIRROR_UNREACHABLE,
        Code.CONTAINERD_HOSTS_ERROR,
        Code.TLS_VERIFY_DISABLED,
    )

    def run(self, ctx: CheckContext) -> Finding:
        if not ctx.in_play("containerd"):
            return skipped(NOT_HERE)
        from diagnose.containers import hosts_dir_name, load_containerd_config, v2_url
        from diagnose.endpoint import probe

        reg = ctx.registry
        assert reg is not None
        root = ctx.options.host_root
        cfg = load_containerd_config(root)
        host, port = hub_domain(reg.host), reg.port
        name = hosts_dir_name(host, port)
        evidence: dict[str, Any] = {"config": cfg.path if cfg.exists else None, "host": name}
        if cfg.error:
            return combine(
                [
                    Issue(
                        Status.FAIL,
                        Code.CONTAINERD_CONFIG_ERROR,
                        ["containerd-hosts"],
                        f"{cfg.path} {cfg.error}: containerd does not start with it",
                        ["Fix the TOML, then `sudo systemctl restart containerd`."],
                    )
                ],
                evidence,
            )
        if cfg.config_path and cfg.mirrors:
            return combine(
                [
                    Issue(
                        Status.FAIL,
                        Code.CONTAINERD_CONFIG_ERROR,
                        ["containerd-hosts"],
                        f"{cfg.path} sets both the CRI registry config_path and the legacy "
                        "`mirrors`: containerd's CRI refuses the pair",
                        [
                            "Move each mirror into certs.d/<host>/hosts.toml and delete the "
                            "`registry.mirrors` tables.",
                        ],
                    )
                ],
                evidence,
            )
        hosts = self._hosts(root, cfg, host, port, reg.scheme)
        evidence["hosts_toml"] = hosts.path if hosts.exists else None
        if hosts.error:
            return combine(
                [
                    Issue(
                        Status.FAIL,
                        Code.CONTAINERD_CONFIG_ERROR,
                        ["containerd-hosts"],
                        f"{hosts.path} {hosts.error}: containerd fails every pull from {name}",
                        ["Fix the TOML of that file (see containerd's docs/hosts.md)."],
                    )
                ],
                evidence,
            )
        for entry in hosts.hosts:
            missing = [p for p in (*entry.ca, *entry.client) if not self._exists(root, p)]
            if missing:
                return combine(
                    [
                        Issue(
                            Status.FAIL,
                            Code.CONTAINERD_CA_MISSING,
                            ["containerd-hosts", "certificate-trust"],
                            f"{_where(hosts, entry)} names {', '.join(missing)} for "
                            f"{_host_key(entry, hosts)}, which does not exist: containerd "
                            "cannot load the host configuration and every pull fails",
                            [
                                f"Put the file at {missing[0]}, or correct the `ca` / `client` "
                                f"path in {hosts.path}.",
                            ],
                        )
                    ],
                    evidence,
                )
        need = "pull" if reg.image is not None and reg.image.digest else "resolve"
        usable = [e for e in hosts.hosts if need in e.capabilities]
        evidence["order"] = [e.url for e in usable]
        tried: list[dict[str, Any]] = []
        issues: list[Issue] = []
        refused: Verdict | None = None
        for entry in usable:
            result = probe(
                ctx,
                v2_url(entry),
                ca_files=tuple(str(root / p.lstrip("/")) for p in entry.ca),
                skip_verify=entry.skip_verify,
                strict_ca=True,  # containerd: "unable to load CA cert"
            )
            refused = result.verdict
            tried.append({**result.to_dict(), "host": entry.url, "server": entry.server})
            if not result.ok:
                continue
            evidence["tried"] = tried
            evidence["pulls_from"] = entry.url
            failed = [t for t in tried if not t["ok"]]
            if failed:
                issues.append(
                    Issue(
                        Status.WARN,
                        Code.MIRROR_UNREACHABLE,
                        ["containerd-hosts"],
                        f"containerd reaches {entry.url} only after {len(failed)} failed "
                        f"host(s): {failed[0]['detail']} ({hosts.path})",
                        [
                            f"Bring {failed[0]['host']} back or remove its [host] table from "
                            f"{hosts.path}: every pull tries it first.",
                        ],
                    )
                )
            if entry.skip_verify:
                issues.append(
                    Issue(
                        Status.WARN,
                        Code.TLS_VERIFY_DISABLED,
                        ["containerd-hosts", "certificate-trust"],
                        f"skip_verify = true for {_host_key(entry, hosts)} in "
                        f"{_where(hosts, entry)}: the pull works without checking who answers",
                        [
                            f"Give containerd the registry's CA instead: `ca = \"/etc/containerd/"
                            f'certs.d/{name}/ca.crt"` in {hosts.path}, and drop skip_verify.',
                        ],
                    )
                )
            if issues:
                return combine(issues, evidence)
            return passed(
                f"containerd pulls from {entry.url}"
                + (f" (per {hosts.path})" if hosts.exists else " (no hosts.toml: defaults)"),
                **evidence,
            )
        evidence["tried"] = tried
        if not usable:
            return combine(
                [
                    Issue(
                        Status.FAIL,
                        Code.CONTAINERD_HOSTS_ERROR,
                        ["containerd-hosts"],
                        f"no host in {hosts.path} has the {need!r} capability: containerd has "
                        "nowhere to ask",
                        [f'Add "{need}" to the capabilities of a host in {hosts.path}.'],
                    )
                ],
                evidence,
            )
        last = tried[-1]
        steps = []
        faq = ["containerd-hosts", "certificate-trust", "network-connectivity"]
        from diagnose.certadvice import endpoint_advice

        advice = endpoint_advice(refused, str(last["url"]))
        if advice is not None:  # the certificate, or the chain the server sends, is at fault
            steps += advice.steps
            faq = ["containerd-hosts", *advice.faq]
        elif last["step"] == "tls" and "not trusted" in str(last["detail"]):
            ca = f"/etc/containerd/certs.d/{name}/ca.crt"
            steps.append(
                f"Tell containerd the registry's CA: save it as {ca} and write "
                f"{hosts.path if hosts.exists else f'/etc/containerd/certs.d/{name}/hosts.toml'}"
                f' with `server = "{usable[-1].url}"` and `[host."{usable[-1].url}"]` '
                f'`ca = "{ca}"`.'
            )
        elif last["step"] == "api" and str(last["url"]).startswith("http://"):
            steps.append(
                f"containerd speaks plain HTTP to {name} (loopback, no hosts.toml); a TLS "
                f'registry needs `server = "https://{name}"` in '
                f"/etc/containerd/certs.d/{name}/hosts.toml, with its `ca`."
            )
        elif last["step"] == "tls":
            steps.append(
                f'A plain-HTTP registry needs `server = "http://{name}"` in its hosts.toml.'
            )
        else:
            steps.append(
                f"Make {', '.join(str(t['host']) for t in tried)} reachable from this host, or "
                f"point hosts.toml at a working one."
            )
        return combine(
            [
                Issue(
                    Status.FAIL,
                    Code.CONTAINERD_HOSTS_ERROR,
                    faq,
                    "containerd cannot pull from any host it would try for "
                    f"{name}: " + "; ".join(f"{t['host']}: {t['detail']}" for t in tried),
                    steps,
                )
            ],
            evidence,
        )

    @staticmethod
    def _exists(root: Path, path: str) -> bool:
        return (root / path.lstrip("/")).is_file()

    @staticmethod
    def _hosts(root: Path, cfg: Any, host: str, port: int | None, scheme: str) -> HostsToml:
        """hosts.toml from the first certs.d folder that has one; the legacy mirrors of
        config.toml when it has them instead; else the default server."""
        from diagnose.containers import (
            HostEntry,
            HostsToml,
            default_server,
            hosts_dir_name,
            hosts_directories,
            load_hosts_toml,
        )

        for d in hosts_directories(root, cfg):
            found = load_hosts_toml(d, host, port, root)
            if found.exists:
                return found
        key = hosts_dir_name(host, port)
        legacy = cfg.mirrors.get(key) or cfg.mirrors.get(host)
        out = HostsToml(str(root / "etc/containerd/certs.d" / key))
        if legacy:
            out.path = cfg.path
            out.exists = True
            out.hosts = [HostEntry(url) for url in legacy]
            return out
        server = default_server(host, port)
        if scheme == "http":
            server = server.replace("https://", "http://", 1)
        out.hosts = [HostEntry(server, server=True)]
        return out
