"""What podman, CRI-O, skopeo and buildah decide before and during a pull, from their own
configuration (containers/image): the [[registry]] that applies (blocked, insecure, location
rewrite, mirrors), short-name resolution, the signature policy, and which credentials they
find. Each endpoint the pull would go to is walked with the trust those clients have
(/etc/containers/certs.d and /etc/docker/certs.d), not the trust this tool was given."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnose.certadvice import CERTIFICATE_FAQ
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.containersref import NOT_HERE, RUNTIMES, names_of, user_home_of
from diagnose.context import CheckContext
from diagnose.facts import IMAGE_MANIFEST_DIGEST
from diagnose.models import Finding, ImageRef, Issue, Status, combine, passed, skipped
from diagnose.reference import DEFAULT_DOMAIN, LEGACY_DOMAINS, api_host

if TYPE_CHECKING:
    from diagnose.containers import Policy, PullSource, RegistriesConf

if TYPE_CHECKING:
    from diagnose.endpoint import Probe


def _is_short(image: ImageRef | None) -> bool:
    if image is None or image.domain != DEFAULT_DOMAIN:
        return False
    first = image.given.split("/", 1)[0]
    return "/" not in image.given or first not in (DEFAULT_DOMAIN, *LEGACY_DOMAINS)


def _cert_dirs(ctx: CheckContext, endpoint: str) -> tuple[str, ...]:
    """The CA files containers/image adds for host[:port]: certs.d of containers and docker."""
    host = endpoint.split("/", 1)[0]
    root = ctx.options.host_root
    out: list[str] = []
    for base in ("etc/containers/certs.d", "etc/docker/certs.d"):
        d = root / base / host
        try:
            out += sorted(str(p) for p in d.glob("*.crt") if p.is_file())
        except OSError:
            continue
    return tuple(out)


def _walk(ctx: CheckContext, source: PullSource) -> Probe:
    from diagnose.endpoint import probe

    host = api_host(source.endpoint.split("/", 1)[0])
    cas = _cert_dirs(ctx, source.endpoint)
    result = probe(ctx, f"https://{host}/v2/", ca_files=cas, skip_verify=source.insecure)
    if not result.ok and source.insecure and result.step == "tls":
        # an insecure registry is tried over plain HTTP when TLS fails
        plain = probe(ctx, f"http://{host}/v2/")
        if plain.ok:
            return plain
    return result


def _fix_for(result: Probe, source: PullSource, conf_file: str) -> list[str]:
    from diagnose.certadvice import endpoint_advice

    host = source.endpoint.split("/", 1)[0]
    advice = endpoint_advice(result.verdict, host)
    if advice is not None:  # the certificate, or the chain the server sends, is at fault
        return advice.steps
    if result.step == "tls" and "not trusted" in result.detail:
        return [
            f"Put the registry's CA certificate in /etc/containers/certs.d/{host}/ca.crt "
            "(podman, CRI-O and skopeo read it there; the system store works too: "
            "update-ca-certificates).",
        ]
    if result.step == "tls":
        return [
            f"If {host} is meant to be plain HTTP, mark it `insecure = true` in its "
            f"[[registry]] of {conf_file}; otherwise give it a certificate.",
        ]
    if source.mirror:
        return [
            f"Bring the mirror {source.endpoint} back, or remove its [[registry.mirror]] from "
            f"{conf_file} so pulls stop trying it first.",
        ]
    return [f"Make {host} reachable from this host (DNS, firewall, proxy), or correct the name."]


class RegistriesConfCheck(Check):
    id = "registries-conf"
    title = "registries.conf (podman, CRI-O, skopeo)"
    order = 250
    runtimes = RUNTIMES
    depends_on = ("container-runtimes",)
    timeout_s = 20.0
    faq_keys = (
        "registries-conf",
        "short-name-resolution",
        "insecure-registry",
        *CERTIFICATE_FAQ,
    )
    codes = (
        Code.CONTAINERS_CONFIG_ERROR,
        Code.REGISTRY_BLOCKED,
        Code.SHORT_NAME_ENFORCING,
        Code.MIRROR_UNREACHABLE,
        Code.RUNTIME_ENDPOINT_ERROR,
    )

    def run(self, ctx: CheckContext) -> Finding:
        if not ctx.in_play(*RUNTIMES):
            return skipped(NOT_HERE)
        from diagnose.containers import (
            find_registry,
            line_of,
            load_crio_conf,
            load_registries_conf,
            pull_sources,
        )

        root = ctx.options.host_root
        conf = load_registries_conf(root, user_home_of(ctx))
        full, _name, image = names_of(ctx)
        evidence: dict[str, Any] = {"files": conf.files, "reference": full}
        issues: list[Issue] = [
            Issue(
                Status.FAIL,
                Code.CONTAINERS_CONFIG_ERROR,
                ["registries-conf"],
                err,
                ["Fix that file: podman, CRI-O and skopeo refuse to pull while it does not parse."],
            )
            for err in conf.errors + (load_crio_conf(root).errors if ctx.in_play("crio") else [])
        ]
        if issues:
            return combine(issues, evidence)
        candidates = [full]
        if _is_short(image):
            assert image is not None
            candidates, issue = self._short_name(conf, image, evidence)
            if issue is not None:
                return combine([issue], evidence)
        by_digest = image is not None and image.digest is not None
        tried: list[dict[str, Any]] = []
        for cand in candidates:
            entry = find_registry(conf, cand)
            if entry is not None:
                evidence.setdefault("registry_entries", []).append(
                    {
                        "prefix": entry.prefix,
                        "location": entry.location,
                        "insecure": entry.insecure,
                        "blocked": entry.blocked,
                        "mirrors": [m.location for m in entry.mirrors],
                        "file": entry.source,
                        "line": line_of(Path(entry.source), f'"{entry.prefix}"'),
                    }
                )
            if entry is not None and entry.blocked:
                line = line_of(Path(entry.source), f'"{entry.prefix}"')
                where = f"{entry.source}" + (f" line {line}" if line else "")
                issues.append(
                    Issue(
                        Status.FAIL,
                        Code.REGISTRY_BLOCKED,
                        ["registries-conf"],
                        f"{cand} is blocked by the [[registry]] with prefix {entry.prefix!r} in "
                        f"{where} (blocked = true): podman and CRI-O refuse to pull it",
                        [
                            f"Set `blocked = false` (or remove the entry) in {where}, if this "
                            "registry is meant to be used here.",
                        ],
                    )
                )
                continue
            sources = pull_sources(entry, cand, by_digest)
            conf_file = entry.source if entry is not None else "/etc/containers/registries.conf"
            probes: list[Probe] = []
            for source in sources:
                result = _walk(ctx, source)
                probes.append(result)
                tried.append(
                    {**result.to_dict(), "mirror": source.mirror, "pull": source.reference}
                )
                if result.ok:
                    failed = [t for t in tried if not t["ok"]]
                    evidence["tried"] = tried
                    evidence["pulls_from"] = source.reference
                    if failed:
                        first = failed[0]
                        issues.append(
                            Issue(
                                Status.WARN,
                                Code.MIRROR_UNREACHABLE,
                                ["registries-conf"],
                                f"the pull works from {source.reference}, after "
                                f"{len(failed)} failed attempt(s) first: {first['detail']}",
                                [
                                    "Bring the mirror "
                                    f"{str(first['url']).split('/')[2]} back, or remove "
                                    f"it from {conf_file}: "
                                    "every pull tries it first and waits for it.",
                                ],
                            )
                        )
                    if source.insecure:
                        evidence["insecure"] = True
                    return (
                        combine(issues, evidence)
                        if issues
                        else passed(
                            f"podman and CRI-O pull {cand} from {source.reference}"
                            + (" (insecure = true: TLS not verified)" if source.insecure else "")
                            + (
                                f" ({len(conf.files)} configuration file(s) read)"
                                if conf.files
                                else ""
                            ),
                            **evidence,
                        )
                    )
            if probes:
                from diagnose.certadvice import endpoint_advice

                last_source, last = sources[-1], probes[-1]
                advice = endpoint_advice(last.verdict, last.url)
                cert_faq = advice.faq if advice else ["certificate-trust"]
                issues.append(
                    Issue(
                        Status.FAIL,
                        Code.RUNTIME_ENDPOINT_ERROR,
                        ["registries-conf", *cert_faq, "network-connectivity"],
                        "podman and CRI-O cannot pull "
                        f"{cand}: " + "; ".join(str(t["detail"]) for t in tried),
                        _fix_for(last, last_source, conf_file),
                    )
                )
        evidence["tried"] = tried
        if issues:
            return combine(issues, evidence)
        return passed("no registries.conf entry applies", **evidence)

    def _short_name(
        self, conf: RegistriesConf, image: ImageRef, evidence: dict[str, Any]
    ) -> tuple[list[str], Issue | None]:
        """The references a short name becomes, as containers/image resolves it, or the issue
        that stops it."""
        from diagnose.containers import line_of

        short = image.given.split("@")[0]
        name = short.rsplit(":", 1)[0] if ":" in short.split("/")[-1] else short
        suffix = f"@{image.digest}" if image.digest else f":{image.tag or 'latest'}"
        evidence["short_name"] = name
        alias = conf.aliases.get(name)
        if alias is not None:
            evidence["alias"] = {"value": alias[0], "file": alias[1]}
            return [alias[0] + suffix], None
        mode = conf.short_name_mode or "permissive"
        evidence["short_name_mode"] = mode
        evidence["unqualified_search_registries"] = conf.search
        fq = f"docker.io/{image.path}{suffix}"
        if not conf.search:
            where = conf.search_source or (conf.files[0] if conf.files else "registries.conf")
            return [], Issue(
                Status.FAIL,
                Code.SHORT_NAME_ENFORCING,
                ["short-name-resolution"],
                f"{name!r} is a short name, no alias resolves it and no "
                f"unqualified-search-registries are set ({where}): podman cannot pull it",
                [f"Use the fully qualified name, e.g. {fq}.", self._alias_step(name, image)],
            )
        if mode == "enforcing" and len(conf.search) > 1 and not os.isatty(0):
            source = conf.short_name_source
            line = line_of(Path(source), "short-name-mode")
            return [], Issue(
                Status.FAIL,
                Code.SHORT_NAME_ENFORCING,
                ["short-name-resolution"],
                f"{name!r} is a short name and short-name-mode is enforcing ({source}"
                + (f" line {line}" if line else "")
                + f") with {len(conf.search)} search registries and no TTY to ask on: the "
                "clients stop with 'short-name resolution enforced but cannot prompt "
                "without a TTY'",
                [f"Use the fully qualified name, e.g. {fq}.", self._alias_step(name, image)],
            )
        base = image.path[len("library/") :] if name.count("/") == 0 else image.path
        return [f"{reg}/{base}{suffix}" for reg in conf.search], None

    @staticmethod
    def _alias_step(name: str, image: ImageRef) -> str:
        return (
            "Or add an alias in /etc/containers/registries.conf.d/000-aliases.conf: "
            f'`[aliases]` then `"{name}" = "docker.io/{image.path}"` (or the registry it '
            "really comes from)."
        )


def _signature_present(
    ctx: CheckContext, name: str, digest: str | None, lookaside: str | None
) -> tuple[bool | None, str]:
    """(found?, where looked) for simple-signing signatures of name@digest."""
    from diagnose.containers import DEFAULT_LOOKASIDE

    if digest is None:
        return None, "the manifest digest is unknown"
    base = lookaside or "file:///" + DEFAULT_LOOKASIDE
    repo = name.split("/", 1)[1] if "/" in name else name
    leaf = f"{repo}@{digest.replace(':', '=')}/signature-1"
    if base.startswith("file://"):
        path = Path(base[len("file://") :].lstrip("/"))
        here = ctx.options.host_root / path / leaf
        return here.is_file(), str(Path("/") / path / leaf)
    url = base.rstrip("/") + "/" + leaf
    from diagnose.registryapi import requester
    from diagnose.wire import how

    try:
        r = requester(ctx)("GET", url)  # bounded in time and size
        return r.status_code == 200, url
    except Exception as exc:
        return False, f"{url} ({how(exc, url)})"


def _attachment_present(
    ctx: CheckContext, name: str, digest: str | None
) -> tuple[bool | None, str]:
    """Whether the registry holds a sigstore attachment (tag sha256-<hex>.sig) for digest."""
    from diagnose.registryapi import auth_for

    if digest is None:
        return None, "the manifest digest is unknown"
    reg = ctx.registry
    assert reg is not None
    repo = name.split("/", 1)[1]
    tag = digest.replace(":", "-") + ".sig"
    scheme = "http" if reg.scheme == "http" else "https"
    url = f"{scheme}://{reg.login_server}/v2/{repo}/manifests/{tag}"
    headers, auth = auth_for(ctx)
    from diagnose.registryapi import requester
    from diagnose.wire import how

    try:
        r = requester(ctx)(
            "HEAD",
            url,
            headers={**headers, "Accept": "application/vnd.oci.image.manifest.v1+json"},
            auth=auth,
        )
        return r.status_code == 200, f"tag {tag} in {repo}"
    except Exception as exc:
        return False, f"tag {tag} in {repo} ({how(exc, url)})"


class SignaturePolicyCheck(Check):
    id = "signature-policy"
    title = "Signature policy (policy.json)"
    order = 255
    runtimes = RUNTIMES
    depends_on = ("container-runtimes", "manifest")
    timeout_s = 15.0
    faq_keys = ("signature-policy", "signature-verification")
    codes = (
        Code.POLICY_ERROR,
        Code.POLICY_REJECT,
        Code.SIGNATURE_KEY_MISSING,
        Code.SIGNATURE_MISSING,
    )

    def run(self, ctx: CheckContext) -> Finding:
        if not ctx.in_play(*RUNTIMES):
            return skipped(NOT_HERE)
        from diagnose.containers import SYSTEM_POLICY, load_crio_conf, load_policy, load_policy_file

        root, home = ctx.options.host_root, user_home_of(ctx)
        policies: dict[str, list[str]] = {}
        if ctx.in_play("podman"):
            policies.setdefault(load_policy(root, home).path, []).append("podman")
        if ctx.in_play("crio"):
            crio = load_crio_conf(root)
            path = crio.signature_policy or "/" + SYSTEM_POLICY
            policies.setdefault(str(root / path.lstrip("/")), []).append("CRI-O")
        full, _name, _image = names_of(ctx)
        evidence: dict[str, Any] = {"reference": full, "policies": {}}
        issues: list[Issue] = []
        accepted: list[str] = []
        for path, clients in policies.items():
            found, facts = self._evaluate(ctx, load_policy_file(Path(path)), " and ".join(clients))
            evidence["policies"][path] = facts
            if isinstance(found, list):
                issues += found
            else:
                accepted.append(found)
        evidence["file"] = next(iter(policies))
        evidence.update(next(iter(evidence["policies"].values())))
        if issues:
            return combine(issues, evidence)
        return passed("; ".join(accepted), **evidence)

    def _evaluate(
        self, ctx: CheckContext, policy: Policy, clients: str
    ) -> tuple[list[Issue] | str, dict[str, Any]]:
        """The issues one policy file raises for the image, or what it accepts it by."""
        from diagnose.containers import line_of, requirement_for

        full, name, image = names_of(ctx)
        evidence: dict[str, Any] = {"file": policy.path, "clients": clients}
        if not policy.exists:
            return [
                Issue(
                    Status.FAIL,
                    Code.POLICY_ERROR,
                    ["signature-policy"],
                    f"{policy.path} does not exist: {clients} refuse to pull without a "
                    "signature policy",
                    [
                        "Install the default policy: "
                        '`{"default": [{"type": "insecureAcceptAnything"}]}` '
                        f"in {policy.path} (Debian and Fedora ship it in containers-common).",
                    ],
                )
            ], evidence
        if policy.error:
            return [
                Issue(
                    Status.FAIL,
                    Code.POLICY_ERROR,
                    ["signature-policy"],
                    f"{policy.path} {policy.error}",
                    ["Fix the file; `podman image trust show` reads it as the clients do."],
                )
            ], evidence
        req = requirement_for(policy, name, full if image is not None else "")
        types = [str(r.get("type")) for r in req.requirements]
        scope = req.scope or "(the docker transport's default)"
        evidence.update(scope=req.scope, requirements=types)
        line = (
            line_of(Path(policy.path), f'"{req.scope}"')
            if req.scope not in ("", "default")
            else None
        )
        where = f"{policy.path}" + (f" line {line}" if line else "")
        accept = f'"transports": {{"docker": {{"{name}": [{{"type": "insecureAcceptAnything"}}]}}}}'
        issues: list[Issue] = []
        if not req.requirements:
            issues.append(
                Issue(
                    Status.FAIL,
                    Code.POLICY_ERROR,
                    ["signature-policy"],
                    f"the requirement list for {scope} in {where} is empty: the clients refuse it",
                    [f"Give it at least one requirement, e.g. {accept}."],
                )
            )
        for r in req.requirements:
            kind = r.get("type")
            if kind == "reject":
                issues.append(
                    Issue(
                        Status.FAIL,
                        Code.POLICY_REJECT,
                        ["signature-policy"],
                        f"policy.json rejects {full}: scope {scope} in {where} is "
                        '[{"type": "reject"}] (the clients say "Running image … is rejected by '
                        'policy")',
                        [
                            f"If this image is meant to run here, add a more specific scope in "
                            f"{policy.path}: {accept}, or a signedBy requirement for its key.",
                        ],
                    )
                )
            elif kind in ("signedBy", "sigstoreSigned"):
                issues += self._signature(ctx, r, name, where, scope, image)
        if issues:
            return issues, evidence
        return (
            f"policy.json accepts {full} for {clients} ({', '.join(types)} for {scope})",
            evidence,
        )

    def _digest(self, ctx: CheckContext) -> str | None:
        ctx.result("manifest")
        return ctx.fact(IMAGE_MANIFEST_DIGEST)

    def _signature(
        self,
        ctx: CheckContext,
        r: dict[str, Any],
        name: str,
        where: str,
        scope: str,
        image: ImageRef | None,
    ) -> list[Issue]:
        """A signedBy or sigstoreSigned requirement: a signature where the clients look (the
        lookaside, then sigstore attachments), then its key on this host. The clients read the
        key only for a signature they found: with none, that is what they stop on."""
        from diagnose.containers import lookaside_for

        sigstore = r.get("type") == "sigstoreSigned"
        paths = [r["keyPath"]] if isinstance(r.get("keyPath"), str) else []
        if not sigstore and isinstance(r.get("keyPaths"), list):
            paths += [p for p in r["keyPaths"] if isinstance(p, str)]
        inline = any(isinstance(r.get(k), str | list) for k in ("keyData", "keyDatas"))
        root = ctx.options.host_root
        missing = [p for p in paths if not (root / p.lstrip("/")).is_file()]
        install = (
            f"Install the public key at {', '.join(missing) or 'the keyPath'} (the image "
            f"publisher's {'cosign' if sigstore else 'GPG'} public key)."
        )
        key_there = not missing and bool(paths or inline or sigstore)
        no_key = (
            []
            if key_there
            else [
                Issue(
                    Status.FAIL,
                    Code.SIGNATURE_KEY_MISSING,
                    ["signature-policy"],
                    f"the {r.get('type')} requirement for {scope} in {where} names the key "
                    f"{', '.join(missing) or '(none)'}, which is not on this host: every pull "
                    "in that scope fails",
                    [install],
                )
            ]
        )
        if image is None:
            return no_key
        digest = self._digest(ctx)
        lookaside, attachments, src = lookaside_for(root, user_home_of(ctx), name)
        found: bool | None = False
        looked = "nowhere: use-sigstore-attachments is not true in registries.d"
        if not sigstore:
            found, looked = _signature_present(ctx, name, digest, lookaside)
            looked += f", from {src}" if src else "; no registries.d entry names a lookaside"
        if not found and attachments:
            found, looked = _attachment_present(ctx, name, digest)
        if found is None or found:
            return no_key
        steps = (
            [
                "Sign the image (`cosign sign` or `podman push --sign-by-sigstore`), and set "
                "`use-sigstore-attachments: true` for the registry in "
                "/etc/containers/registries.d/*.yaml.",
            ]
            if sigstore
            else [
                "Sign the image with the key the policy names (`skopeo copy --sign-by KEYID` "
                "or `podman push --sign-by KEYID`) and publish the signature where "
                "registries.d says (lookaside).",
            ]
        )
        steps.append(
            "Or, if this scope is meant to take unsigned images, give it "
            f'[{{"type": "insecureAcceptAnything"}}] in {where}.'
        )
        if no_key:
            steps.insert(1, f"The key is missing too: {install}")
        return [
            Issue(
                Status.FAIL,
                Code.SIGNATURE_MISSING,
                ["signature-policy"],
                f"{where} requires a signature for {scope} ({r.get('type')}), and none exists "
                f"for this image (looked at {looked}): the clients stop with 'A signature was "
                "required, but no signature exists'"
                + (
                    f"; its key {', '.join(missing) or '(none)'} is not here either"
                    if no_key
                    else ""
                ),
                steps,
            )
        ]
