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
from diagnose.findings import storage_unreachable
from diagnose.models import Finding, Status, passed, problem, skipped
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
    faq_keys = (
        "storage-endpoint",
        "redirect-auth-header",
        "network-connectivity",
        "firewall-propagation",
        "repository-format",
    )
    codes = (Code.STORAGE_REDIRECT_ERROR, Code.BLOB_DOWNLOAD_ERROR)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose.registryapi import NotReadable, auth_for, base_url, getter

        reg = ctx.registry
        assert reg is not None
        if not reg.repository:
            return skipped("no repository named (--repository): no blob to fetch")
        if reg.image is not None:
            return skipped(
                "the image-blobs check fetches every blob of the image, redirects included"
            )
        import requests

        ctx.result("authorized-request")
        headers, auth = auth_for(ctx)
        base = base_url(ctx)
        get = getter(ctx)
        try:
            digest = self._a_blob(ctx)
        except NotReadable as exc:
            return skipped(f"no blob to fetch: {exc}")
        evidence: dict[str, Any] = {"digest": digest}
        t0 = time.monotonic()
        try:
            first = get(
                f"{base}/blobs/{digest}",
                headers={**headers, "Range": RANGE},
                auth=auth,
                stream=True,
            )
            first.close()
        except requests.RequestException as exc:
            return problem(
                Status.FAIL,
                f"GET blob failed: {type(exc).__name__}",
                code=Code.BLOB_DOWNLOAD_ERROR,
                faq=["network-connectivity"],
                evidence=evidence,
            )
        evidence.update(status=first.status_code, ms=round((time.monotonic() - t0) * 1000, 2))
        if first.status_code in (200, 206):
            return passed(
                f"blob {digest[:19]}… is served by the registry itself (no redirect)", **evidence
            )
        if first.status_code not in (301, 302, 303, 307, 308) or not first.headers.get("Location"):
            return problem(
                Status.FAIL,
                f"GET blob answered HTTP {first.status_code}",
                code=Code.BLOB_DOWNLOAD_ERROR,
                faq=["network-connectivity", "repository-format"],
                remediation=[
                    "The manifest names a blob the registry will not serve: the "
                    "repository may be damaged, or a proxy is interfering."
                ],
                evidence=evidence,
            )
        target = urljoin(f"{base}/blobs/{digest}", first.headers["Location"])
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
        except requests.exceptions.SSLError:
            return self._storage_failed(f"TLS with the storage host {host} failed", host, evidence)
        except requests.RequestException as exc:
            why = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
            return self._storage_failed(
                f"the storage host {host}:{port} cannot be reached ({why})", host, evidence
            )
        evidence.update(
            storage_status=resp.status_code, storage_ms=round((time.monotonic() - t1) * 1000, 2)
        )
        if resp.status_code in (200, 206):
            return passed(
                f"blob redirected to {host}; reachable without the registry's "
                f"Authorization header ({resp.status_code})",
                **evidence,
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
