"""Can every blob of the image be fetched, and is it what the manifest names? The config is
read whole and checked (digest and size), so is every layer small enough to read in the time
(the rest get a one-byte probe); storage redirects are followed by hand without the
registry's Authorization header. A transfer that breaks says how, where and on which attempt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext, image_of
from diagnose.facts import PLATFORM_MANIFEST
from diagnose.findings import (
    ANSWER_CODES,
    ANSWER_FAQ,
    REQUEST_CODES,
    answer,
    blob_mismatch,
    storage_unreachable,
    transfer_broken,
)
from diagnose.models import Finding, Status, passed, problem, skipped

MAX_BLOBS = 128
WHOLE_LAYER = 16 * 1024 * 1024  # a layer up to this size is read whole and checked
WHOLE_TOTAL = 64 * 1024 * 1024  # at most this much in all
SOFT_MARGIN_S = 3.0  # whole reads stop this long before the deadline, to report in time
# a break reaching the storage host at all (not a cut in the middle of a transfer)
UNREACHABLE = ("dns", "refused", "unreachable", "tls", "error")


class ImageBlobsCheck(Check):
    id = "image-blobs"
    title = "Image config and layers reachable"
    order = 160
    needs_image = True  # skipped unless an image is named
    depends_on = ("platform",)
    starts_after = ("dns",)
    timeout_s = 30.0
    faq_keys = (
        *ANSWER_FAQ,
        "blob-digest-mismatch",
        "storage-endpoint",
        "redirect-auth-header",
    )
    codes = (
        Code.BLOB_UNKNOWN,
        Code.STORAGE_REDIRECT_ERROR,
        Code.BLOB_DIGEST_MISMATCH,
        Code.BLOB_SIZE_MISMATCH,
        *REQUEST_CODES,
        *ANSWER_CODES,
    )

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose import http as web
        from diagnose.content import BlobRead, config_read, descriptor_size, fetch
        from diagnose.registryapi import base_url

        image_of(ctx)
        ctx.result("platform")
        doc = ctx.fact(PLATFORM_MANIFEST)
        if not isinstance(doc, dict):
            return skipped("no image manifest for this platform: see the platform check")
        blobs: list[dict[str, Any]] = []
        if isinstance(doc.get("config"), dict):
            blobs.append({**doc["config"], "role": "config"})
        foreign = []
        budget = WHOLE_TOTAL
        for layer in doc.get("layers") or []:
            if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
                continue
            if layer.get("urls"):
                foreign.append(layer["digest"])
                continue
            size = descriptor_size(layer)
            whole = size is not None and size <= min(WHOLE_LAYER, budget)
            budget -= size if whole and size else 0
            blobs.append({**layer, "role": "layer", "whole": whole})
        blobs = [b for b in blobs if isinstance(b.get("digest"), str)][:MAX_BLOBS]
        total = sum(int(b.get("size") or 0) for b in blobs if isinstance(b.get("size"), int))
        evidence: dict[str, Any] = {
            "blobs": len(blobs),
            "layers": sum(1 for b in blobs if b["role"] == "layer"),
            "bytes": total,
            "foreign_layers": foreign,
        }
        soft = ctx.deadline - SOFT_MARGIN_S

        def probe(blob: dict[str, Any]) -> tuple[dict[str, Any], BlobRead | Exception | None]:
            try:
                if blob["role"] == "config":  # read whole for the platform: not asked twice
                    return blob, config_read(ctx, doc)
                whole = bool(blob.get("whole"))
                return blob, fetch(
                    ctx,
                    str(blob["digest"]),
                    size=descriptor_size(blob),
                    whole=whole,
                    attempts=2 if whole else 1,
                    soft_deadline=soft if whole else None,
                )
            except web.RequestException as exc:  # a proxy's own failure
                return blob, exc

        from diagnose.workers import map_parallel

        outcomes = map_parallel(probe, blobs, width=4)
        reads = [o for _, o in outcomes if isinstance(o, BlobRead)]
        storage = sorted({r.facts["storage_host"] for r in reads if r.facts.get("storage_host")})
        evidence["storage_hosts"] = storage
        timed = [r.facts["first_byte_ms"] for r in reads if "first_byte_ms" in r.facts]
        evidence["first_byte_ms"] = min(timed) if timed else None  # the quickest blob's
        evidence["verified"] = sum(1 for r in reads if r.verdict == "ok")
        evidence["unverified"] = [r.digest for r in reads if r.verdict == "unverified"]
        retried = [b.to_dict() for r in reads for b in r.earlier]
        if retried:
            evidence["retried"] = retried
        for blob, outcome in outcomes:
            short = f"{blob['role']} {str(blob['digest'])[:19]}…"
            if isinstance(outcome, Exception):
                from diagnose.proxy import proxy_failure

                return proxy_failure(
                    f"{base_url(ctx)}/blobs/{blob['digest']}",
                    str(outcome),
                    1,
                    {**evidence, "digest": blob["digest"]},
                    ctx.options.environ,
                )
            if outcome is None or outcome.verdict in ("ok", "probed", "unverified"):
                continue
            found = self._verdict(ctx, short, outcome, evidence)
            if found is not None:
                return found
        via = f", through {', '.join(storage)}" if storage else ""
        checked = evidence["verified"]
        return passed(
            f"config and {evidence['layers']} layer(s) reachable ({total / 1e6:.1f} MB"
            f"{via}); {checked} blob(s) read whole and matching their digest and size"
            + (
                f"; {len(foreign)} foreign layer(s) left to the nondistributable-artifacts check"
                if foreign
                else ""
            ),
            **evidence,
        )

    def _verdict(
        self, ctx: CheckContext, short: str, rd: Any, evidence: dict[str, Any]
    ) -> Finding | None:
        """The finding for one blob that is not fine."""
        from diagnose.registryapi import auth_for, is_anonymous

        facts = {**evidence, "failed": rd.digest, **rd.facts}
        storage = rd.facts.get("storage_host")
        if rd.verdict in ("digest", "size"):
            return blob_mismatch(
                short, rd.digest, rd.size, rd.actual, rd.received, rd.where, facts, over=rd.over
            )
        if rd.verdict == "broken" and rd.brk is not None:
            if storage and rd.brk.kind in UNREACHABLE:
                return self._storage([storage], f"{short}: {rd.brk.describe()}", facts, ctx.environ)
            return transfer_broken(short, rd.brk, facts)
        if rd.verdict != "answer":
            return None
        if storage and rd.status != 429:
            return self._storage(
                [storage], f"{short}: storage answered HTTP {rd.status}", facts, ctx.environ
            )
        if rd.status == 404:
            return problem(
                Status.FAIL,
                f"{short} is not in the registry (404 BLOB_UNKNOWN): the pull stops there",
                code=Code.BLOB_UNKNOWN,
                faq=["manifest-unknown"],
                remediation=[
                    "The manifest refers to a blob the repository no longer holds (a "
                    "partial push, or garbage collection): push the image again."
                ],
                evidence=facts,
            )
        headers, auth = auth_for(ctx)
        reg = ctx.registry
        return answer(
            short,
            rd.status,
            rd.headers,
            rd.body,
            server=reg.login_server if reg else "",
            anonymous=is_anonymous(ctx, headers, auth),
            evidence=facts,
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
