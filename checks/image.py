"""Can this machine pull THIS image? The steps a client walks for one image reference, one
check each, so the report stops at the first broken one:

image-reference -> manifest -> platform -> image-blobs, and push-path with --require push.

The manifest is asked for with HEAD first, as containerd does: Docker Hub sends its rate-limit
headers on HEAD, which does not count against the limit. Blob storage redirects are followed by
hand, without the registry's Authorization header.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from diagnose.check import Check
from diagnose.context import CheckContext, Options
from diagnose.models import Finding, ImageRef, Registry, Status, passed, problem, skipped

if TYPE_CHECKING:
    from diagnose.oci import RateLimit, RegistryError

NO_IMAGE = "no image reference given (name one: REGISTRY/REPO:TAG, or --image)"
MAX_BLOBS = 128
MAX_MANIFEST = 4 * 1024 * 1024
PROBE_MIN = 1024 * 1024 + 1  # one byte over nginx's default client_max_body_size
PROBE_MAX = 16 * 1024 * 1024


def _where(url: str) -> str:
    """A URL fit for a report: no query string (storage URLs carry signatures there)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}{p.path}"


def _image(ctx: CheckContext) -> tuple[Registry, ImageRef]:
    reg = ctx.registry
    assert reg is not None and reg.image is not None
    return reg, reg.image


def _anonymous(ctx: CheckContext, headers: dict[str, str], auth: Any) -> bool:
    grant = ctx.kept("grant")
    if getattr(grant, "mode", None) == "anonymous":
        return True
    return not headers and auth is None


def _body(resp: Any) -> bytes:
    try:
        data = b""
        for chunk in resp.iter_content(16 * 1024):
            data += chunk
            if len(data) > MAX_MANIFEST:
                break
        return data
    finally:
        resp.close()


def _messages(errors: list[RegistryError]) -> str:
    from diagnose.oci import describe_errors

    text = describe_errors(errors)
    return f": {text}" if text else ""


def _pushing(options: Options) -> bool:
    return "push" in options.require


def _request_failed(url: str, exc: Exception, what: str) -> Finding:
    import requests

    if isinstance(exc, requests.exceptions.ProxyError):
        from diagnose.proxy import proxy_failure

        return proxy_failure(url, str(exc), 1, {"url": _where(url)})
    return problem(
        Status.FAIL,
        f"{what} failed: {type(exc).__name__}",
        code="REGISTRY_REQUEST_ERROR",
        faq=["network-connectivity", "client-timeout"],
        remediation=[
            "The registry answered /v2/ but not this request: retry, and look at what sits "
            "between this host and the registry (proxy, load balancer)."
        ],
        evidence={"url": _where(url), "error": type(exc).__name__},
    )


def rate_limited(
    rl: RateLimit | None,
    anonymous: bool,
    server: str,
    evidence: dict[str, Any],
    errors: list[RegistryError] | None = None,
) -> Finding:
    """429 / TOOMANYREQUESTS, or a limit already at 0: what the window is and what to do."""
    from diagnose.oci import human_window

    window = human_window(rl.window_s if rl else None)
    who = "anonymous requests from this address" if anonymous else "this account"
    counts = ""
    if rl is not None and rl.limit is not None:
        left = rl.remaining if rl.remaining is not None else 0
        counts = f" ({left} of {rl.limit} pulls left per {window})"
    steps = []
    if anonymous:
        steps.append(
            f"Log in (`docker login {server}`): authenticated pulls have their own, higher limit."
        )
    steps.append(
        "Pull through a mirror or a registry of your own (for Docker Hub images, ACR's "
        "artifact cache or `az acr import`), so that each node does not count against the limit."
    )
    if rl is not None and rl.retry_after_s is not None:
        steps.append(f"Retry after {rl.retry_after_s:.0f} s (the registry's Retry-After).")
    else:
        steps.append(f"Or wait: the limit counts pulls over {window}.")
    return problem(
        Status.FAIL,
        f"the registry refuses more pulls by {who}: rate limited{counts}{_messages(errors or [])}",
        code="RATE_LIMITED",
        faq=["rate-limit"],
        remediation=steps,
        evidence=evidence,
    )


class ImageReferenceCheck(Check):
    id = "image-reference"
    title = "Image reference"
    order = 15
    timeout_s = 2.0
    faq_keys = ("lowercase-login-server", "repository-format")
    codes = ("IMAGE_REFERENCE_ERROR",)

    def skip_reason(self, ctx: CheckContext) -> str | None:
        if ctx.registry is None or ctx.registry.image is None:
            return NO_IMAGE
        return None

    def run(self, ctx: CheckContext) -> Finding:
        reg, ref = _image(ctx)
        evidence = {**ref.to_dict(), "login_server": reg.login_server}
        if ref.problems:
            fixed = f"{ref.domain}/{ref.path.lower()}"
            fixed += f":{ref.tag}" if ref.tag else ""
            fixed += f"@{ref.digest}" if ref.digest else ""
            lower = any("lowercase" in p for p in ref.problems)
            return problem(
                Status.FAIL,
                f"docker, podman and containerd refuse {ref.given}: {'; '.join(ref.problems)}",
                code="IMAGE_REFERENCE_ERROR",
                faq=(
                    ["lowercase-login-server", "repository-format"]
                    if lower
                    else ["repository-format"]
                ),
                remediation=[
                    f"Write the reference as `{fixed}`: repository names are lower case, "
                    "and so should the login server be."
                    if lower
                    else "Correct the reference: a digest is sha256: and 64 lower-case hex digits.",
                ],
                evidence=evidence,
            )
        said = "" if ref.normalized == ref.given else f" (written {ref.given})"
        return passed(f"the clients pull {ref.normalized}{said}", **evidence)


class ManifestCheck(Check):
    id = "manifest"
    title = "Image manifest"
    order = 140
    depends_on = ("image-reference", "authorized-request")
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = (
        "manifest-unknown",
        "repository-format",
        "rate-limit",
        "pull-push-roles",
        "admin-credentials",
        "firewall-propagation",
        "operation-not-allowed",
        "distribution-errors",
        "network-connectivity",
        "client-timeout",
        "proxy",
        "registry-read-only",
        "content-trust",
        "nondistributable-artifacts",
        "body-size-limit",
    )
    codes = (
        "REPOSITORY_NOT_FOUND",
        "IMAGE_TAG_NOT_FOUND",
        "IMAGE_DIGEST_NOT_FOUND",
        "MANIFEST_DIGEST_MISMATCH",
        "IMAGE_UNAUTHORIZED",
        "REGISTRY_DENIED",
        "RATE_LIMITED",
        "RATE_LIMIT_LOW",
        "REGISTRY_ERROR",
        "REGISTRY_REQUEST_ERROR",
        "PROXY_ERROR",
        "MANIFEST_SCHEMA1",
    )

    def skip_reason(self, ctx: CheckContext) -> str | None:
        if ctx.registry is None or ctx.registry.image is None:
            return NO_IMAGE
        return None

    def run(self, ctx: CheckContext) -> Finding:
        import hashlib

        import requests

        from diagnose.oci import (
            INDEX_TYPES,
            MANIFEST_ACCEPT,
            SCHEMA1_TYPES,
            human_window,
            parse_errors,
            rate_limit,
        )
        from diagnose.registryapi import auth_for, base_url, requester

        reg, ref = _image(ctx)
        ctx.result("authorized-request")
        headers, auth = auth_for(ctx)
        anonymous = _anonymous(ctx, headers, auth)
        call = requester(ctx)
        base = base_url(ctx)
        url = f"{base}/manifests/{ref.reference}"
        accept = {**headers, "Accept": MANIFEST_ACCEPT}
        evidence: dict[str, Any] = {
            "reference": ref.normalized,
            "url": _where(url),
            "anonymous": anonymous,
        }
        try:
            head = call("HEAD", url, headers=accept, auth=auth)
            head.close()
        except requests.RequestException as exc:
            return _request_failed(url, exc, f"HEAD {ref.reference}")
        rl = rate_limit(head.headers)
        evidence.update(status=head.status_code, rate_limit=rl.to_dict() if rl else None)
        if head.status_code == 429:
            return rate_limited(rl, anonymous, reg.login_server, evidence)
        if head.status_code != 200:
            return self._not_found_or_refused(ctx, call, url, accept, auth, anonymous, evidence)
        digest = head.headers.get("Docker-Content-Digest")
        evidence.update(
            digest=digest,
            media_type=head.headers.get("Content-Type", "").split(";")[0] or None,
        )
        if rl is not None and rl.remaining == 0:
            return rate_limited(rl, anonymous, reg.login_server, evidence)
        target = ref.digest or digest or ref.reference
        get_url = f"{base}/manifests/{target}"
        try:
            resp = call("GET", get_url, headers=accept, auth=auth, stream=True)
            body = _body(resp)
        except requests.RequestException as exc:
            return _request_failed(get_url, exc, f"GET manifest {target}")
        got_rl = rate_limit(resp.headers)
        if got_rl is not None:
            rl = got_rl
            evidence["rate_limit"] = rl.to_dict()
        if resp.status_code == 429:
            return rate_limited(rl, anonymous, reg.login_server, evidence, parse_errors(body))
        if resp.status_code != 200:
            return self._not_found_or_refused(
                ctx, call, get_url, accept, auth, anonymous, evidence, answer=(resp, body)
            )
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        evidence["content_digest"] = actual
        if ref.digest and ref.digest.startswith("sha256:") and actual != ref.digest:
            return problem(
                Status.FAIL,
                f"the registry's manifest for {ref.digest[:19]}… hashes to {actual[:19]}…: "
                "the clients reject it",
                code="MANIFEST_DIGEST_MISMATCH",
                faq=["distribution-errors"],
                remediation=[
                    "Something between this host and the registry alters the manifest (a "
                    "caching proxy or mirror): pull without it, or report it to its owner."
                ],
                evidence=evidence,
            )
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            return problem(
                Status.FAIL,
                f"the manifest of {ref.normalized} is not a JSON object",
                code="REGISTRY_ERROR",
                faq=["distribution-errors"],
                remediation=[
                    "The registry (or a proxy) returns something that is not a "
                    "manifest: compare with `skopeo inspect --raw`."
                ],
                evidence=evidence,
            )
        media = str(doc.get("mediaType") or media)
        evidence["media_type"] = media
        ctx.keep("image_manifest", doc)
        ctx.keep("image_manifest_digest", actual)
        if media in SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
            return problem(
                Status.WARN,
                f"{ref.normalized} is a schema 1 manifest: containerd 2 and podman no "
                "longer pull it, docker only with a deprecation warning",
                code="MANIFEST_SCHEMA1",
                faq=["distribution-errors"],
                remediation=[
                    "Push the image again with a current docker or buildx: it "
                    "writes a schema 2 / OCI manifest."
                ],
                evidence=evidence,
            )
        kind = "index" if media in INDEX_TYPES or "manifests" in doc else "image manifest"
        left = ""
        if rl is not None and rl.remaining is not None:
            left = (
                f"; {rl.remaining}"
                + (f" of {rl.limit}" if rl.limit is not None else "")
                + f" pulls left per {human_window(rl.window_s)}"
                + (" (anonymous)" if anonymous else "")
            )
        summary = f"{ref.normalized}: {kind} {actual[:19]}…{left}"
        if rl is not None and rl.remaining is not None and rl.limit:
            low = max(1, rl.limit // 10)
            if rl.remaining <= low:
                return problem(
                    Status.WARN,
                    f"{summary}: the rate limit is nearly used up",
                    code="RATE_LIMIT_LOW",
                    faq=["rate-limit"],
                    remediation=[
                        f"Only {rl.remaining} pulls are left in this window: log in, or pull "
                        "through a mirror, before the limit stops pulls."
                    ],
                    evidence=evidence,
                )
        return passed(summary, **evidence)

    # ----------------------------------------------------------------------- failures
    def _not_found_or_refused(
        self,
        ctx: CheckContext,
        call: Any,
        url: str,
        accept: dict[str, str],
        auth: Any,
        anonymous: bool,
        evidence: dict[str, Any],
        answer: tuple[Any, bytes] | None = None,
    ) -> Finding:
        import requests

        from diagnose.oci import RateLimit, parse_errors, rate_limit

        reg, ref = _image(ctx)
        if answer is None:
            # HEAD answers carry no body: ask once more with GET for the registry's own error
            try:
                resp = call("GET", url, headers=accept, auth=auth, stream=True)
                body = _body(resp)
            except requests.RequestException as exc:
                return _request_failed(url, exc, f"GET manifest {ref.reference}")
        else:
            resp, body = answer
        status = resp.status_code
        errors = parse_errors(body)
        codes = {e.code for e in errors}
        rl = rate_limit(resp.headers) or (
            RateLimit(**evidence["rate_limit"]) if evidence.get("rate_limit") else None
        )
        evidence.update(status=status, errors=[e.__dict__ for e in errors])
        if status == 429 or "TOOMANYREQUESTS" in codes:
            return rate_limited(rl, anonymous, reg.login_server, evidence, errors)
        if status == 404:
            return self._missing(ctx, call, accept, auth, codes, errors, evidence)
        if status == 401:
            return self._unauthorized(reg, ref, anonymous, errors, evidence)
        if status == 403 or "DENIED" in codes:
            return denied(
                reg.login_server,
                f"the manifest of {ref.normalized}",
                errors,
                evidence,
                "REGISTRY_DENIED",
            )
        return registry_error(
            f"the manifest request for {ref.normalized}", status, errors, evidence
        )

    def _missing(
        self,
        ctx: CheckContext,
        call: Any,
        accept: dict[str, str],
        auth: Any,
        codes: set[str],
        errors: list[RegistryError],
        evidence: dict[str, Any],
    ) -> Finding:
        import difflib

        import requests

        from diagnose.registryapi import base_url

        reg, ref = _image(ctx)
        repo = reg.repository or ref.path
        tags, repo_known = self._tags(ctx, call, auth)
        if "NAME_UNKNOWN" in codes:
            repo_known = False
        evidence.update(repository_exists=repo_known)
        if tags is not None:
            evidence["tags_seen"] = tags[:20]
        if _pushing(ctx.options):
            return passed(
                f"{ref.normalized} is not in the registry yet: the push will create it",
                **evidence,
            )
        if repo_known is False:
            return problem(
                Status.FAIL,
                f"repository {repo} does not exist on {reg.login_server}{_messages(errors)}",
                code="REPOSITORY_NOT_FOUND",
                faq=["manifest-unknown", "repository-format"],
                remediation=[
                    "Check the repository path: the full path (team/app, not app) exactly as "
                    "it was pushed, in lower case.",
                    "List what the registry holds: `az acr repository list -n <registry>` for "
                    "ACR, `GET /v2/_catalog`, or `skopeo list-tags docker://<registry>/<repo>`.",
                ],
                evidence=evidence,
            )
        if ref.digest:
            current = None
            if ref.tag:
                try:
                    h = call(
                        "HEAD", f"{base_url(ctx)}/manifests/{ref.tag}", headers=accept, auth=auth
                    )
                    h.close()
                    current = (
                        h.headers.get("Docker-Content-Digest") if h.status_code == 200 else None
                    )
                except requests.RequestException:
                    current = None
            evidence["tag_digest_now"] = current
            now = f"; :{ref.tag} now points to {current}" if current else ""
            return problem(
                Status.FAIL,
                f"the registry has no manifest {ref.digest} in {repo}{now}",
                code="IMAGE_DIGEST_NOT_FOUND",
                faq=["manifest-unknown"],
                remediation=[
                    "The pinned digest is not in this repository: it was deleted (untagged "
                    "manifests are purged by retention policies and garbage collection), or it "
                    "was pushed elsewhere.",
                    f"Pin the digest the tag has now{f' ({current})' if current else ''}, or "
                    "push the image again.",
                ],
                evidence=evidence,
            )
        near = difflib.get_close_matches(ref.reference, tags or [], n=3, cutoff=0.5)
        some = near or (tags or [])[:5]
        hint = f"; tags there include {', '.join(some)}" if some else ""
        if tags == []:
            hint = "; the repository has no tags at all"
        return problem(
            Status.FAIL,
            f"tag {ref.reference} does not exist in {repo}{hint}",
            code="IMAGE_TAG_NOT_FOUND",
            faq=["manifest-unknown"],
            remediation=[
                f"Use a tag that exists{f' (closest: {near[0]})' if near else ''}; "
                "`skopeo list-tags docker://<registry>/<repo>` or `az acr repository show-tags` "
                "lists them.",
                "With no tag, the clients pull `latest`, which many repositories do not have.",
            ],
            evidence=evidence,
        )

    def _tags(
        self, ctx: CheckContext, call: Any, auth: Any
    ) -> tuple[list[str] | None, bool | None]:
        """The repository's tags and whether it exists (None: could not tell)."""
        import requests

        from diagnose.registryapi import auth_for, base_url

        kept = ctx.kept("tags")
        if isinstance(kept, list):
            return [str(t) for t in kept], True
        headers, _ = auth_for(ctx)
        try:
            resp = call(
                "GET", f"{base_url(ctx)}/tags/list", headers=headers, auth=auth, stream=True
            )
            body = _body(resp)
        except requests.RequestException:
            return None, None
        if resp.status_code == 200:
            try:
                data = json.loads(body)
                return [str(t) for t in (data.get("tags") or [])][:1000], True
            except (ValueError, AttributeError, RecursionError):
                return None, True
        if resp.status_code == 404:
            return None, False
        return None, None

    def _unauthorized(
        self,
        reg: Registry,
        ref: ImageRef,
        anonymous: bool,
        errors: list[RegistryError],
        evidence: dict[str, Any],
    ) -> Finding:
        server = reg.login_server
        if anonymous:
            summary = (
                f"the registry wants a login to read {ref.normalized}{_messages(errors)}: "
                "either the repository is private, or it does not exist (registries such as "
                "ACR answer 401, not 404, for a repository that is not there)"
            )
            steps = [
                f"Log in: `docker login {server}`"
                + (f" (ACR: `az acr login -n {reg.host.split('.')[0]}`)" if reg.is_acr else "")
                + ", then run this again with the same credential.",
                "If it still says unauthorized once logged in, check that the repository "
                "exists: `az acr repository show -n <registry> --repository "
                f"{ref.path}` (ACR), or the registry's catalog.",
            ]
        else:
            summary = (
                f"the registry refused the credential for {ref.normalized}{_messages(errors)}: "
                "either this identity may not read the repository, or the repository does not "
                "exist (ACR answers 401 for both, so that names cannot be probed)"
            )
            steps = [
                "Tell the two apart: pull a repository you know exists with the same login; if "
                "that works, the name is wrong (list them: `az acr repository list -n "
                "<registry>`, or `GET /v2/_catalog` with a catalog-scoped token).",
                "If the repository exists, give the identity a pull role on it (AcrPull, or a "
                "repository-scoped token with content/read), then log in again.",
            ]
        return problem(
            Status.FAIL,
            summary,
            code="IMAGE_UNAUTHORIZED",
            faq=["pull-push-roles", "admin-credentials", "manifest-unknown"],
            remediation=steps,
            evidence=evidence,
        )


def denied(
    server: str, what: str, errors: list[RegistryError], evidence: dict[str, Any], code: str
) -> Finding:
    """403 / DENIED: a firewall rule, a role, or a lock; the registry's message says which."""
    from diagnose.oci import describe_errors

    text = describe_errors(errors).lower()
    if "client with ip" in text or "firewall" in text or "network" in text:
        faq, steps = (
            ["firewall-propagation", "network-connectivity"],
            [
                "The registry's network rules do not admit this host's address (the message names "
                "it): add it to the registry's firewall, or reach the registry through its private "
                "endpoint. Rule changes take a few minutes to apply.",
            ],
        )
    elif "disallowed" in text or "not allowed" in text or "locked" in text or "quarantine" in text:
        faq, steps = (
            ["operation-not-allowed"],
            [
                "The registry refuses this operation on this repository or image: it may be "
                "locked (`az acr repository show` shows write-enabled / read-enabled), "
                "quarantined, or the registry may be on a retired tier or out of storage.",
            ],
        )
    else:
        faq, steps = (
            ["pull-push-roles", "firewall-propagation"],
            [
                "The identity is known but not allowed: give it a role with the action (AcrPull / "
                "AcrPush, or a repository-scoped token), then log in again; or lift the network "
                "rule that refuses this host.",
            ],
        )
    return problem(
        Status.FAIL,
        f"{what} is refused (403 DENIED){_messages(errors)}",
        code=code,
        faq=faq,
        remediation=steps,
        evidence=evidence,
    )


def registry_error(
    what: str, status: int, errors: list[RegistryError], evidence: dict[str, Any]
) -> Finding:
    """Any other answer: the spec's error code decides the FAQ entry and the remedy."""
    known = [e.known for e in errors if e.known is not None]
    faq: list[str] = []
    steps: list[str] = []
    for k in known:
        faq.extend(f for f in k.faq if f not in faq)
        steps.append(f"{k.code}: {k.remedy}")
    if not faq:
        faq = (
            ["client-timeout", "network-connectivity"] if status >= 500 else ["distribution-errors"]
        )
        steps = [
            "The registry is failing (HTTP 5xx): retry later; for ACR, check the Azure status page."
            if status >= 500
            else "The registry answered in a way the clients cannot use: compare with "
            "`skopeo inspect --debug`."
        ]
    meaning = f" ({known[0].meaning})" if known else ""
    return problem(
        Status.FAIL,
        f"{what} answered HTTP {status}{_messages(errors)}{meaning}",
        code="REGISTRY_ERROR",
        faq=faq,
        remediation=steps,
        evidence=evidence,
    )


class PlatformCheck(Check):
    id = "platform"
    title = "Platform in the image"
    order = 150
    depends_on = ("manifest",)
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = (
        "platform-mismatch",
        "distribution-errors",
        "network-connectivity",
        "client-timeout",
        "proxy",
        "manifest-unknown",
    )
    codes = ("PLATFORM_MISMATCH", "REGISTRY_ERROR", "REGISTRY_REQUEST_ERROR", "PROXY_ERROR")

    def skip_reason(self, ctx: CheckContext) -> str | None:
        if ctx.registry is None or ctx.registry.image is None:
            return NO_IMAGE
        return None

    def run(self, ctx: CheckContext) -> Finding:
        import requests

        from diagnose.oci import (
            MANIFEST_ACCEPT,
            choose,
            host_platform,
            parse_errors,
            parse_platform,
            platforms_in,
        )
        from diagnose.registryapi import auth_for, base_url, requester

        _, ref = _image(ctx)
        ctx.result("manifest")
        doc = ctx.kept("image_manifest")
        if not isinstance(doc, dict):
            return skipped("no manifest: see the manifest check")
        want = parse_platform(ctx.options.platform) if ctx.options.platform else host_platform()
        asked = "asked for with --platform" if ctx.options.platform else "this host's"
        evidence: dict[str, Any] = {"wanted": str(want)}
        headers, auth = auth_for(ctx)
        call = requester(ctx)
        depth = 0
        chosen_digest = ctx.kept("image_manifest_digest")
        while isinstance(doc.get("manifests"), list) and depth < 3:
            entries = doc["manifests"]
            offered = platforms_in(entries)
            evidence["available"] = offered
            entry = choose(entries, want)
            if entry is None:
                return problem(
                    Status.FAIL,
                    f"{ref.normalized} has no image for {want} ({asked} platform); it holds "
                    f"{', '.join(offered) or 'no platform at all'}",
                    code="PLATFORM_MISMATCH",
                    faq=["platform-mismatch"],
                    remediation=[
                        "Pull an image built for this platform: a tag that has it, or build one "
                        f"(`docker buildx build --platform {want},...`) and push the index.",
                        f"To pull another platform on purpose: `docker pull --platform "
                        f"{offered[0] if offered else 'os/arch'} {ref.normalized}` (it will not "
                        "run here without emulation).",
                    ],
                    evidence=evidence,
                )
            digest = str(entry.get("digest"))
            chosen_digest = digest
            url = f"{base_url(ctx)}/manifests/{digest}"
            try:
                resp = call(
                    "GET",
                    url,
                    headers={**headers, "Accept": MANIFEST_ACCEPT},
                    auth=auth,
                    stream=True,
                )
                body = _body(resp)
            except requests.RequestException as exc:
                return _request_failed(url, exc, f"GET manifest {digest[:19]}…")
            if resp.status_code != 200:
                errors = parse_errors(body)
                evidence.update(status=resp.status_code, errors=[e.__dict__ for e in errors])
                return registry_error(
                    f"the {want} manifest {digest[:19]}… listed in the index",
                    resp.status_code,
                    errors,
                    evidence,
                )
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                doc = {}
            if not isinstance(doc, dict):
                doc = {}
            depth += 1
        evidence["manifest_digest"] = chosen_digest
        ctx.keep("platform_manifest", doc)
        if depth:
            return passed(
                f"the index holds {want} ({asked}): {str(chosen_digest)[:19]}…; "
                f"all: {', '.join(evidence.get('available', []))}",
                **evidence,
            )
        config = _config(ctx, doc)
        if config is None:
            return passed(
                "a single image manifest (no index); its platform was not read", **evidence
            )
        have = f"{config.get('os', '?')}/{config.get('architecture', '?')}"
        if config.get("variant"):
            have += f"/{config['variant']}"
        evidence["image_platform"] = have
        if (str(config.get("os")), _arch(config.get("architecture"))) != (
            want.os,
            want.architecture,
        ):
            return problem(
                Status.WARN,
                f"{ref.normalized} is built for {have}, not {want} ({asked} platform): it pulls, "
                "but will not run here without emulation",
                code="PLATFORM_MISMATCH",
                faq=["platform-mismatch"],
                remediation=[
                    f"Build and push the image for {want} (or an index holding both: `docker "
                    f"buildx build --platform {want},{have}`)."
                ],
                evidence=evidence,
            )
        return passed(f"a single image for {have}, as {asked} platform", **evidence)


def _arch(value: Any) -> str:
    from diagnose.oci import _ARCH

    text = str(value or "").lower()
    return _ARCH.get(text, text)


def _config(ctx: CheckContext, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The image config (os, architecture), read once per run; None when it cannot be."""
    desc = doc.get("config")
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        return None
    digest = desc["digest"]

    def read() -> dict[str, Any] | None:
        try:
            status, body, _ = fetch_blob(ctx, digest, limit=MAX_MANIFEST)
        except Exception:
            return None
        if status not in (200, 206) or body is None:
            return None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    result: dict[str, Any] | None = ctx.once(f"config:{digest}", read)
    return result


def fetch_blob(
    ctx: CheckContext, digest: str, *, limit: int = 0
) -> tuple[int, bytes | None, dict[str, Any]]:
    """GET (limit > 0: the body up to limit) or probe (limit 0: one byte) a blob, following a
    storage redirect by hand without the Authorization header. (status, body, facts)."""
    from diagnose.registryapi import auth_for, base_url, requester

    headers, auth = auth_for(ctx)
    call = requester(ctx)
    url = f"{base_url(ctx)}/blobs/{digest}"
    extra = {} if limit else {"Range": "bytes=0-0"}
    facts: dict[str, Any] = {}
    resp = call("GET", url, headers={**headers, **extra}, auth=auth, stream=True)
    for _ in range(3):
        if resp.status_code not in (301, 302, 303, 307, 308) or not resp.headers.get("Location"):
            break
        resp.close()
        target = urljoin(url, resp.headers["Location"])
        host = (urlsplit(target).hostname or "").lower()
        facts.setdefault("redirects", []).append(_where(target))
        facts["storage_host"] = host
        same = host == (urlsplit(url).hostname or "").lower()
        # a new request: the registry's Authorization header never travels to another host
        try:
            resp = call(
                "GET",
                target,
                headers={**(headers if same else {}), **extra},
                auth=auth if same else None,
                stream=True,
            )
        except OSError as exc:  # requests' errors are OSErrors: the storage host failed
            why = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
            facts.update(status=0, storage_error=f"{_where(target)}: {why}")
            return 0, None, facts
        url = target
    facts["status"] = resp.status_code
    if not limit:
        resp.close()
        return resp.status_code, None, facts
    return resp.status_code, _body(resp)[:limit], facts


class ImageBlobsCheck(Check):
    id = "image-blobs"
    title = "Image config and layers reachable"
    order = 160
    depends_on = ("platform",)
    starts_after = ("dns",)
    timeout_s = 30.0
    faq_keys = (
        "manifest-unknown",
        "storage-endpoint",
        "redirect-auth-header",
        "firewall-propagation",
        "network-connectivity",
        "nondistributable-artifacts",
        "proxy",
        "client-timeout",
        "distribution-errors",
        "pull-push-roles",
        "operation-not-allowed",
        "rate-limit",
        "repository-format",
        "registry-read-only",
        "body-size-limit",
        "admin-credentials",
        "content-trust",
    )
    codes = ("BLOB_UNKNOWN", "STORAGE_REDIRECT_ERROR", "BLOB_DOWNLOAD_ERROR", "PROXY_ERROR")

    def skip_reason(self, ctx: CheckContext) -> str | None:
        if ctx.registry is None or ctx.registry.image is None:
            return NO_IMAGE
        return None

    def run(self, ctx: CheckContext) -> Finding:
        from concurrent.futures import ThreadPoolExecutor

        import requests

        from diagnose.registryapi import base_url

        _image(ctx)
        ctx.result("platform")
        doc = ctx.kept("platform_manifest")
        if not isinstance(doc, dict):
            return skipped("no image manifest for this platform: see the platform check")
        blobs: list[dict[str, Any]] = []
        if isinstance(doc.get("config"), dict):
            blobs.append({**doc["config"], "role": "config"})
        foreign = []
        for layer in doc.get("layers") or []:
            if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
                continue
            if layer.get("urls"):
                foreign.append(layer["digest"])
                continue
            blobs.append({**layer, "role": "layer"})
        blobs = [b for b in blobs if isinstance(b.get("digest"), str)][:MAX_BLOBS]
        total = sum(int(b.get("size") or 0) for b in blobs if isinstance(b.get("size"), int))
        evidence: dict[str, Any] = {
            "blobs": len(blobs),
            "layers": sum(1 for b in blobs if b["role"] == "layer"),
            "bytes": total,
            "foreign_layers": foreign,
        }

        def probe(blob: dict[str, Any]) -> tuple[dict[str, Any], Any]:
            if blob["role"] == "config" and _config(ctx, doc) is not None:
                return blob, (200, None, {})  # read already, for the platform: not asked twice
            try:
                return blob, fetch_blob(ctx, str(blob["digest"]))
            except requests.RequestException as exc:
                return blob, exc

        with ThreadPoolExecutor(max_workers=4) as pool:
            outcomes = list(pool.map(probe, blobs))
        storage = sorted(
            {
                o[1][2].get("storage_host")
                for o in outcomes
                if isinstance(o[1], tuple) and o[1][2].get("storage_host")
            }
        )
        evidence["storage_hosts"] = storage
        for blob, outcome in outcomes:
            short = f"{blob['role']} {str(blob['digest'])[:19]}…"
            if isinstance(outcome, Exception):
                facts = {"digest": blob["digest"], "error": type(outcome).__name__}
                if isinstance(outcome, requests.exceptions.ProxyError):
                    from diagnose.proxy import proxy_failure

                    return proxy_failure(
                        f"{base_url(ctx)}/blobs/{blob['digest']}",
                        str(outcome),
                        1,
                        {**evidence, **facts},
                    )
                if storage:
                    return self._storage(
                        storage, f"{short}: {type(outcome).__name__}", {**evidence, **facts}
                    )
                return problem(
                    Status.FAIL,
                    f"{short} could not be fetched: {type(outcome).__name__}",
                    code="BLOB_DOWNLOAD_ERROR",
                    faq=["network-connectivity", "client-timeout"],
                    remediation=[
                        "Retry; check the path to the registry for a proxy or load "
                        "balancer that cuts long transfers."
                    ],
                    evidence={**evidence, **facts},
                )
            status, _, facts = outcome
            if status in (200, 206):
                continue
            evidence.update(failed=blob["digest"], **facts)
            if facts.get("storage_host"):
                what = facts.get("storage_error") or f"storage answered HTTP {status}"
                return self._storage([facts["storage_host"]], f"{short}: {what}", evidence)
            if status == 404:
                return problem(
                    Status.FAIL,
                    f"{short} is not in the registry (404 BLOB_UNKNOWN): the pull stops there",
                    code="BLOB_UNKNOWN",
                    faq=["manifest-unknown"],
                    remediation=[
                        "The manifest refers to a blob the repository no longer holds (a "
                        "partial push, or garbage collection): push the image again."
                    ],
                    evidence=evidence,
                )
            return registry_error(f"{short}", status, [], evidence)
        via = f", through {', '.join(storage)}" if storage else ""
        return passed(
            f"config and {evidence['layers']} layer(s) reachable ({total / 1e6:.1f} MB"
            f"{via})"
            + (
                f"; {len(foreign)} foreign layer(s) left to the nondistributable-artifacts check"
                if foreign
                else ""
            ),
            **evidence,
        )

    def _storage(self, hosts: list[str], what: str, evidence: dict[str, Any]) -> Finding:
        from diagnose.proxy import no_proxy_status

        for h in hosts:
            evidence[f"proxy_for_{h}"] = no_proxy_status(h, 443)
        return problem(
            Status.FAIL,
            f"{what} (layers are served from {', '.join(hosts)})",
            code="STORAGE_REDIRECT_ERROR",
            faq=[
                "storage-endpoint",
                "redirect-auth-header",
                "firewall-propagation",
                "network-connectivity",
            ],
            remediation=[
                f"Layers are downloaded from {', '.join(hosts)}, not from the registry's own "
                "name: this host must resolve and reach it over HTTPS (firewall, proxy, "
                "NO_PROXY, private DNS).",
                "For ACR with dedicated data endpoints or a private endpoint, "
                "<registry>.<region>.data.azurecr.io needs the same DNS and firewall rules as "
                "the login server.",
            ],
            evidence=evidence,
        )


class PushPathCheck(Check):
    id = "push-path"
    title = "Push path (upload started and cancelled)"
    order = 170
    # beside authorized-request, not after it: the upload needs the token, not the tag list
    depends_on = ("scope",)
    starts_after = ("dns",)
    timeout_s = 30.0
    faq_keys = (
        "registry-read-only",
        "operation-not-allowed",
        "pull-push-roles",
        "admin-credentials",
        "firewall-propagation",
        "body-size-limit",
        "storage-quota",
        "rate-limit",
        "distribution-errors",
        "network-connectivity",
        "client-timeout",
        "proxy",
        "manifest-unknown",
        "repository-format",
        "nondistributable-artifacts",
        "content-trust",
    )
    codes = (
        "PUSH_READ_ONLY",
        "PUSH_DENIED",
        "PUSH_UNAUTHORIZED",
        "PUSH_BODY_TOO_LARGE",
        "PUSH_QUOTA",
        "RATE_LIMITED",
        "REGISTRY_ERROR",
        "REGISTRY_REQUEST_ERROR",
        "PROXY_ERROR",
    )

    def skip_reason(self, ctx: CheckContext) -> str | None:
        reg = ctx.registry
        if not _pushing(ctx.options):
            return "checked with --require push (or --push-test)"
        if reg is None or not reg.repository:
            return "needs the repository to push to: an image reference or --repository"
        return None

    def run(self, ctx: CheckContext) -> Finding:
        import requests

        from diagnose.registryapi import auth_for, base_url, requester

        reg = ctx.registry
        assert reg is not None and reg.repository is not None
        ctx.result("scope")
        headers, auth = auth_for(ctx)
        anonymous = _anonymous(ctx, headers, auth)
        call = requester(ctx)
        start = f"{base_url(ctx)}/blobs/uploads/"
        evidence: dict[str, Any] = {"url": _where(start), "repository": reg.repository}
        try:
            resp = call("POST", start, headers=headers, auth=auth, stream=True)
            body = _body(resp)
        except requests.RequestException as exc:
            return _request_failed(start, exc, "starting an upload")
        evidence["start_status"] = resp.status_code
        if resp.status_code != 202 or not resp.headers.get("Location"):
            return self._refused(ctx, "starting an upload", resp, body, anonymous, evidence)
        location = urljoin(start, resp.headers["Location"])
        same = urlsplit(location).hostname == urlsplit(start).hostname
        up_headers = headers if same else {}
        up_auth = auth if same else None
        size, why = self._probe_size(ctx)
        evidence.update(probe_bytes=size, probe_size_from=why)
        outcome: Finding | None = None
        try:
            chunk = call(
                "PATCH",
                location,
                headers={**up_headers, "Content-Type": "application/octet-stream"},
                auth=up_auth,
                data=b"\0" * size,
                stream=True,
            )
            chunk_body = _body(chunk)
            evidence["chunk_status"] = chunk.status_code
            if chunk.status_code == 413:
                outcome = self._too_large(ctx, size, why, evidence)
            elif chunk.status_code not in (202, 204):
                outcome = self._refused(
                    ctx, "sending a chunk", chunk, chunk_body, anonymous, evidence
                )
            elif chunk.headers.get("Location"):
                location = urljoin(location, chunk.headers["Location"])
        except requests.RequestException as exc:
            evidence["chunk_error"] = type(exc).__name__
            outcome = problem(
                Status.FAIL,
                f"sending a {size}-byte chunk failed: {type(exc).__name__} (a proxy or load "
                "balancer that drops large request bodies does this)",
                code="PUSH_BODY_TOO_LARGE",
                faq=["body-size-limit", "network-connectivity"],
                remediation=[
                    "Check the request body limits and timeouts of every proxy "
                    "between this host and the registry."
                ],
                evidence=evidence,
            )
        finally:
            evidence["cancelled"] = self._cancel(call, location, up_headers, up_auth)
        if outcome is not None:
            from dataclasses import replace

            # the finding was made before the upload was cancelled: say that it was
            return replace(
                outcome, evidence={**outcome.evidence, "cancelled": evidence["cancelled"]}
            )
        left = (
            "" if evidence["cancelled"] else "; the registry kept the upload session (it expires)"
        )
        return passed(
            f"an upload to {reg.repository} starts, takes a {size:,}-byte chunk and is "
            f"cancelled: push is possible{left}",
            **evidence,
        )

    def _probe_size(self, ctx: CheckContext) -> tuple[int, str]:
        if ctx.registry is not None and ctx.registry.image is not None:
            ctx.result("platform")  # the image's layers, when the registry holds it already
        doc = ctx.kept("platform_manifest")
        sizes = (
            [
                int(x["size"])
                for x in (doc.get("layers") or [])
                if isinstance(x, dict) and isinstance(x.get("size"), int)
            ]
            if isinstance(doc, dict)
            else []
        )
        if sizes:
            biggest = max(sizes)
            if biggest > PROBE_MAX:
                return PROBE_MAX, f"the largest layer ({biggest:,} bytes), capped"
            return max(biggest, 1), "the image's largest layer"
        return PROBE_MIN, "just over 1 MiB, the most common proxy limit"

    def _cancel(self, call: Any, location: str, headers: dict[str, str], auth: Any) -> bool:
        import requests

        try:
            resp = call("DELETE", location, headers=headers, auth=auth)
            resp.close()
        except requests.RequestException:
            return False
        return bool(resp.status_code in (200, 202, 204))

    def _too_large(
        self, ctx: CheckContext, size: int, why: str, evidence: dict[str, Any]
    ) -> Finding:
        doc = ctx.kept("platform_manifest")
        bigger = []
        if isinstance(doc, dict):
            bigger = [
                f"{str(x['digest'])[:19]}… ({int(x['size']):,} bytes)"
                for x in doc.get("layers") or []
                if isinstance(x, dict)
                and isinstance(x.get("size"), int)
                and x["size"] >= size
                and isinstance(x.get("digest"), str)
            ]
        which = f"; this image's layers at or over it: {', '.join(bigger[:5])}" if bigger else ""
        return problem(
            Status.FAIL,
            f"a {size:,}-byte upload ({why}) is refused with 413 Request Entity Too Large: "
            f"a proxy in front of the registry limits request bodies, so any layer of "
            f"{size:,} bytes or more fails to push{which}",
            code="PUSH_BODY_TOO_LARGE",
            faq=["body-size-limit"],
            remediation=[
                "docker and skopeo send each layer in one request: raise the proxy's body limit "
                "(nginx: `client_max_body_size 0;` in the registry's server block; other "
                "proxies have an equivalent), or push around the proxy.",
            ],
            evidence=evidence,
        )

    def _refused(
        self,
        ctx: CheckContext,
        what: str,
        resp: Any,
        body: bytes,
        anonymous: bool,
        evidence: dict[str, Any],
    ) -> Finding:
        from diagnose.oci import describe_errors, parse_errors, rate_limit

        reg = ctx.registry
        assert reg is not None
        status = resp.status_code
        errors = parse_errors(body)
        codes = {e.code for e in errors}
        text = describe_errors(errors).lower()
        evidence.update(status=status, errors=[e.__dict__ for e in errors])
        if status == 429 or "TOOMANYREQUESTS" in codes:
            return rate_limited(
                rate_limit(resp.headers), anonymous, reg.login_server, evidence, errors
            )
        if status == 413:
            return self._too_large(ctx, 0, "an empty request", evidence)
        if status == 507 or "quota" in text or "storage limit" in text:
            return problem(
                Status.FAIL,
                f"{what} is refused: the registry is out of storage (HTTP {status})"
                f"{_messages(errors)}",
                code="PUSH_QUOTA",
                faq=["storage-quota", "operation-not-allowed"],
                remediation=[
                    "Free space (delete untagged manifests and unused images; usage drops a few "
                    "minutes after layers no other image shares are gone), or raise the "
                    "registry's storage limit (for ACR, a higher service tier).",
                ],
                evidence=evidence,
            )
        if status == 405 or "UNSUPPORTED" in codes:
            return problem(
                Status.FAIL,
                f"{what} is refused with HTTP {status}{_messages(errors)}: the registry is "
                "read-only (maintenance mode) and accepts no pushes",
                code="PUSH_READ_ONLY",
                faq=["registry-read-only", "operation-not-allowed"],
                remediation=[
                    "Wait for the registry's maintenance to end, or ask its owner: a "
                    "distribution registry has `storage.maintenance.readonly.enabled: true`; "
                    "for ACR, `az acr repository show` tells whether writes are disabled "
                    "(`az acr repository update --write-enabled true`).",
                ],
                evidence=evidence,
            )
        if "disallowed" in text or "not allowed" in text:
            return denied(reg.login_server, what, errors, evidence, "PUSH_DENIED")
        if status == 401:
            return problem(
                Status.FAIL,
                f"{what} needs a credential allowed to push (HTTP 401){_messages(errors)}",
                code="PUSH_UNAUTHORIZED",
                faq=["pull-push-roles", "admin-credentials"],
                remediation=[
                    f"Log in with an identity that may push (`docker login {reg.login_server}`)"
                    "; for ACR give it AcrPush, then log out and in again.",
                ],
                evidence=evidence,
            )
        if status == 403 or "DENIED" in codes:
            return denied(reg.login_server, what, errors, evidence, "PUSH_DENIED")
        return registry_error(what, status, errors, evidence)
