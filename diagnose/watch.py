"""`diagnose watch REF... --interval 30s [--for 1h]`: the checks again and again, and what went
wrong between two looks: how many probes failed, at which step and how (3 of 120 token requests
over 5 s; 2 manifest reads answered 503), the first failure, the longest run of failures.

Probes run in this process (diagnose.probe), each target's at the same moment of every round;
a round that overruns the interval makes the next one start at once, never two at a time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from diagnose.probe import PHASES, Module, ProbeResult, run_probe

if TYPE_CHECKING:
    from diagnose.models import Registry

# check id -> what one of its requests is called (singular, plural)
NOUNS: dict[str, tuple[str, str]] = {
    "dns": PHASES["dns"],
    "tcp": PHASES["connect"],
    "tls": PHASES["tls"],
    "api": ("/v2/ request", "/v2/ requests"),
    "auth-challenge": ("auth challenge", "auth challenges"),
    "refresh-token": ("refresh-token request", "refresh-token requests"),
    "access-token": PHASES["token"],
    "scope": ("token scope", "token scopes"),
    "authorized-request": ("authorized request", "authorized requests"),
    "manifest": PHASES["manifest"],
    "platform": ("platform lookup", "platform lookups"),
    "image-blobs": ("blob read", "blob reads"),
    "blob-redirect": ("blob read", "blob reads"),
}
TIMELINE = 240  # marks kept per target for the live view


def _noun(name: str, n: int, table: dict[str, tuple[str, str]]) -> str:
    one, many = table.get(name, (f"{name} check", f"{name} checks"))
    return one if n == 1 else many


def clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


@dataclass
class TargetStats:
    """Everything the summary says about one target, kept as counts (memory stays flat)."""

    target: str
    module: str
    probes: int = 0
    failed: int = 0
    first_failure: float | None = None
    streak: int = 0
    longest_streak: int = 0
    # (check, status, code, HTTP status) -> probes
    problems: Counter[tuple[str, str, str, int | None]] = field(default_factory=Counter)
    measured: Counter[str] = field(default_factory=Counter)  # phase -> probes that timed it
    slow: Counter[str] = field(default_factory=Counter)  # phase -> probes over the threshold
    slowest: dict[str, float] = field(default_factory=dict)
    marks: deque[str] = field(default_factory=lambda: deque(maxlen=TIMELINE))
    last: ProbeResult | None = None

    def add(self, r: ProbeResult, slow_s: float) -> None:
        self.probes += 1
        self.last = r
        for p in r.problems:
            self.problems[(p.check, p.status, p.code, p.http_status)] += 1
        for phase, seconds in r.phases.items():
            self.measured[phase] += 1
            self.slowest[phase] = max(seconds, self.slowest.get(phase, 0.0))
            if seconds > slow_s:
                self.slow[phase] += 1
        if r.success:
            self.streak = 0
            self.marks.append("warn" if r.problems else "pass")
            return
        self.marks.append("fail")
        self.failed += 1
        self.streak += 1
        self.longest_streak = max(self.longest_streak, self.streak)
        if self.first_failure is None:
            self.first_failure = r.started_at

    def lines(self, slow_s: float) -> list[str]:
        """The classified summary: one headline, then one line per kind of trouble."""
        if not self.probes:
            return [f"{self.target}: not probed"]
        if self.failed:
            head = (
                f"{self.target}: {self.failed} of {self.probes} probes failed; first failure at "
                f"{clock(self.first_failure or 0)}; longest streak {self.longest_streak}"
            )
        else:
            head = f"{self.target}: all {self.probes} probes passed"
        out = [head]
        for phase in PHASES:
            n = self.slow[phase]
            if n:
                total = self.measured[phase]
                out.append(
                    f"  {n} of {total} {_noun(phase, total, PHASES)} over {slow_s:g} s "
                    f"(slowest {self.slowest[phase]:.2f} s)"
                )
        for (check, status, code, http), n in self.problems.most_common():
            noun = _noun(check, n, NOUNS)
            if http is not None:
                how = f"answered {http}"
            else:
                how = "warned" if status == "warn" else ("broke" if status == "error" else "failed")
            out.append(f"  {n} {noun} {how} ({code})")
        return out

    def to_dict(self, slow_s: float) -> dict[str, Any]:
        return {
            "kind": "summary",
            "target": self.target,
            "module": self.module,
            "probes": self.probes,
            "failed": self.failed,
            "first_failure": (
                datetime.fromtimestamp(self.first_failure).astimezone().isoformat("T", "seconds")
                if self.first_failure is not None
                else None
            ),
            "longest_streak": self.longest_streak,
            "slow_threshold_s": slow_s,
            "slow": {p: {"slow": self.slow[p], "of": self.measured[p]} for p in self.slow},
            "problems": [
                {"check": c, "status": s, "code": code, "http_status": h, "probes": n}
                for (c, s, code, h), n in self.problems.most_common()
            ],
            "summary": self.lines(slow_s),
        }


ProbeFn = Callable[[Module, "Registry", float | None], ProbeResult]


def watch(
    module: Module,
    targets: Sequence[tuple[str, Registry]],
    *,
    interval_s: float,
    for_s: float,
    slow_s: float,
    on_probe: Callable[[ProbeResult, TargetStats], None],
    stats: Sequence[TargetStats] | None = None,
    lock: threading.Lock | None = None,
    stop: threading.Event | None = None,
    run: ProbeFn = run_probe,
) -> Sequence[TargetStats]:
    """Probe every target each interval until for_s has passed (a round starts only before
    then) or stop is set; Ctrl-C ends it early, with the summary of what was seen. `stats`
    (one per target) and `lock` are shared with a live view."""
    stop = stop or threading.Event()
    lock = lock or threading.Lock()
    stats = stats or [TargetStats(key, module.name) for key, _ in targets]
    start = time.monotonic()
    rounds = 0
    pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(targets))), thread_name_prefix="watch")
    try:
        while not stop.is_set():
            futures = [pool.submit(run, module, reg, None) for _, reg in targets]
            for st, fut in zip(stats, futures, strict=True):
                result = fut.result()
                with lock:
                    st.add(result, slow_s)
                on_probe(result, st)
            rounds += 1
            now = time.monotonic()
            missed = max(0, int((now - start) // interval_s) + 1 - rounds)
            rounds += missed  # an overrun: the next round starts at once, on the grid
            next_at = start + rounds * interval_s
            if next_at >= start + for_s or stop.wait(max(0.0, next_at - time.monotonic())):
                break
    except KeyboardInterrupt:
        pass
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return stats


# ------------------------------------------------------------------------------- output
def probe_line(r: ProbeResult) -> str:
    """One line per probe, for a log."""
    state = "PASS" if r.success else "FAIL"
    if r.success and r.problems:
        state = "WARN"
    line = f"{clock(r.started_at)} {state:<4} {r.target} {r.duration_s:.2f}s"
    shown = r.failures or r.problems
    if shown:
        p = shown[0]
        http = f" HTTP {p.http_status}" if p.http_status else ""
        line += f" {p.check} {p.code}{http}: {p.summary[:120]}"
    return line


def probe_json(r: ProbeResult) -> str:
    return json.dumps({"kind": "probe", **r.to_dict()}, sort_keys=False)


MARK_STYLE = {"pass": ("✔", "green"), "warn": ("!", "yellow"), "fail": ("✘", "red")}


class Timeline:
    """The live view: a row per target, one mark per probe, newest on the right."""

    def __init__(self, stats: Sequence[TargetStats], interval_s: float, for_s: float) -> None:
        self.stats = stats
        self.interval_s = interval_s
        self.for_s = for_s
        self.started = time.monotonic()
        self.lock = threading.Lock()  # held by watch() while it updates the stats

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        head = Text(
            f"watching {len(self.stats)} target(s) every {self.interval_s:g}s: "
            f"{elapsed:.0f}s of {self.for_s:g}s",
            style="dim",
        )
        table = Table.grid(padding=(0, 2), expand=True)
        table.add_column(no_wrap=True, max_width=48, overflow="ellipsis")
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        with self.lock:
            for st in self.stats:
                marks = Text()
                for m in list(st.marks)[-60:]:
                    char, style = MARK_STYLE[m]
                    marks.append(char, style=style)
                tally = f"{st.failed}/{st.probes} failed" if st.probes else "waiting"
                last = probe_line(st.last).split(" ", 3)[-1] if st.last else ""
                table.add_row(Text(st.target), marks, tally, Text(last))
        return Group(head, table)


def main(
    module: Module,
    targets: Sequence[tuple[str, Registry]],
    *,
    interval_s: float,
    for_s: float,
    slow_s: float,
    fmt: str,
    live: bool,
    out: IO[str],
) -> int:
    """Watch, writing a line (or a JSON object) per probe, or a live timeline on a terminal,
    then the summary; 1 when any probe failed."""
    stats = [TargetStats(key, module.name) for key, _ in targets]
    view = Timeline(stats, interval_s, for_s)

    def on_probe(r: ProbeResult, _st: TargetStats) -> None:
        if fmt == "json":
            out.write(probe_json(r) + "\n")
            out.flush()
        elif not live:
            out.write(probe_line(r) + "\n")
            out.flush()

    def run_all() -> None:
        watch(
            module,
            targets,
            interval_s=interval_s,
            for_s=for_s,
            slow_s=slow_s,
            on_probe=on_probe,
            stats=stats,
            lock=view.lock,
        )

    if live and fmt != "json":
        from rich.console import Console
        from rich.live import Live

        with Live(view, console=Console(stderr=True), refresh_per_second=4, transient=True):
            run_all()
    else:
        run_all()
    for st in stats:
        if fmt == "json":
            out.write(json.dumps(st.to_dict(slow_s)) + "\n")
        else:
            out.write("\n".join(st.lines(slow_s)) + "\n")
    out.flush()
    return 1 if any(st.failed for st in stats) else 0
