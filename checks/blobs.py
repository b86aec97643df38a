"""Can every blob of the image be fetched? The config and each layer, one byte of each, with
storage redirects followed by hand and without the registry's Authorization header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import NO_IMAGE, CheckContext, image_of
from diagnose.facts import PLATFORM_MANIFEST
from diagnose.findings import registry_error, storage_unreachable
from diagnose.models import Finding, Status, passed, problem, skipped

MAX_BLOBS = 128


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
    codes = (
        Code.BLOB_UNKNOWN,
        Code.STORAGE_REDIRECT_ERROR,
        Code.BLOB_DOWNLOAD_ERROR,
        Code.PROXY_ERROR,
    )

    def skip_reason(self, ctx: CheckContext) -> str | None:
        if ctx.registry is None or ctx.registry.image is None:
            return NO_IMAGE
        return None

    def run(self, ctx: CheckContext) -> Finding:
        from concurrent.futures import ThreadPoolExecutor

        import requests

        from diagnose.registryapi import base_url, fetch_blob, image_config

        image_of(ctx)
        ctx.result("platform")
        doc = ctx.fact(PLATFORM_MANIFEST)
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
            if blob["role"] == "config" and image_config(ctx, doc) is not None:
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
        timed = [
            o[1][2]["first_byte_ms"]
            for o in outcomes
            if isinstance(o[1], tuple) and "first_byte_ms" in o[1][2]  # not when storage failed
        ]
        evidence["first_byte_ms"] = min(timed) if timed else None  # the quickest blob's
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
                        ctx.options.environ,
                    )
                if storage:
                    return self._storage(
                        storage,
                        f"{short}: {type(outcome).__name__}",
                        {**evidence, **facts},
                        ctx.options.environ,
                    )
                return problem(
                    Status.FAIL,
                    f"{short} could not be fetched: {type(outcome).__name__}",
                    code=Code.BLOB_DOWNLOAD_ERROR,
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
                return self._storage(
                    [facts["storage_host"]],
                    f"{short}: {what}",
                    evidence,
                    ctx.options.environ,
                )
            if status == 404:
                return problem(
                    Status.FAIL,
                    f"{short} is not in the registry (404 BLOB_UNKNOWN): the pull stops there",
                    code=Code.BLOB_UNKNOWN,
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

    def _storage(
        self, hosts: list[str], what: str, evidence: dict[str, Any], env: Mapping[str, str]
    ) -> Finding:
        from diagnose.proxy import no_proxy_status

        for h in hosts:
            evidence[f"proxy_for_{h}"] = no_proxy_status(h, 443, env)
        return storage_unreachable(
            f"{what} (layers are served from {', '.join(hosts)})", hosts, evidence
        )
