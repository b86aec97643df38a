"""One self-contained HTML file (no network fetches, no script): a summary, a timeline of the
checks, throughput figures as a chart where present, and each finding with its FAQ answer."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from diagnose.models import CheckResult, Report, Status
from diagnose.render import RenderOptions

COLOR = {
    Status.PASS: "#1a7f37",
    Status.WARN: "#9a6700",
    Status.FAIL: "#cf222e",
    Status.SKIP: "#8c959f",
    Status.ERROR: "#8250df",
}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:28px 0 8px}
.meta{color:#59636e}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.counts span{margin-right:14px}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border:1px solid #d1d9e0;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4} code{font:13px ui-monospace,Menlo,Consolas,monospace}
.card{background:#fff;border:1px solid #d1d9e0;border-left:6px solid;border-radius:6px;
padding:12px 16px;margin:12px 0}
.card h3{margin:0 0 6px;font-size:17px} pre{background:#f6f8fa;padding:8px;overflow:auto;
font-size:12px;max-height:320px}
.faq{color:#59636e;font-size:14px} svg text{font:12px system-ui,sans-serif}
"""


def _badge(status: Status) -> str:
    return (
        f'<span class="badge" style="background:{COLOR[status]}">'
        f"{escape(status.value.upper())}</span>"
    )


def _timeline(results: tuple[CheckResult, ...], total: float) -> str:
    rows = [r for r in results if r.status is not Status.SKIP]
    if not rows:
        return "<p>No check ran.</p>"
    span = max([total] + [r.started_s + r.duration_s for r in rows]) or 1.0
    label_w, bar_w, row_h = 260, 600, 20
    height = row_h * len(rows) + 30
    parts = [
        f'<svg role="img" aria-label="timeline" width="{label_w + bar_w + 70}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, r in enumerate(rows):
        y = 10 + i * row_h
        x = label_w + r.started_s / span * bar_w
        w = max(2.0, r.duration_s / span * bar_w)
        name = r.id + (f" [{r.registry}]" if r.registry else "")
        parts.append(f'<text x="0" y="{y + 12}">{escape(name[:40])}</text>')
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="14" rx="3" '
            f'fill="{COLOR[r.status]}"><title>{escape(r.id)}: '
            f"{r.duration_s:.3f}s from {r.started_s:.3f}s</title></rect>"
        )
        parts.append(f'<text x="{x + w + 4:.1f}" y="{y + 12}">{r.duration_s:.2f}s</text>')
    axis_y = 10 + len(rows) * row_h + 12
    parts.append(f'<text x="{label_w}" y="{axis_y}">0s</text>')
    parts.append(f'<text x="{label_w + bar_w - 30}" y="{axis_y}">{span:.2f}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def _throughput(results: tuple[CheckResult, ...]) -> str:
    """Bars for every MB/s figure checks report as evidence["throughput_mbps"]."""
    bars: list[tuple[str, float]] = []
    for r in results:
        figures = r.evidence.get("throughput_mbps")
        if isinstance(figures, dict):
            for label, value in figures.items():
                if isinstance(value, int | float):
                    bars.append((f"{r.id}: {label}", float(value)))
    if not bars:
        return ""
    top = max(v for _, v in bars) or 1.0
    parts = [
        '<h2>Throughput</h2><svg role="img" aria-label="throughput" width="900" '
        f'height="{24 * len(bars) + 10}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, value) in enumerate(bars):
        y = 5 + i * 24
        w = value / top * 500
        parts.append(f'<text x="0" y="{y + 14}">{escape(label[:38])}</text>')
        parts.append(f'<rect x="280" y="{y}" width="{w:.1f}" height="18" fill="#0969da"/>')
        parts.append(f'<text x="{284 + w:.1f}" y="{y + 14}">{value:.1f} MB/s</text>')
    parts.append("</svg>")
    return "".join(parts)


class HtmlReport:
    name = "html"

    def render(self, report: Report, options: RenderOptions) -> str:
        regs = ", ".join(r.login_server for r in report.registries) or "this machine only"
        counts = report.counts()
        rows = "".join(
            f"<tr><td>{_badge(r.status)}</td><td><code>{escape(r.id)}</code></td>"
            f"<td>{escape(r.registry or 'host')}</td><td>{escape(r.summary)}</td>"
            f"<td><code>{escape(r.code or '')}</code></td><td>{r.duration_s:.2f}s</td></tr>"
            for r in report.results
        )
        cards = "".join(self._card(r, report) for r in report.results if r.status.is_problem)
        notes = "".join(f"<p class=meta>{escape(n)}</p>" for n in report.notes)
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>registry-diagnose: {escape(report.status.value.upper())} · {escape(regs)}</title>
<style>{CSS}</style></head>
<body><main>
<h1 id="summary">registry-diagnose {_badge(report.status)}</h1>
<p class="meta">Registry: <b>{escape(regs)}</b> · started {escape(report.started_at)} ·
{report.duration_s:.2f}s · registry-diagnose {escape(report.tool.version)} ·
Python {escape(report.tool.python)} · {escape(report.tool.platform)}</p>
<p class="counts">{"".join(f"<span>{counts[s.value]} {s.value}</span>" for s in Status)}</p>
{notes}
<h2>What to fix</h2>
{cards or "<p>Nothing: every check passed or was skipped.</p>"}
<h2>Timeline</h2>
{_timeline(report.results, report.duration_s)}
{_throughput(report.results)}
<h2>All checks</h2>
<table><thead><tr><th>Status</th><th>Check</th><th>Registry</th><th>Summary</th><th>Code</th>
<th>Time</th></tr></thead><tbody>{rows}</tbody></table>
</main></body></html>
"""

    def _card(self, r: CheckResult, report: Report) -> str:
        steps = list(r.remediation)
        if not steps and r.faq and r.faq[0] in report.faq:
            steps = list(report.faq[r.faq[0]].remediation)
        faq = []
        for key in r.faq:
            e = report.faq.get(key)
            if e is None:
                continue
            link = f' <a href="{escape(e.links[0], quote=True)}">more</a>' if e.links else ""
            answer = "".join(f"<li>{escape(s)}</li>" for s in e.remediation)
            faq.append(
                f'<details class="faq"><summary>FAQ <code>{escape(key)}</code>: '
                f"{escape(e.title)}{link}</summary><p>From the FAQ question "
                f"\u201c{escape(e.question)}\u201d</p><ol>{answer}</ol></details>"
            )
        evidence: Any = json.dumps(r.evidence, indent=2, ensure_ascii=False, sort_keys=True)
        return (
            f'<div class="card" style="border-left-color:{COLOR[r.status]}">'
            f"<h3>{_badge(r.status)} {escape(r.title)}"
            f"{' · ' + escape(r.registry) if r.registry else ''} "
            f"<code>{escape(r.code or '')}</code></h3><p>{escape(r.summary)}</p>"
            f"<ol>{''.join(f'<li>{escape(s)}</li>' for s in steps)}</ol>{''.join(faq)}"
            f"<details><summary>Evidence</summary><pre>{escape(evidence[:6000])}</pre>"
            "</details></div>"
        )
