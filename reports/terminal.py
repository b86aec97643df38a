"""The doctor-style report for a person at a terminal: a line per check, then only the
problems, each with what to do.

The report is laid out once, as lines of styled spans. On a terminal with colour, rich draws
them (the checks as a grid that wraps long summaries); anywhere else (a pipe, a CI log, a file)
they are written as plain lines, one fact per line, without loading rich at all: that is most
of what a short run would otherwise spend on its report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diagnose.models import CheckResult, Report, Status
from diagnose.render import RenderOptions

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

Span = tuple[str, str]  # (text, rich style; "" for none)
Line = list[Span]
# A check's row: the mark, the id, the timing and the summary, each its own column on a grid.
Row = tuple[Span, str, Span, str]
Block = list[Line] | tuple[Row, ...]  # plain lines, or a table of checks

STYLE = {
    Status.PASS: ("✔", "PASS", "green"),
    Status.WARN: ("!", "WARN", "yellow"),
    Status.FAIL: ("✘", "FAIL", "red"),
    Status.SKIP: ("-", "SKIP", "dim"),
    Status.ERROR: ("?", "ERROR", "magenta"),
}

# C0 controls and DEL from the registry's or the host's text must not drive the terminal
_CONTROLS = {c: "?" for c in [*range(32), 127] if c != 9} | {9: " "}


def _mark(status: Status) -> Span:
    symbol, word, style = STYLE[status]
    return (f"{symbol} {word:<5}", style)


def _timing(r: CheckResult) -> Span:
    return (f"{r.duration_s:5.2f}s", "dim") if r.status is not Status.SKIP else (" " * 6, "")


def _safe(text: str) -> str:
    return text.translate(_CONTROLS)


class TerminalReport:
    name = "terminal"

    def render(self, report: Report, options: RenderOptions) -> str:
        blocks = self._layout(report)
        if not options.color:
            return "".join(
                "".join(_safe(text) for text, _ in line) + "\n"
                for block in blocks
                for line in (block if isinstance(block, list) else _row_lines(block, report))
            )
        return self._rich(blocks, options)

    def _layout(self, report: Report) -> list[Block]:
        """Blocks in order: runs of plain lines (lists) and check tables (tuples of rows)."""
        blocks: list[Block] = []
        head: list[Line] = []
        names = ", ".join(r.login_server for r in report.registries) or "this machine only"
        head.append([(f"registry-diagnose {report.tool.version}", "bold"), (f" · {names}", "")])
        for note in report.notes:
            head.append([("note:", "dim"), (f" {note}", "")])
        for reg in report.registries:
            for note in reg.notes:
                head.append([(f"note ({reg.login_server}):", "dim"), (f" {note}", "")])
        head.append([])
        blocks.append(head)
        groups: dict[str | None, list[CheckResult]] = {}
        for r in report.results:
            groups.setdefault(r.registry, []).append(r)
        for registry, results in groups.items():
            if len(groups) > 1:
                blocks.append([[(registry or "this machine", "bold")]])
            blocks.append(tuple((_mark(r.status), r.id, _timing(r), r.summary) for r in results))
        tail: list[Line] = []
        problems = [r for r in report.results if r.status.is_problem]
        if problems:
            tail += [[], [("What to fix", "bold")]]
        for r in problems:
            where = f" · {r.registry}" if r.registry else ""
            tail.append([])
            tail.append([_mark(r.status), (" ", ""), (r.title, "bold"), (f"{where}  ", "")])
            tail[-1].append((str(r.code), "dim"))
            tail.append([(f"  {r.summary}", "")])
            steps = list(r.remediation)
            if not steps and r.faq and r.faq[0] in report.faq:
                steps = list(report.faq[r.faq[0]].remediation)
            tail += [[(f"  {i}. {step}", "")] for i, step in enumerate(steps, 1)]
            for key in r.faq:
                entry = report.faq.get(key)
                if entry is not None:
                    tail.append([("  ", ""), (f"FAQ {key}:", "dim"), (f" {entry.title}", "")])
        counts = report.counts()
        parts = [f"{counts[s.value]} {s.value}" for s in Status if counts[s.value]]
        tail.append([])
        tail.append(
            [
                (report.status.value.upper(), "bold"),
                (f": {', '.join(parts) or 'no checks'} in {report.duration_s:.2f}s", ""),
            ]
        )
        blocks.append(tail)
        return blocks

    def _rich(self, blocks: list[Block], options: RenderOptions) -> str:
        import io

        from rich.console import Console

        buf = io.StringIO()
        con = Console(
            file=buf,
            width=max(60, options.width),
            force_terminal=True,
            color_system="standard",
            highlight=False,
            emoji=False,
        )
        for block in blocks:
            if isinstance(block, tuple):
                _grid(con, block)
                continue
            for line in block:
                con.print(_text(line))
        return buf.getvalue()


def _row_lines(rows: tuple[Row, ...], report: Report) -> list[Line]:
    width = max([len(r.id) for r in report.results] + [4])
    return [
        [("  ", ""), mark, (f" {cid:<{width}} ", ""), timing, (f"  {summary}", "")]
        for mark, cid, timing, summary in rows
    ]


def _text(line: Line) -> Text:
    from rich.text import Text

    return Text.assemble(*[(_safe(t), s) if s else _safe(t) for t, s in line])


def _grid(con: Console, rows: tuple[Row, ...]) -> None:
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    for _ in range(4):
        grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for mark, cid, timing, summary in rows:
        grid.add_row(" ", _text([mark]), cid, _text([timing]), _text([(summary, "")]))
    con.print(grid)
