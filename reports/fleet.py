"""The fleet report (`diagnose merge`) in four formats: terminal, json, markdown and html.

They are registered in their own entry point group, `registry_diagnose.fleet_reports`, beside
the per-run formats: a fleet is a different document (counts and groups of hosts, no checks of
one machine), so a per-run format never has to know about it, and `merge --format` offers
exactly the formats that can draw one.
"""

from __future__ import annotations

import json
from html import escape

from diagnose.fleet import Fleet, Group
from reports.html import CSS
from reports.markdown import cell

HOSTS_SHOWN = 20
MARK = {"fail": "✘ FAIL", "error": "? ERROR", "warn": "! WARN"}


def _hosts(group: Group, limit: int = HOSTS_SHOWN) -> str:
    shown = ", ".join(group.hosts[:limit])
    more = group.count - limit
    return shown + (f" … and {more} more" if more > 0 else "")


def _steps(group: Group, fleet: Fleet) -> list[str]:
    if group.remediation:
        return group.remediation
    first = fleet.faq.get(group.faq[0]) if group.faq else None
    return first.remediation if first else []


def _headline(fleet: Fleet) -> str:
    return (
        f"{fleet.reports} report{'s' if fleet.reports != 1 else ''}: "
        f"{len(fleet.passed)} pass, {len(fleet.failed)} fail"
    )


class TerminalFleet:
    name = "terminal"

    def render_fleet(self, fleet: Fleet, color: bool = False) -> str:
        from reports.terminal import _safe

        out = [f"registry-diagnose fleet · {_headline(fleet)}", ""]
        groups = fleet.ordered()
        if not groups:
            out.append("Every report passed: nothing to fix.")
        for g in groups:
            out.append(f"{MARK[g.status]}  {g.check}  {g.code}  ({g.count} host(s))")
            out.append(f"  hosts: {_hosts(g)}")
            out.append(f"  {g.summary}")
            out += [f"  {i}. {s}" for i, s in enumerate(_steps(g, fleet), 1)]
            for key in g.faq:
                entry = fleet.faq.get(key)
                if entry is not None:
                    out.append(f"  FAQ {key}: {entry.title}")
            out.append("")
        if fleet.passed:
            out.append(f"passed: {', '.join(fleet.passed[:HOSTS_SHOWN])}")
            if len(fleet.passed) > HOSTS_SHOWN:
                out[-1] += f" … and {len(fleet.passed) - HOSTS_SHOWN} more"
        out.append(("FAIL" if fleet.failed else "PASS") + f": {_headline(fleet)}")
        return "".join(_safe(line) + "\n" for line in out)


class JsonFleet:
    name = "json"

    def render_fleet(self, fleet: Fleet, color: bool = False) -> str:
        return json.dumps(fleet.to_dict(), indent=2, ensure_ascii=False) + "\n"


class MarkdownFleet:
    name = "markdown"

    def render_fleet(self, fleet: Fleet, color: bool = False) -> str:
        out = [f"# registry-diagnose fleet: {'FAIL' if fleet.failed else 'PASS'}", ""]
        out += [_headline(fleet), ""]
        groups = fleet.ordered()
        if groups:
            out += ["| Status | Check | Code | Hosts | Count |", "|---|---|---|---|---|"]
            for g in groups:
                out.append(
                    f"| {g.status} | `{g.check}` | `{g.code}` | {cell(_hosts(g, 10))} | {g.count} |"
                )
        for g in groups:
            out += ["", f"## {MARK[g.status]}: {cell(g.title or g.check)} (`{g.code}`)", ""]
            out += [f"{g.count} host(s): {cell(_hosts(g))}", "", cell(g.summary), ""]
            steps = _steps(g, fleet)
            if steps:
                out += ["**What to do**", ""]
                out += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
                out.append("")
            for key in g.faq:
                entry = fleet.faq.get(key)
                if entry is not None:
                    link = f" ([more]({entry.links[0]}))" if entry.links else ""
                    out.append(f"- FAQ `{key}`: **{cell(entry.title)}**{link}")
        if fleet.passed:
            out += ["", f"Passed: {cell(', '.join(fleet.passed))}"]
        return "\n".join(out) + "\n"


class HtmlFleet:
    name = "html"

    def render_fleet(self, fleet: Fleet, color: bool = False) -> str:
        status = "FAIL" if fleet.failed else "PASS"
        badge = "#cf222e" if fleet.failed else "#1a7f37"
        rows = "".join(
            f"<tr><td>{escape(g.status)}</td><td><code>{escape(g.check)}</code></td>"
            f"<td><code>{escape(g.code)}</code></td><td>{g.count}</td>"
            f"<td>{escape(_hosts(g, 10))}</td></tr>"
            for g in fleet.ordered()
        )
        cards = "".join(self._card(g, fleet) for g in fleet.ordered())
        passed = escape(", ".join(fleet.passed)) or "none"
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>registry-diagnose fleet: {status} · {escape(_headline(fleet))}</title>
<style>{CSS}</style></head>
<body><main>
<h1>registry-diagnose fleet <span class="badge" style="background:{badge}">{status}</span></h1>
<p class="meta">{escape(_headline(fleet))}</p>
<h2>Causes, largest group first</h2>
{
            "<table><thead><tr><th>Status</th><th>Check</th><th>Code</th><th>Hosts</th><th>Which</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"
            if rows
            else "<p>Nothing to fix.</p>"
        }
{cards}
<h2>Passed</h2><p>{passed}</p>
</main></body></html>
"""

    def _card(self, g: Group, fleet: Fleet) -> str:
        steps = "".join(f"<li>{escape(s)}</li>" for s in _steps(g, fleet))
        faq = "".join(
            f'<p class="faq">FAQ <code>{escape(k)}</code>: {escape(fleet.faq[k].title)}</p>'
            for k in g.faq
            if k in fleet.faq
        )
        return (
            f'<div class="card" style="border-left-color:#cf222e"><h3>{escape(MARK[g.status])} '
            f"{escape(g.title or g.check)} <code>{escape(g.code)}</code></h3>"
            f"<p>{g.count} host(s): {escape(_hosts(g))}</p><p>{escape(g.summary)}</p>"
            f"<ol>{steps}</ol>{faq}</div>"
        )
