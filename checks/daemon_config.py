"""The daemon settings behind the FAQ's pull failures: Red Hat's signature verification,
insecure / blocked registries and mirrors, proxies, debug logging, foreign layers, and the CA
docker trusts for a registry. Merged from the daemon's command line, /etc/docker/daemon.json,
/etc/sysconfig/docker and what the running daemon reports (/info). Read-only."""

from __future__ import annotations

from typing import Any

from diagnose.certadvice import CERTIFICATE_FAQ
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.dockerhost import (
    daemon_proxy_settings,
    flag_value,
    flag_values,
    is_red_hat,
    os_release,
    parse_daemon_json,
    parse_sysconfig,
    registry_listed,
)
from diagnose.facts import DAEMON, SCHEME, DaemonInfo
from diagnose.findings import ANSWER_CODES, ANSWER_FAQ, REQUEST_CODES
from diagnose.models import Finding, Issue, Status, combine, passed, problem, skipped
from diagnose.net import ConnectError, connect
from diagnose.resolve import ResolveError

RESTART = "sudo systemctl restart docker"


def _daemon(ctx: CheckContext) -> DaemonInfo:
    """What the docker-daemon check learnt (nothing, when it did not reach a daemon)."""
    ctx.result("docker-daemon")
    return ctx.fact(DAEMON) or DaemonInfo(present=None)


def _major(version: str) -> int | None:
    head = version.split(".")[0]
    return int(head) if head.isascii() and head.isdigit() else None


def _upstream(info: DaemonInfo) -> str | None:
    """The running daemon's version when it is docker's own (17.03 and later): Red Hat's
    fork (docker 1.13 and before, `docker-current`) alone has --block-registry, and upstream
    dockerd refuses to start with that flag."""
    version = info.version or ""
    major = _major(version)
    return version if major is not None and major >= 17 else None


def _addresses(ctx: CheckContext, host: str, port: int) -> list[str]:
    try:
        return ctx.resolver.addresses(host, port, ctx.budget(3.0))
    except ResolveError:
        return []


class DaemonOptionsCheck(Check):
    id = "daemon-options"
    title = "Docker daemon options"
    order = 220
    scope = "host"
    runtimes = ("docker",)
    depends_on = ("docker-daemon",)
    timeout_s = 15.0
    faq_keys = (
        "signature-verification",
        "docker-debug-logs",
        "tls12",
        "network-connectivity",
        "client-timeout",
    )
    codes = (
        Code.SIGNATURE_VERIFICATION,
        Code.DAEMON_CONFIG_ERROR,
        Code.INSECURE_REGISTRY,
        Code.REGISTRY_BLOCKED,
        Code.MIRROR_UNREACHABLE,
    )

    def run(self, ctx: CheckContext) -> Finding:
        root = ctx.options.host_root
        dj = parse_daemon_json(root / "etc/docker/daemon.json")
        sc = parse_sysconfig(root / "etc/sysconfig/docker")
        release = os_release(root)
        info = _daemon(ctx)
        args = list(info.args)
        issues: list[Issue] = []
        evidence: dict[str, Any] = {
            "os": release.get("PRETTY_NAME") or release.get("ID"),
            "daemon_json": str(dj.path) if dj.exists else None,
            "sysconfig": str(sc.path) if sc.exists else None,
            "sysconfig_options": sc.options if sc.exists else None,
            "daemon_args": args or None,
        }
        if dj.error:
            issues.append(
                Issue(
                    Status.FAIL,
                    Code.DAEMON_CONFIG_ERROR,
                    ["docker-debug-logs"],
                    f"/etc/docker/daemon.json {dj.error}: the daemon refuses to "
                    "start (or restart) with it",
                    [
                        "Fix the JSON (`python3 -m json.tool /etc/docker/daemon.json` "
                        "points at the error), then restart the daemon."
                    ],
                )
            )
        for err in dj.type_errors:
            issues.append(
                Issue(
                    Status.FAIL,
                    Code.DAEMON_CONFIG_ERROR,
                    ["docker-debug-logs"],
                    f"/etc/docker/daemon.json: {err}",
                    ["Correct the value's type; the daemon will not start with it."],
                )
            )
        for err in sc.errors:
            issues.append(
                Issue(
                    Status.FAIL,
                    Code.DAEMON_CONFIG_ERROR,
                    ["signature-verification"],
                    f"/etc/sysconfig/docker {err}",
                    ["Fix the shell quoting of that line."],
                )
            )
        issues += self._signature(release, sc, dj.data, args)
        debug = info.debug if info.debug is not None else dj.data.get("debug")
        if flag_value(args, "--debug") == "true" or flag_value(args, "-D") == "true":
            debug = True
        evidence["debug"] = bool(debug)
        insecure = [
            *(dj.data.get("insecure-registries") or []),
            *flag_values(args, "--insecure-registry"),
            *flag_values(sc.variables.get("INSECURE_REGISTRY", "").split(), "--insecure-registry"),
        ]
        blocked = flag_values(args, "--block-registry")
        from_file = flag_values(sc.variables.get("BLOCK_REGISTRY", "").split(), "--block-registry")
        upstream = _upstream(info)
        if from_file and upstream:
            evidence["block_registry_ignored"] = (
                f"the running daemon is docker {upstream}, which has no --block-registry: "
                "BLOCK_REGISTRY in /etc/sysconfig/docker (Red Hat's docker) does not apply"
            )
        elif from_file:
            blocked += from_file
        regcfg = info.registry_config
        api_insecure = [
            name
            for name, cfg in (regcfg.get("IndexConfigs") or {}).items()
            if isinstance(cfg, dict) and cfg.get("Secure") is False
        ]
        evidence.update(
            insecure_registries=insecure or None,
            api_insecure=api_insecure or None,
            blocked_registries=blocked or None,
        )
        # the daemon's proxy is judged by the daemon-proxy check; here it is only shown
        proxies = {k: v for k, (v, _) in daemon_proxy_settings(root, dj.data, info.proxies).items()}
        evidence["proxies"] = proxies or None
        for reg in ctx.registries:
            issues += self._per_registry(
                ctx,
                reg.login_server,
                reg.host,
                reg.effective_port,
                reg.scheme,
                insecure + api_insecure,
                blocked,
                dj.data,
            )
        if not issues:
            parts = []
            if not (dj.exists or sc.exists or args or info):
                parts.append("no daemon configuration found (defaults apply)")
            else:
                parts.append("no setting stands in the way of the registries")
            if not debug:
                parts.append(
                    'debug logging is off (to turn it on: "debug": true in '
                    "/etc/docker/daemon.json, then restart the daemon)"
                )
            return Finding(
                Status.PASS,
                "; ".join(parts),
                faq=() if debug else ("docker-debug-logs",),
                evidence=evidence,
            )
        return combine(issues, evidence)

    def _signature(
        self, release: dict[str, str], sc: Any, data: dict[str, Any], args: list[str]
    ) -> list[Issue]:
        running = flag_value(args, "--signature-verification")
        configured = flag_value(sc.options, "--signature-verification") if sc.exists else None
        in_json = data.get("signature-verification")
        red_hat_package = is_red_hat(release) and sc.exists and sc.options_line is not None
        on = (
            running == "true"
            or configured == "true"
            or in_json is True
            or (red_hat_package and configured is None and running is None)
        )
        if running == "false" or (
            configured == "false" and running is None and in_json is not True
        ):
            on = False
        if not on:
            return []
        current = " ".join(o for o in sc.options if not o.startswith("--signature-verification"))
        line = f"OPTIONS='{current} --signature-verification=false'".replace("' ", "'")
        where = (
            "the running daemon's command line"
            if running == "true"
            else "/etc/docker/daemon.json"
            if in_json is True
            else "/etc/sysconfig/docker"
        )
        why = (
            "verifies image signatures by default (Red Hat's docker)"
            if configured is None and running is None and in_json is None
            else f"has signature verification on ({where})"
        )
        return [
            Issue(
                Status.FAIL,
                Code.SIGNATURE_VERIFICATION,
                ["signature-verification"],
                f"the daemon {why}: pulls from registries without signatures fail with "
                "'unauthorized: authentication required'",
                [
                    f"In /etc/sysconfig/docker write: {line}",
                    f"Restart the daemon: `{RESTART}.service`.",
                ],
            )
        ]

    def _per_registry(
        self,
        ctx: CheckContext,
        server: str,
        host: str,
        port: int,
        scheme: str,
        insecure: list[str],
        blocked: list[str],
        data: dict[str, Any],
    ) -> list[Issue]:
        issues: list[Issue] = []
        addresses = _addresses(ctx, host, port)
        entry = registry_listed(insecure, server, addresses)
        if entry and scheme != "http":
            issues.append(
                Issue(
                    Status.WARN,
                    Code.INSECURE_REGISTRY,
                    ["tls12"],
                    f"docker treats {server} as insecure ({entry!r}): certificate errors are "
                    "ignored and plain HTTP is allowed",
                    [
                        f"Remove {entry!r} from insecure-registries once {server} has a valid "
                        "certificate, and restart the daemon."
                    ],
                )
            )
        hit = next((b for b in blocked if b.lower() in (server.lower(), host.lower(), "all")), None)
        if hit:
            issues.append(
                Issue(
                    Status.FAIL,
                    Code.REGISTRY_BLOCKED,
                    ["network-connectivity"],
                    f"BLOCK_REGISTRY in /etc/sysconfig/docker blocks {server} ({hit!r})",
                    [f"Remove {hit!r} from BLOCK_REGISTRY and restart the daemon."],
                )
            )
        mirrors = (
            data.get("registry-mirrors") if isinstance(data.get("registry-mirrors"), list) else []
        )
        if host in ("registry-1.docker.io", "docker.io", "index.docker.io") and mirrors:
            for mirror in mirrors:
                issues += self._mirror(ctx, str(mirror))
        return issues

    def _mirror(self, ctx: CheckContext, mirror: str) -> list[Issue]:
        from urllib.parse import urlsplit

        url = urlsplit(mirror if "://" in mirror else f"https://{mirror}")
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        try:
            sock, _ = connect(_addresses(ctx, host, port)[0], port, ctx.budget(3.0))
            sock.close()
            return []
        except (ConnectError, IndexError):
            return [
                Issue(
                    Status.WARN,
                    Code.MIRROR_UNREACHABLE,
                    ["network-connectivity", "client-timeout"],
                    f"registry mirror {mirror} cannot be reached: Docker Hub pulls wait "
                    "for it before falling back",
                    [f"Fix or remove {mirror} in registry-mirrors (daemon.json)."],
                )
            ]


class NondistributableCheck(Check):
    id = "nondistributable-artifacts"
    title = "Foreign (non-distributable) layers"
    order = 230
    runtimes = ("docker",)
    depends_on = ("authorized-request", "docker-daemon")
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = ("nondistributable-artifacts", *ANSWER_FAQ)
    codes = (Code.NONDISTRIBUTABLE_NOT_ALLOWED, Code.BLOB_UNKNOWN, *REQUEST_CODES, *ANSWER_CODES)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.registryapi import NotReadable, manifest_for

        reg = ctx.registry
        assert reg is not None
        root = ctx.options.host_root
        dj = parse_daemon_json(root / "etc/docker/daemon.json")
        info = _daemon(ctx)
        regcfg = info.registry_config
        entries = [
            *(dj.data.get("allow-nondistributable-artifacts") or []),
            *flag_values(list(info.args), "--allow-nondistributable-artifacts"),
            *(regcfg.get("AllowNondistributableArtifactsHostnames") or []),
            *(regcfg.get("AllowNondistributableArtifactsCIDRs") or []),
        ]
        entries = [str(e) for e in dict.fromkeys(str(x) for x in entries)]
        addresses = _addresses(ctx, reg.host, reg.effective_port)
        covered = registry_listed(entries, reg.login_server, addresses)
        evidence: dict[str, Any] = {
            "allow_list": entries or None,
            "covered_by": covered,
            "addresses": addresses,
        }
        version = info.version or ""
        if (_major(version) or 0) >= 25:
            evidence["note"] = (
                "docker 25 deprecated allow-nondistributable-artifacts and later "
                "releases dropped it: they push foreign layers as ordinary ones"
            )
        if not reg.repository:
            state = f"covered by {covered!r}" if covered else "not in the allow list"
            return skipped(f"no repository named: {reg.login_server} is {state}", **evidence)
        ctx.result("authorized-request")
        try:
            doc = manifest_for(ctx)
        except NotReadable as exc:
            if exc.finding is not None:  # the registry's own answer (a 429...): a finding
                return exc.finding
            return skipped(f"the manifest cannot be read: {exc}", **evidence)
        foreign = [
            x
            for x in doc.get("layers") or []
            if isinstance(x, dict) and ("foreign" in str(x.get("mediaType", "")) or x.get("urls"))
        ]
        evidence["foreign_layers"] = [
            {"digest": x.get("digest"), "urls": x.get("urls")} for x in foreign
        ][:20]
        if not foreign:
            return passed(f"{reg.repository} has no foreign layers", **evidence)
        if info.os_type == "linux":
            return _on_linux(ctx, foreign, evidence)
        if covered:
            return passed(
                f"{len(foreign)} foreign layer(s) in {reg.repository}; "
                f"{reg.login_server} is allowed ({covered!r})",
                **evidence,
            )
        snippet = f'{{"allow-nondistributable-artifacts": ["{reg.login_server}"]}}'
        return problem(
            Status.WARN,
            f"{reg.repository} has {len(foreign)} foreign layer(s) and {reg.login_server} is not "
            "in allow-nondistributable-artifacts: a host that may reach only the registry cannot "
            "fetch them, and pushes leave them out",
            code=Code.NONDISTRIBUTABLE_NOT_ALLOWED,
            faq=["nondistributable-artifacts"],
            remediation=[
                f"Add the registry to /etc/docker/daemon.json: {snippet}",
                f"Restart the daemon (`{RESTART}`) and push the image again.",
                *([evidence["note"]] if "note" in evidence else []),
            ],
            evidence=evidence,
        )


def _on_linux(
    ctx: CheckContext, foreign: list[dict[str, Any]], evidence: dict[str, Any]
) -> Finding:
    """A Linux dockerd fetches a foreign layer from the registry like any other, never from its
    URLs, and pushes it as an ordinary layer: the allow list does not matter to it, whether the
    registry holds the blob does (without it, the pull stops at "unknown blob")."""
    from diagnose import http as web
    from diagnose.registryapi import auth_for, base_url, requester

    reg = ctx.registry
    assert reg is not None
    call = requester(ctx)
    headers, auth = auth_for(ctx)
    missing = []
    for layer in foreign:
        digest = str(layer.get("digest"))
        try:
            answer = call("HEAD", f"{base_url(ctx)}/blobs/{digest}", headers=headers, auth=auth)
        except web.RequestException:
            continue  # reachability is the other checks' business
        if answer.status_code == 404:
            missing.append(digest)
    evidence.update(daemon_os="linux", foreign_missing=missing or None)
    if missing:
        return problem(
            Status.FAIL,
            f"{reg.repository} has {len(missing)} foreign layer(s) the registry does not hold "
            f"({missing[0][:19]}…): a Linux docker daemon reads foreign layers from the registry "
            "only, never from their URLs, so its pull stops there (unknown blob)",
            code=Code.BLOB_UNKNOWN,
            faq=["manifest-unknown", "nondistributable-artifacts"],
            remediation=[
                "Push the image again with its foreign layers: from a daemon that lists the "
                "registry in allow-nondistributable-artifacts (Windows), or with a tool that "
                "copies them (`skopeo copy`, `crane copy`).",
            ],
            evidence=evidence,
        )
    return passed(
        f"{len(foreign)} foreign layer(s) in {reg.repository}, all held by the registry: a Linux "
        "docker daemon pulls them from it like any layer and pushes them as ordinary layers "
        "(allow-nondistributable-artifacts does not change that)",
        **evidence,
    )


class DockerCertsCheck(Check):
    id = "docker-certs"
    title = "CA docker trusts for the registry"
    order = 240
    runtimes = ("docker",)
    depends_on = ("tls", "docker-daemon")
    starts_after = ("dns",)
    timeout_s = 10.0
    faq_keys = ("network-connectivity", *CERTIFICATE_FAQ)
    codes = (Code.DOCKER_CA_MISSING,)

    def run(self, ctx: CheckContext) -> Finding:
        import ipaddress

        from diagnose.certadvice import advise
        from diagnose.endpoint import certificate_verdict
        from diagnose.net import registry_addresses

        reg = ctx.registry
        assert reg is not None
        tls = ctx.result("tls")
        if tls is None or ctx.fact(SCHEME) == "http":
            return skipped("no TLS to check (plain HTTP or no tls result)")
        folder = reg.host if reg.effective_port == 443 else f"{reg.host}:{reg.effective_port}"
        certs_dir = ctx.options.host_root / "etc/docker/certs.d" / folder
        evidence: dict[str, Any] = {"certs_dir": f"/etc/docker/certs.d/{folder}"}
        addresses = registry_addresses(ctx)
        loopback = any(ipaddress.ip_address(a.strip("[]")).is_loopback for a in addresses)
        if loopback:
            return skipped(
                "docker always treats 127.0.0.0/8 as an insecure registry: it does "
                "not check this certificate",
                **evidence,
            )
        cas = sorted(certs_dir.glob("*.crt")) if certs_dir.is_dir() else []
        evidence["ca_files"] = [p.name for p in cas] or None
        # the chain judged as dockerd (a Go program) judges it, with dockerd's own trust
        verdict = certificate_verdict(
            ctx,
            reg.host.strip("[]"),
            reg.effective_port,
            ca_files=tuple(str(p) for p in cas),
            timeout=4.0,
            run_bundle=False,
        )
        if verdict is None:
            return skipped("could not complete a handshake to check", **evidence)
        evidence["verify"] = verdict.evidence()
        if not verdict.ok and verdict.reason == "unknown-authority":
            advice = advise(verdict, reg.host.strip("[]"), reg.effective_port)
            return problem(
                Status.FAIL,
                f"docker does not trust {reg.login_server}'s certificate: {advice.why}; "
                f"dockerd looks in the system store and /etc/docker/certs.d/{folder}/",
                code=Code.DOCKER_CA_MISSING,
                faq=["certificate-trust", "network-connectivity", *advice.faq],
                remediation=[
                    f"Copy the registry's CA certificate to "
                    f"/etc/docker/certs.d/{folder}/ca.crt (no restart needed).",
                    "Or add it to the system trust store and restart the daemon.",
                    *advice.steps,
                ],
                evidence=evidence,
            )
        if not verdict.ok:
            return skipped(
                f"docker finds the CA, but refuses the certificate for another reason (the "
                f"tls check says which): {verdict.error}",
                **evidence,
            )
        where = f"/etc/docker/certs.d/{folder}" if cas else "the system trust store"
        return passed(f"docker trusts {reg.login_server}'s certificate ({where})", **evidence)
