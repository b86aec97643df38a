"""Kubernetes nodes: the kubelet's image credential providers (CredentialProviderConfig), which
decide the credential for an image before any pull secret does, with the ACR provider
recognised. The config comes from --image-credential-provider-config, the running kubelet's
command line, or the usual places on the host."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.dockerhost import flag_value, read_text
from diagnose.models import Finding, Issue, Status, combine, passed, skipped

CONFIG_PLACES = (
    "var/lib/kubelet/credential-provider-config.yaml",
    "etc/kubernetes/credential-provider-config.yaml",
    "etc/kubernetes/image-credential-provider-config.yaml",
)
BIN_DIRS = ("var/lib/kubelet/credential-provider", "usr/local/bin", "opt/cni/bin")
ACR_PROVIDER = "acr-credential-provider"


def _kubelet_flags(table: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    for proc in table:
        if proc["name"] == "kubelet":
            args = proc["cmdline"]
            return (
                flag_value(args, "--image-credential-provider-config"),
                flag_value(args, "--image-credential-provider-bin-dir"),
            )
    return None, None


def image_matches(pattern: str, image: str) -> bool:
    """The kubelet's matchImages rule: same number of host labels, each globbed, the same port,
    and the pattern's path a prefix of the image's."""
    try:
        glob = urlsplit(pattern if "://" in pattern else "https://" + pattern)
        target = urlsplit("https://" + image)
        gport, tport = glob.port, target.port
    except ValueError:
        return False
    ghost, thost = (glob.hostname or "").split("."), (target.hostname or "").split(".")
    if gport != tport or len(ghost) != len(thost):
        return False
    if not target.path.startswith(glob.path):
        return False
    return all(fnmatch.fnmatchcase(t, g) for g, t in zip(ghost, thost, strict=True))


class CredentialProviderCheck(Check):
    id = "credential-provider"
    title = "Kubelet image credential providers"
    order = 265
    timeout_s = 5.0
    faq_keys = ("kubernetes-image-pull", "runtime-credentials")
    codes = (Code.KUBELET_PROVIDER_CONFIG_ERROR, Code.KUBELET_PROVIDER_MISSING)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.yamlish import YamlError, loads

        root = ctx.options.host_root
        flag_config, flag_bin = _kubelet_flags(ctx.processes())
        path: Path | None = ctx.options.provider_config
        if path is None and flag_config:
            path = root / flag_config.lstrip("/")
        if path is None:
            path = next((root / p for p in CONFIG_PLACES if (root / p).is_file()), None)
        if path is None:
            return skipped("no kubelet credential provider configuration on this host")
        reg = ctx.registry
        assert reg is not None
        image = reg.image.normalized if reg.image is not None else reg.login_server
        evidence: dict[str, Any] = {"config": str(path), "image": image}
        error: str | None
        try:
            doc = loads(read_text(path) or "")
        except YamlError as exc:
            doc, error = None, str(exc)
        else:
            error = None if isinstance(doc, dict) else "the top level must be a mapping"
        if (
            error is None
            and isinstance(doc, dict)
            and doc.get("kind") != "CredentialProviderConfig"
        ):
            error = f"kind is {doc.get('kind')!r}, not CredentialProviderConfig"
        providers = doc.get("providers") if isinstance(doc, dict) else None
        if error is None and not isinstance(providers, list):
            error = "it has no providers list"
        if error is not None:
            return combine(
                [
                    Issue(
                        Status.FAIL,
                        Code.KUBELET_PROVIDER_CONFIG_ERROR,
                        ["kubernetes-image-pull"],
                        f"{path}: {error}: the kubelet does not start with it",
                        ["Fix the file (kubelet.config.k8s.io/v1 CredentialProviderConfig)."],
                    )
                ],
                evidence,
            )
        assert isinstance(providers, list)
        matching = []
        for p in providers:
            if not isinstance(p, dict):
                continue
            pats = [m for m in p.get("matchImages") or [] if isinstance(m, str)]
            if any(image_matches(m, image) for m in pats):
                matching.append(p)
        evidence["providers"] = [str(p.get("name")) for p in providers if isinstance(p, dict)]
        evidence["matching"] = [str(p.get("name")) for p in matching]
        if not matching:
            return passed(
                f"no credential provider in {path} matches {image}: the kubelet uses the "
                "pod's imagePullSecrets (or none)",
                **evidence,
            )
        bin_dir = ctx.options.provider_bin_dir or (
            root / flag_bin.lstrip("/") if flag_bin else None
        )
        issues: list[Issue] = []
        for p in matching:
            name = str(p.get("name"))
            dirs = [bin_dir] if bin_dir else [root / d for d in BIN_DIRS]
            if not any((d / name).is_file() for d in dirs):
                issues.append(
                    Issue(
                        Status.FAIL,
                        Code.KUBELET_PROVIDER_MISSING,
                        ["kubernetes-image-pull", "runtime-credentials"],
                        f"the provider {name!r} matches {image} in {path}, but its binary is not "
                        f"in {', '.join(str(d) for d in dirs)}: the kubelet gets no credential "
                        "from it",
                        [
                            f"Install {name} into the --image-credential-provider-bin-dir of "
                            "the kubelet, or remove the provider from the config.",
                        ],
                    )
                )
            if name == ACR_PROVIDER:
                args = [a for a in p.get("args") or [] if isinstance(a, str)]
                missing = [a for a in args if a.startswith("/") and not (root / a[1:]).is_file()]
                evidence["acr"] = {"args": args, "missing": missing}
                if missing:
                    issues.append(
                        Issue(
                            Status.FAIL,
                            Code.KUBELET_PROVIDER_MISSING,
                            ["kubernetes-image-pull", "pull-push-roles"],
                            f"the ACR credential provider reads {', '.join(missing)}, which is "
                            "not on this node: it cannot get a token for the kubelet identity",
                            [
                                "Restore the cloud provider config (azure.json) the provider "
                                "names, or attach the registry (`az aks update --attach-acr`).",
                            ],
                        )
                    )
        if issues:
            return combine(issues, evidence)
        names = ", ".join(evidence["matching"])
        acr = (
            " (the ACR provider: the kubelet identity needs AcrPull)"
            if any(str(p.get("name")) == ACR_PROVIDER for p in matching)
            else ""
        )
        return passed(f"the kubelet gets credentials for {image} from {names}{acr}", **evidence)
