"""Can this identity push here? An upload is started, sent one chunk and cancelled, so that
nothing is left behind: the answers a real push would meet, without pushing."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext, pushing
from diagnose.facts import PLATFORM_MANIFEST
from diagnose.findings import (
    REQUEST_CODES,
    denied,
    messages,
    rate_limited,
    registry_error,
    request_failed,
)
from diagnose.models import Finding, Status, passed, problem
from diagnose.secrets import safe_url

PROBE_MIN = 1024 * 1024 + 1  # one byte over nginx's default client_max_body_size
PROBE_MAX = 16 * 1024 * 1024


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
        "transfer-cut-short",
    )
    codes = (
        Code.PUSH_READ_ONLY,
        Code.PUSH_DENIED,
        Code.PUSH_UNAUTHORIZED,
        Code.PUSH_BODY_TOO_LARGE,
        Code.PUSH_QUOTA,
        Code.RATE_LIMITED,
        Code.REGISTRY_ERROR,
        *REQUEST_CODES,
    )

    def skip_reason(self, ctx: CheckContext) -> str | None:
        reg = ctx.registry
        if not pushing(ctx.options):
            return "checked with --require push (or --push-test)"
        if reg is None or not reg.repository:
            return "needs the repository to push to: an image reference or --repository"
        return None

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose import http as web
        from diagnose.registryapi import auth_for, base_url, is_anonymous, read_body, requester

        reg = ctx.registry
        assert reg is not None and reg.repository is not None
        ctx.result("scope")
        headers, auth = auth_for(ctx)
        anonymous = is_anonymous(ctx, headers, auth)
        call = requester(ctx)
        start = f"{base_url(ctx)}/blobs/uploads/"
        evidence: dict[str, Any] = {"url": safe_url(start), "repository": reg.repository}
        try:
            resp = call("POST", start, headers=headers, auth=auth, stream=True)
            body = read_body(resp)
        except web.RequestException as exc:
            return request_failed(ctx.options.environ, start, exc, "starting an upload")
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
            chunk_body = read_body(chunk)
            evidence["chunk_status"] = chunk.status_code
            if chunk.status_code == 413:
                outcome = self._too_large(ctx, size, why, evidence)
            elif chunk.status_code not in (202, 204):
                outcome = self._refused(
                    ctx, "sending a chunk", chunk, chunk_body, anonymous, evidence
                )
            elif chunk.headers.get("Location"):
                location = urljoin(location, chunk.headers["Location"])
        except web.RequestException as exc:
            from diagnose.wire import broken

            brk = broken(exc, host=urlsplit(location).netloc).brk
            evidence["chunk_error"] = brk.to_dict()
            outcome = problem(
                Status.FAIL,
                f"sending a {size:,}-byte chunk: {brk.describe()} (a proxy or load "
                "balancer that drops large request bodies does this)",
                code=Code.PUSH_BODY_TOO_LARGE,
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
        doc = ctx.fact(PLATFORM_MANIFEST)
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
        from diagnose import http as web

        try:
            resp = call("DELETE", location, headers=headers, auth=auth)
            resp.close()
        except web.RequestException:
            return False
        return bool(resp.status_code in (200, 202, 204))

    def _too_large(
        self, ctx: CheckContext, size: int, why: str, evidence: dict[str, Any]
    ) -> Finding:
        doc = ctx.fact(PLATFORM_MANIFEST)
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
            code=Code.PUSH_BODY_TOO_LARGE,
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
                f"{messages(errors)}",
                code=Code.PUSH_QUOTA,
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
                f"{what} is refused with HTTP {status}{messages(errors)}: the registry is "
                "read-only (maintenance mode) and accepts no pushes",
                code=Code.PUSH_READ_ONLY,
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
            return denied(reg.login_server, what, errors, evidence, Code.PUSH_DENIED)
        if status == 401:
            return problem(
                Status.FAIL,
                f"{what} needs a credential allowed to push (HTTP 401){messages(errors)}",
                code=Code.PUSH_UNAUTHORIZED,
                faq=["pull-push-roles", "admin-credentials"],
                remediation=[
                    f"Log in with an identity that may push (`docker login {reg.login_server}`)"
                    "; for ACR give it AcrPush, then log out and in again.",
                ],
                evidence=evidence,
            )
        if status == 403 or "DENIED" in codes:
            return denied(reg.login_server, what, errors, evidence, Code.PUSH_DENIED)
        return registry_error(what, status, errors, evidence)
