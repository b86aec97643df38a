"""The doctor-style report for a person at a terminal: a line per check, then only the
problems, each with what to do."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from diagnose.models import CheckResult, Report, Status
from diagnose.render import RenderOptions

STYLE = {
    Status.PASS: ("✔", "PASS", "green"),
    Status.WARN: ("!", "WARN", "yellow"),
    Status.FAIL: ("✘", "FAIL", "red"),
    Status.SKIP: ("-", "SKIP", "dim"),
    Status.ERROR: ("?", "ERROR", "magenta"),
}


def _mark(status: Status) -> str:
    symbol, word, style = STYLE[status]
    return f"[{style}]{symbol} {word:<5}[/]"


def _timing(r: CheckResult) -> str:
    return f"[dim]{r.duration_s:5.2f}s[/]" if r.status is not Status.SKIP else " " * 6


class TerminalReport:
    name = "terminal"

    def render(self, report: Report, options: RenderOptions) -> str:
        buf = io.StringIO()
        con = Console(
            file=buf,
            width=max(60, options.width),
            force_terminal=options.color,
            no_color=not options.color,
            color_system="standard" if options.color else None,
            highlight=False,
            emoji=False,
            soft_wrap=not options.color,  # plain output: one line per fact, easy to grep
        )
        self._body(con, report)
        return buf.getvalue()

    def _body(self, con: Console, report: Report) -> None:
        names = ", ".join(r.login_server for r in report.registries) or "this machine only"
        con.print(f"[bold]registry-diagnose {report.tool.version}[/] · {escape(names)}")
        for note in report.notes:
            con.print(f"[dim]note:[/] {escape(note)}")
        for reg in report.registries:
            for note in reg.notes:
                con.print(f"[dim]note ({escape(reg.login_server)}):[/] {escape(note)}")
        con.print()
        width = max([len(r.id) for r in report.results] + [4])
        groups: dict[str | None, list[CheckResult]] = {}
        for r in report.results:
            groups.setdefault(r.registry, []).append(r)
        for registry, results in groups.items():
            if len(groups) > 1:
                con.print(f"[bold]{escape(registry or 'this machine')}[/]")
            if con.is_terminal:
                grid = Table.grid(padding=(0, 1))
                for _ in range(4):
                    grid.add_column(no_wrap=True)
                grid.add_column(overflow="fold")
                for r in results:
                    grid.add_row(" ", _mark(r.status), r.id, _timing(r), Text(r.summary))
                con.print(grid)
                continue
            for r in results:
                con.print(f"  {_mark(r.status)} {r.id:<{width}} {_timing(r)}  {escape(r.summary)}")
        problems = [r for r in report.results if r.status.is_problem]
        if problems:
            con.print()
            con.print("[bold]What to fix[/]")
        for r in problems:
            where = f" · {r.registry}" if r.registry else ""
            con.print()
            con.print(
                f"{_mark(r.status)} [bold]{escape(r.title)}[/]{escape(where)}  [dim]{r.code}[/]"
            )
            con.print(f"  {escape(r.summary)}")
            steps = list(r.remediation)
            if not steps and r.faq and r.faq[0] in report.faq:
                steps = list(report.faq[r.faq[0]].remediation)
            for i, step in enumerate(steps, 1):
                con.print(f"  {i}. {escape(step)}")
            for key in r.faq:
                entry = report.faq.get(key)
                if entry is not None:
                    con.print(f"  [dim]FAQ {key}:[/] {escape(entry.title)}")
        counts = report.counts()
        parts = [f"{counts[s.value]} {s.value}" for s in Status if counts[s.value]]
        con.print()
        con.print(
            f"[bold]{report.status.value.upper()}[/]: {', '.join(parts) or 'no checks'} "
            f"in {report.duration_s:.2f}s"
        )
