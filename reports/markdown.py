"""Markdown for pasting into a ticket: a summary table, then each problem with its evidence and
what to do."""

from __future__ import annotations

import json
from typing import Any

from diagnose.models import CheckResult, Report, Status
from diagnose.render import RenderOptions

MARK = {
    Status.PASS: "✅ pass",
    Status.WARN: "⚠️ warn",
    Status.FAIL: "❌ fail",
    Status.SKIP: "⏭️ skip",
    Status.ERROR: "💥 error",
}


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def evidence_block(evidence: Any, limit: int = 3000) -> str:
    text = json.dumps(evidence, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) > limit:
        text = text[:limit] + "\n… (cut; the JSON report has all of it)"
    return text.replace("```", "'''")


class MarkdownReport:
    name = "markdown"

    def render(self, report: Report, options: RenderOptions) -> str:
        out: list[str] = []
        regs = ", ".join(f"`{r.login_server}`" for r in report.registries) or "this machine only"
        counts = report.counts()
        out.append(f"# registry-diagnose: {report.status.value.upper()}")
        out.append("")
        out.append(
            f"Registry: {regs} · started {report.started_at} · "
            f"{report.duration_s:.2f}s · registry-diagnose {report.tool.version}"
        )
        out.append("")
        out.append(" · ".join(f"{counts[s.value]} {s.value}" for s in Status if counts[s.value]))
        out.append("")
        for note in report.notes:
            out.append(f"> {cell(note)}")
        if report.notes:
            out.append("")
        multi = len(report.registries) > 1
        out.append("| Status | Check | " + ("Registry | " if multi else "") + "Summary | Code |")
        out.append("|---|---|" + ("---|" if multi else "") + "---|---|")
        for r in report.results:
            reg = f"{cell(r.registry or 'host')} | " if multi else ""
            out.append(
                f"| {MARK[r.status]} | `{r.id}` | {reg}{cell(r.summary)} | "
                f"{f'`{r.code}`' if r.code else ''} |"
            )
        problems = [r for r in report.results if r.status.is_problem]
        if problems:
            out += ["", "## What to fix"]
        for r in problems:
            out += self._problem(r, report)
        return "\n".join(out) + "\n"

    def _problem(self, r: CheckResult, report: Report) -> list[str]:
        where = f" · `{r.registry}`" if r.registry else ""
        out = ["", f"### {MARK[r.status]}: {r.title}{where} (`{r.code}`)", "", cell(r.summary), ""]
        steps = list(r.remediation)
        if not steps and r.faq and r.faq[0] in report.faq:
            steps = list(report.faq[r.faq[0]].remediation)
        if steps:
            out.append("**What to do**")
            out.append("")
            out += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
            out.append("")
        for key in r.faq:
            entry = report.faq.get(key)
            if entry is None:
                continue
            link = f" ([more]({entry.links[0]}))" if entry.links else ""
            out.append(
                f"- FAQ `{key}`: **{entry.title}**{link}; from the FAQ question "
                f"\u201c{entry.question}\u201d"
            )
        if r.evidence:
            out += [
                "",
                "<details><summary>Evidence</summary>",
                "",
                "```json",
                evidence_block(r.evidence),
                "```",
                "",
                "</details>",
            ]
        return out
