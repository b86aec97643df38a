"""Content trust: whether docker will insist on signed images, and what trust data it has."""

from __future__ import annotations

from typing import Any

from diagnose.check import Check
from diagnose.context import CheckContext
from diagnose.dockerconfig import config_dir
from diagnose.models import Finding, Status


class ContentTrustCheck(Check):
    id = "content-trust"
    title = "Content trust"
    order = 250
    scope = "host"
    runtimes = ("docker",)
    timeout_s = 5.0
    faq_keys = ("content-trust",)

    def run(self, ctx: CheckContext) -> Finding:
        enabled = ctx.environ.get("DOCKER_CONTENT_TRUST", "").strip().lower() in ("1", "true")
        tuf = config_dir(ctx.options.docker_config, ctx.environ) / "trust" / "tuf"
        evidence: dict[str, Any] = {
            "enabled": enabled,
            "trust_dir": str(tuf),
            "server": ctx.environ.get("DOCKER_CONTENT_TRUST_SERVER"),
        }
        per_registry: dict[str, list[str]] = {}
        for reg in ctx.registries:
            base = tuf / reg.login_server
            repos = (
                sorted(
                    str(p.parent.parent.relative_to(base))
                    for p in base.glob("**/metadata/root.json")
                )
                if base.is_dir()
                else []
            )
            per_registry[reg.login_server] = repos[:50]
        evidence["trust_data"] = per_registry
        if not enabled:
            text = "content trust is off (DOCKER_CONTENT_TRUST unset): unsigned images are pulled"
        else:
            have = [f"{r}: {len(v)} repositories" for r, v in per_registry.items() if v]
            text = "content trust is on: only signed images are pulled and pushes are signed" + (
                f"; trust data for {', '.join(have)}"
                if have
                else "; no trust data yet for the registries checked (root.json is fetched "
                "and pinned on first use)"
            )
        # information, not a problem: the FAQ entry explains signing roles and where keys live
        return Finding(Status.PASS, text, faq=("content-trust",), evidence=evidence)
