"""SARIF 2.1.0, for code-scanning dashboards: one rule per error code, one result per problem."""

from __future__ import annotations

import json
from typing import Any

from diagnose.models import Report, Status
from diagnose.render import RenderOptions

LEVEL = {Status.FAIL: "error", Status.ERROR: "error", Status.WARN: "warning"}


class SarifReport:
    name = "sarif"

    def render(self, report: Report, options: RenderOptions) -> str:
        rules: dict[str, dict[str, Any]] = {}
        results = []
        for r in report.results:
            if not r.status.is_problem or not r.code:
                continue
            if r.code not in rules:
                entry = report.faq.get(r.faq[0]) if r.faq else None
                rule: dict[str, Any] = {
                    "id": r.code,
                    "name": r.code.title().replace("_", ""),
                    "shortDescription": {"text": r.title},
                }
                if entry is not None:
                    rule["fullDescription"] = {"text": entry.title}
                    if entry.links:
                        rule["helpUri"] = entry.links[0]
                    rule["help"] = {"text": "\n".join(entry.remediation)}
                rules[r.code] = rule
            level = LEVEL[r.status]
            if r.status is Status.WARN and options.fail_on_warn:
                level = "error"
            results.append(
                {
                    "ruleId": r.code,
                    "level": level,
                    "message": {
                        "text": r.summary
                        + (" | " + " ".join(r.remediation) if r.remediation else "")
                    },
                    "properties": {"check": r.id, "registry": r.registry, "faq": list(r.faq)},
                }
            )
        doc = {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "registry-diagnose",
                            "version": report.tool.version,
                            "rules": list(rules.values()),
                        }
                    },
                    "results": results,
                    "invocations": [
                        {"executionSuccessful": True, "startTimeUtc": report.started_at}
                    ],
                }
            ],
        }
        return json.dumps(doc, indent=2) + "\n"
