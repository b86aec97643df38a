"""Finding checks and report formats through entry points.

Our own checks are found the same way a third party's are, so the plugin path is always the
tested path. A plugin that fails to load is reported, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from diagnose.check import Check

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

CHECK_GROUP = "registry_diagnose.checks"
REPORT_GROUP = "registry_diagnose.reports"


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    value: str
    error: str


@cache
def _registered() -> dict[str, tuple[EntryPoint, ...]]:
    """Every entry point of our groups, from one scan of the installed distributions: each scan
    reads every distribution's metadata, and a run needs checks and a report format."""
    from importlib.metadata import entry_points

    found = entry_points()
    return {group: tuple(found.select(group=group)) for group in (CHECK_GROUP, REPORT_GROUP)}


def _sorted_checks(checks: list[Check]) -> list[Check]:
    """Dependencies before dependants, otherwise by name: a stable order for reports."""
    by_id = {c.id: c for c in checks}
    done: dict[str, Check] = {}
    visiting: set[str] = set()

    def visit(c: Check) -> None:
        if c.id in done or c.id in visiting:
            return
        visiting.add(c.id)
        for dep in c.depends_on:
            if dep in by_id:
                visit(by_id[dep])
        visiting.discard(c.id)
        done[c.id] = c

    for c in sorted(checks, key=lambda c: (c.order, c.id)):
        visit(c)
    return list(done.values())


def load_checks() -> tuple[list[Check], list[BrokenPlugin]]:
    """Instantiate every registered check, in dependency order."""
    checks: list[Check] = []
    broken: list[BrokenPlugin] = []
    seen: set[str] = set()
    for ep in sorted(_registered()[CHECK_GROUP], key=lambda e: e.name):
        try:
            obj: Any = ep.load()
            check = obj() if isinstance(obj, type) else obj
            if not isinstance(check, Check) or not check.id:
                raise TypeError("not a diagnose.check.Check with an id")
            if check.id in seen:
                raise ValueError(f"check id {check.id!r} is registered twice")
        except Exception as exc:  # a broken third-party plugin must not stop the run
            broken.append(BrokenPlugin(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
            continue
        seen.add(check.id)
        checks.append(check)
    return _sorted_checks(checks), broken


def report_names() -> list[str]:
    return sorted(ep.name for ep in _registered()[REPORT_GROUP])


def load_report(name: str) -> Any:
    """The renderer registered under name: an object with `render(report) -> str`."""
    for ep in _registered()[REPORT_GROUP]:
        if ep.name == name:
            obj = ep.load()
            return obj() if isinstance(obj, type) else obj
    raise KeyError(name)
