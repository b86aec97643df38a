"""Can this machine pull THIS image? The steps a client walks for one image reference, one
check each, so the report stops at the first broken one:

image-reference -> manifest -> platform (checks/platform.py) -> image-blobs (checks/blobs.py),
and push-path (checks/push.py) with --require push.

The manifest is asked for with HEAD first, as containerd does: Docker Hub sends its rate-limit
headers on HEAD, which does not count against the limit.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext, image_of, pushing
from diagnose.facts import IMAGE_MANIFEST, IMAGE_MANIFEST_DIGEST, TAGS
from diagnose.findings import (
    REQUEST_CODES,
    denied,
    messages,
    rate_limited,
    registry_error,
    request_failed,
)
from diagnose.models import Finding, ImageRef, Registry, Status, passed, problem
from diagnose.secrets import safe_url

if TYPE_CHECKING:
    from diagnose.oci import RateLimit, RegistryError


def _pulls_left(
    summary: str, rl: RateLimit | None, anonymous: bool, evidence: dict[str, Any]
) -> Finding:
    """A readable manifest: the pulls left in the window, and a warning when few are."""
    from diagnose.oci import human_window

    if rl is not None and rl.remaining is not None:
        summary += (
            f"; {rl.remaining}"
            + (f" of {rl.limit}" if rl.limit is not None else "")
            + f" pulls left per {human_window(rl.window_s)}"
            + (" (anonymous)" if anonymous else "")
        )
    if rl is not None and rl.remaining is not None and rl.limit:
        low = max(1, rl.limit // 10)
        if rl.remaining <= low:
            return problem(
                Status.WARN,
                f"{summary}: the rate limit is nearly used up",
                code=Code.RATE_LIMIT_LOW,
                faq=["rate-limit"],
                remediation=[
                    f"Only {rl.remaining} pulls are left in this window: log in, or pull "
                    "through a mirror, before the limit stops pulls."
                ],
                evidence=evidence,
            )
    return passed(summary, **evidence)


def manifest_bytes_problem(
    ref: ImageRef,
    body: bytes,
    actual: str,
    head_digest: str | None,
    headers: Any,
    evidence: dict[str, Any],
) -> Finding | None:
    """The manifest's bytes against what was said of them: at most the 4 MiB the clients
    read, and hashing to the digest pinned in the reference and to the one the registry
    stated (Docker-Content-Digest, on the HEAD and on the GET)."""
    from diagnose.findings import manifest_digest_mismatch, manifest_too_large
    from diagnose.registryapi import MAX_MANIFEST

    what = f"the manifest of {ref.normalized}"
    if len(body) > MAX_MANIFEST:
        return manifest_too_large(what, len(body), MAX_MANIFEST, evidence)
    if ref.digest and ref.digest.startswith("sha256:") and ref.digest != actual:
        said = "the digest pinned in the reference"
        return manifest_digest_mismatch(what, ref.digest, actual, said, evidence)
    # containerd resolves a tag to the digest the registry states, then checks the bytes
    # against it; docker's own image store and containers/image take the bytes by tag
    for digest in (headers.get("Docker-Content-Digest"), head_digest):
        if isinstance(digest, str) and digest.startswith("sha256:") and digest != actual:
            return manifest_digest_mismatch(
                what,
                digest,
                actual,
                "the registry's Docker-Content-Digest",
                evidence,
                "containerd (so the kubelet, nerdctl and docker with the containerd image "
                "store) refuses it (`unexpected commit digest`); docker's classic image "
                "store and podman/skopeo take the bytes by tag",
            )
    return None


class ImageReferenceCheck(Check):
    id = "image-reference"
    title = "Image reference"
    order = 15
    needs_image = True  # skipped unless an image is named
    timeout_s = 2.0
    faq_keys = ("lowercase-login-server", "repository-format")
    codes = (Code.IMAGE_REFERENCE_ERROR,)

    def run(self, ctx: CheckContext) -> Finding:
        reg, ref = image_of(ctx)
        evidence = {**ref.to_dict(), "login_server": reg.login_server}
        if ref.problems:
            fixed = f"{ref.domain}/{ref.path.lower()}"
            fixed += f":{ref.tag}" if ref.tag else ""
            fixed += f"@{ref.digest}" if ref.digest else ""
            lower = any("lowercase" in p for p in ref.problems)
            return problem(
                Status.FAIL,
                f"docker, podman and containerd refuse {ref.given}: {'; '.join(ref.problems)}",
                code=Code.IMAGE_REFERENCE_ERROR,
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
    needs_image = True  # skipped unless an image is named
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
        "transfer-cut-short",
        "blob-digest-mismatch",
    )
    codes = (
        Code.REPOSITORY_NOT_FOUND,
        Code.IMAGE_TAG_NOT_FOUND,
        Code.IMAGE_DIGEST_NOT_FOUND,
        Code.MANIFEST_DIGEST_MISMATCH,
        Code.IMAGE_UNAUTHORIZED,
        Code.REGISTRY_DENIED,
        Code.RATE_LIMITED,
        Code.RATE_LIMIT_LOW,
        Code.REGISTRY_ERROR,
        Code.MANIFEST_SCHEMA1,
        Code.MANIFEST_TOO_LARGE,
        *REQUEST_CODES,
    )

    def run(self, ctx: CheckContext) -> Finding:
        import hashlib

        from diagnose import http as web
        from diagnose.oci import (
            INDEX_TYPES,
            MANIFEST_ACCEPT,
            SCHEMA1_TYPES,
            parse_errors,
            rate_limit,
        )
        from diagnose.registryapi import (
            auth_for,
            base_url,
            follow,
            is_anonymous,
            json_object,
            read_body,
            requester,
        )

        reg, ref = image_of(ctx)
        ctx.result("authorized-request")
        headers, auth = auth_for(ctx)
        anonymous = is_anonymous(ctx, headers, auth)
        call = requester(ctx)
        base = base_url(ctx)
        url = f"{base}/manifests/{ref.reference}"
        accept = {**headers, "Accept": MANIFEST_ACCEPT}
        evidence: dict[str, Any] = {
            "reference": ref.normalized,
            "url": safe_url(url),
            "anonymous": anonymous,
        }
        t0 = time.monotonic()
        try:
            head, _ = follow(call, "HEAD", url, headers=accept, auth=auth)
            head.close()
        except web.RequestException as exc:
            return request_failed(ctx.options.environ, url, exc, f"HEAD {ref.reference}")
        evidence["head_ms"] = round((time.monotonic() - t0) * 1000, 2)
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
        # repeated probes (serve, watch): where the registry counts pulls, the HEAD is all
        if rl is not None and not ctx.options.spend_pulls:
            evidence["manifest_get"] = "not made: the registry counts a GET as a pull"
            summary = f"{ref.normalized}: the manifest answers HEAD (not fetched: a GET is a pull)"
            return _pulls_left(summary, rl, anonymous, evidence)
        target = ref.digest or digest or ref.reference
        get_url = f"{base}/manifests/{target}"
        t0 = time.monotonic()
        try:
            resp, _ = follow(call, "GET", get_url, headers=accept, auth=auth, stream=True)
            body = read_body(resp)
        except web.RequestException as exc:
            return request_failed(ctx.options.environ, get_url, exc, f"GET manifest {target}")
        evidence["get_ms"] = round((time.monotonic() - t0) * 1000, 2)
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
        wrong = manifest_bytes_problem(ref, body, actual, digest, resp.headers, evidence)
        if wrong is not None:
            return wrong
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        doc, why = json_object(body)
        if doc is None:
            return problem(
                Status.FAIL,
                f"the manifest of {ref.normalized} {why}",
                code=Code.REGISTRY_ERROR,
                faq=["distribution-errors"],
                remediation=[
                    "The registry (or a proxy) returns something that is not a "
                    "manifest: compare with `skopeo inspect --raw`."
                ],
                evidence=evidence,
            )
        media = str(doc.get("mediaType") or media)
        evidence["media_type"] = media
        ctx.put(IMAGE_MANIFEST, doc)
        ctx.put(IMAGE_MANIFEST_DIGEST, actual)
        if media in SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
            return problem(
                Status.WARN,
                f"{ref.normalized} is a schema 1 manifest: containerd 2 and podman no "
                "longer pull it, docker only with a deprecation warning",
                code=Code.MANIFEST_SCHEMA1,
                faq=["distribution-errors"],
                remediation=[
                    "Push the image again with a current docker or buildx: it "
                    "writes a schema 2 / OCI manifest."
                ],
                evidence=evidence,
            )
        kind = "index" if media in INDEX_TYPES or "manifests" in doc else "image manifest"
        return _pulls_left(f"{ref.normalized}: {kind} {actual[:19]}…", rl, anonymous, evidence)

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
        from diagnose import http as web
        from diagnose.oci import RateLimit, parse_errors, rate_limit
        from diagnose.registryapi import read_body

        reg, ref = image_of(ctx)
        if answer is None:
            # HEAD answers carry no body: ask once more with GET for the registry's own error
            try:
                resp = call("GET", url, headers=accept, auth=auth, stream=True)
                body = read_body(resp)
            except web.RequestException as exc:
                return request_failed(
                    ctx.options.environ, url, exc, f"GET manifest {ref.reference}"
                )
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
                Code.REGISTRY_DENIED,
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

        from diagnose import http as web
        from diagnose.registryapi import base_url

        reg, ref = image_of(ctx)
        repo = reg.repository or ref.path
        tags, repo_known = self._tags(ctx, call, auth)
        if "NAME_UNKNOWN" in codes:
            repo_known = False
        evidence.update(repository_exists=repo_known)
        if tags is not None:
            evidence["tags_seen"] = tags[:20]
        if pushing(ctx.options):
            return passed(
                f"{ref.normalized} is not in the registry yet: the push will create it",
                **evidence,
            )
        if repo_known is False:
            return problem(
                Status.FAIL,
                f"repository {repo} does not exist on {reg.login_server}{messages(errors)}",
                code=Code.REPOSITORY_NOT_FOUND,
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
                except web.RequestException:
                    current = None
            evidence["tag_digest_now"] = current
            now = f"; :{ref.tag} now points to {current}" if current else ""
            return problem(
                Status.FAIL,
                f"the registry has no manifest {ref.digest} in {repo}{now}",
                code=Code.IMAGE_DIGEST_NOT_FOUND,
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
            code=Code.IMAGE_TAG_NOT_FOUND,
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
        from diagnose import http as web
        from diagnose.registryapi import auth_for, base_url, read_body

        kept = ctx.fact(TAGS)
        if isinstance(kept, list):
            return [str(t) for t in kept], True
        headers, _ = auth_for(ctx)
        try:
            resp = call(
                "GET", f"{base_url(ctx)}/tags/list", headers=headers, auth=auth, stream=True
            )
            body = read_body(resp)
        except web.RequestException:
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
                f"the registry wants a login to read {ref.normalized}{messages(errors)}: "
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
                f"the registry refused the credential for {ref.normalized}{messages(errors)}: "
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
            code=Code.IMAGE_UNAUTHORIZED,
            faq=["pull-push-roles", "admin-credentials", "manifest-unknown"],
            remediation=steps,
            evidence=evidence,
        )
