"""Does the image hold this platform? An index is resolved as containerd's platform matcher
resolves it; a single image built for another platform pulls, but will not run here."""

from __future__ import annotations

import json
from typing import Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext, image_of
from diagnose.facts import IMAGE_MANIFEST, IMAGE_MANIFEST_DIGEST, PLATFORM_MANIFEST
from diagnose.findings import ANSWER_CODES, ANSWER_FAQ, REQUEST_CODES, answer, request_failed
from diagnose.models import Finding, Status, passed, problem, skipped


class PlatformCheck(Check):
    id = "platform"
    title = "Platform in the image"
    order = 150
    needs_image = True  # skipped unless an image is named
    depends_on = ("manifest",)
    starts_after = ("dns",)
    timeout_s = 15.0
    faq_keys = ("platform-mismatch", *ANSWER_FAQ)
    codes = (Code.PLATFORM_MISMATCH, Code.MANIFEST_TOO_LARGE, *REQUEST_CODES, *ANSWER_CODES)

    def run(self, ctx: CheckContext) -> Finding:
        from diagnose import http as web
        from diagnose.findings import manifest_too_large
        from diagnose.oci import (
            MANIFEST_ACCEPT,
            choose,
            host_platform,
            parse_platform,
            platforms_in,
        )
        from diagnose.registryapi import (
            MAX_MANIFEST,
            auth_for,
            base_url,
            image_config,
            is_anonymous,
            read_body,
            requester,
        )

        _, ref = image_of(ctx)
        ctx.result("manifest")
        doc = ctx.fact(IMAGE_MANIFEST)
        if not isinstance(doc, dict):
            return skipped("no manifest: see the manifest check")
        want = parse_platform(ctx.options.platform) if ctx.options.platform else host_platform()
        asked = "asked for with --platform" if ctx.options.platform else "this host's"
        evidence: dict[str, Any] = {"wanted": str(want)}
        headers, auth = auth_for(ctx)
        call = requester(ctx)
        depth = 0
        chosen_digest = ctx.fact(IMAGE_MANIFEST_DIGEST)
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
                    code=Code.PLATFORM_MISMATCH,
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
                body = read_body(resp)
            except web.RequestException as exc:
                return request_failed(ctx.options.environ, url, exc, f"GET manifest {digest[:19]}…")
            what = f"the {want} manifest {digest[:19]}… listed in the index"
            if resp.status_code != 200:
                return answer(
                    what,
                    resp.status_code,
                    resp.headers,
                    body,
                    server=ctx.registry.login_server if ctx.registry else "",
                    anonymous=is_anonymous(ctx, headers, auth),
                    evidence=evidence,
                )
            if len(body) > MAX_MANIFEST:
                return manifest_too_large(what, len(body), MAX_MANIFEST, evidence)
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                doc = {}
            if not isinstance(doc, dict):
                doc = {}
            depth += 1
        evidence["manifest_digest"] = chosen_digest
        ctx.put(PLATFORM_MANIFEST, doc)
        if depth:
            return passed(
                f"the index holds {want} ({asked}): {str(chosen_digest)[:19]}…; "
                f"all: {', '.join(evidence.get('available', []))}",
                **evidence,
            )
        config = image_config(ctx, doc)
        if config is None:
            from diagnose.content import config_read

            got = config_read(ctx, doc)
            why = {
                "digest": " (its config is not the blob the manifest names: see image-blobs)",
                "size": " (its config is not the blob the manifest names: see image-blobs)",
                "broken": " (reading its config broke: see image-blobs)",
                "answer": " (the registry did not serve its config: see image-blobs)",
            }.get(got.verdict if got is not None else "", "")
            return passed(
                f"a single image manifest (no index); its platform was not read{why}", **evidence
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
                code=Code.PLATFORM_MISMATCH,
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
