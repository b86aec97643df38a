"""The live view on a terminal: one line per check, updated as checks start and finish."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diagnose.runner import Node

MARKS = {
    "pass": "[green]✔[/]",
    "warn": "[yellow]![/]",
    "fail": "[red]✘[/]",
    "skip": "[dim]-[/]",
    "error": "[magenta]?[/]",
}


class LiveView:
    """Shows progress on stderr while checks run; silent once stopped."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str, str, float]] = {}
        self._console = Console(stderr=True)
        self._live = Live(
            console=self._console,
            refresh_per_second=8,
            transient=True,
            get_renderable=self._renderable,
        )

    def _renderable(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        now = time.monotonic()
        with self._lock:
            rows = list(self._rows.items())
        for label, (state, summary, since) in rows:
            if state == "running":
                table.add_row("[cyan]…[/]", Text(label), f"[dim]{now - since:4.1f}s[/]")
            else:
                table.add_row(MARKS.get(state, state), Text(label), Text(summary))
        return table

    def __call__(self, event: str, node: Node) -> None:
        with self._lock:
            if event == "started":
                self._rows[node.label] = ("running", "", time.monotonic())
            elif node.result is not None:
                self._rows[node.label] = (node.result.status.value, node.result.summary[:70], 0.0)

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()
