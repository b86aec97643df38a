"""Blob downloads: registries often redirect them to a storage host (ACR: its data endpoint or a
storage account). That host needs its own DNS, TLS and firewall path, and it must never be sent
the registry's Authorization header."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urljoin, urlsplit

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.findings import (
    ANSWER_CODES,
    ANSWER_FAQ,
    REQUEST_CODES,
    answer,
    request_failed,
    storage_unreachable,
)
from diagnose.models import Finding, passed, skipped
from diagnose.resolve import ResolveError
from diagnose.secrets import safe_url

RANGE = "bytes=0-1023"


class BlobRedirectCheck(Check):
    id = "blob-redirect"
    title = "Blob download and storage redirect"
    order = 130
    depends_on = ("authorized-request",)
    starts_after = ("dns",)
    timeout_s = 20.0
    faq_keys = ("storage-endpoint", "redirect-auth-header", *ANSWER_FAQ)
    codes = (Code.STORAGE_REDIRECT_ERROR, *REQUEST_CODES, *ANSWER_CODES)

    def run(self, ctx: CheckContext) -> Finding:
        reg = ctx.registry
        assert reg is not None
        if not reg.repository:
            return skipped("no repository named (--repository): no blob to fetch")
        if reg.image is not None:
            return skipped(
                "the image-blobs check fetches every blob of the image, redirects included"
            )
        from diagnose import http as web
        from diagnose.registryapi import (
            NotReadable,
            auth_for,
            base_url,
            getter,
            is_anonymous,
            read_body,
        )
        from diagnose.wire import Broken

        ctx.result("authorized-request")
        headers, auth = auth_for(ctx)
        base = base_url(ctx)
        get = getter(ctx)
        try:
            digest = self._a_blob(ctx)
        except NotReadable as exc:
            if exc.finding is not None:  # the registry's own answer: a finding, not a skip
                return exc.finding
            return skipped(f"no blob to fetch: {exc}")
        evidence: dict[str, Any] = {"digest": digest}
        url = f"{base}/blobs/{digest}"
        t0 = time.monotonic()
        try:
            first = get(url, headers={**headers, "Range": RANGE}, auth=auth, stream=True)
            redirect = first.status_code in (301, 302, 303, 307, 308)
            body = b"" if redirect else read_body(first, 64 * 1024)
            first.close()
        except web.RequestException as exc:
            return request_failed(ctx.environ, url, exc, f"GET blob {digest[:19]}…")
        evidence.update(status=first.status_code, ms=round((time.monotonic() - t0) * 1000, 2))
        if first.status_code in (200, 206):
            return passed(
                f"blob {digest[:19]}… is served by the registry itself (no redirect)", **evidence
            )
        if not redirect or not first.headers.get("Location"):
            return answer(
                f"GET blob {digest[:19]}…",
                first.status_code,
                first.headers,
                body,
                server=reg.login_server,
                anonymous=is_anonymous(ctx, headers, auth),
                evidence=evidence,
            )
        target = urljoin(url, first.headers["Location"])
        host = (urlsplit(target).hostname or "").lower()
        port = urlsplit(target).port or (443 if target.startswith("https") else 80)
        evidence.update(redirect=safe_url(target), storage_host=host)
        try:
            evidence["storage_addresses"] = ctx.resolver.addresses(host, port, ctx.budget(4.0))
        except ResolveError as exc:
            return self._storage_failed(
                f"the storage host {host} does not resolve: {exc}", host, evidence
            )
        t1 = time.monotonic()
        try:
            # a new request with no Authorization header: that header belongs to the registry
            resp = get(target, headers={"Range": RANGE}, stream=True)
            resp.close()
        except Broken as exc:
            evidence["transfer"] = exc.brk.to_dict()
            if exc.brk.kind == "tls":
                from diagnose.x509go import go_reason

                why = go_reason(exc.__cause__ or exc) if exc.__cause__ else ""
                return self._storage_failed(
                    f"TLS with the storage host {host}:{port} failed"
                    + (f" ({why})" if why else ""),
                    host,
                    evidence,
                )
            return self._storage_failed(
                f"the storage host {host}:{port} cannot be used: {exc.brk.describe()}",
                host,
                evidence,
            )
        except web.RequestException as exc:
            return request_failed(ctx.environ, target, exc, f"GET blob from {host}")
        evidence.update(
            storage_status=resp.status_code, storage_ms=round((time.monotonic() - t1) * 1000, 2)
        )
        if resp.status_code in (200, 206):
            return passed(
                f"blob redirected to {host}; reachable without the registry's "
                f"Authorization header ({resp.status_code})",
                **evidence,
            )
        if resp.status_code == 429:
            return answer(
                f"the storage host {host}",
                resp.status_code,
                resp.headers,
                b"",
                server=reg.login_server,
                anonymous=is_anonymous(ctx, headers, auth),
                evidence=evidence,
            )
        return self._storage_failed(
            f"the storage host {host} answered HTTP {resp.status_code}", host, evidence
        )

    def _storage_failed(self, summary: str, host: str, evidence: dict[str, Any]) -> Finding:
        return storage_unreachable(summary, [host], evidence)

    def _a_blob(self, ctx: CheckContext) -> str:
        from diagnose.registryapi import NotReadable, manifest_for

        doc = manifest_for(ctx)
        layers = [
            x
            for x in doc.get("layers") or []
            if isinstance(x, dict) and not x.get("urls") and isinstance(x.get("digest"), str)
        ]
        if layers:
            return str(layers[0]["digest"])
        config = doc.get("config")
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            return str(config["digest"])
        raise NotReadable("the manifest lists no blob")
