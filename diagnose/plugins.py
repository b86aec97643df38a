"""Finding checks and report formats through entry points.

Our own checks are found the same way a third party's are, so the plugin path is always the
tested path. A plugin that fails to load is reported, never fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.models import CheckResult, Status, problem

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

CHECK_GROUP = "registry_diagnose.checks"
REPORT_GROUP = "registry_diagnose.reports"
ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class BrokenPlugin:
    """A registered check that could not be loaded or was refused, and why."""

    name: str
    value: str
    error: str

    def result(self) -> CheckResult:
        """The PLUGIN_LOAD_ERROR result the report carries for it."""
        finding = problem(
            Status.ERROR,
            f"check plugin {self.name} ({self.value}) could not be loaded: {self.error[:200]}",
            code=Code.PLUGIN_LOAD_ERROR,
            faq=["check-health"],
            remediation=[
                "Reinstall or remove the package that provides this check; its author can run "
                "`diagnose list-checks` to see this message.",
            ],
        )
        return CheckResult.from_finding(
            self.name, "Load check plugin", finding, duration_s=0.0, registry=None, started_s=0.0
        )


@cache
def _registered() -> dict[str, tuple[EntryPoint, ...]]:
    """Every entry point of our groups, from one scan of the installed distributions: each scan
    reads every distribution's metadata, and a run needs checks and a report format."""
    from importlib.metadata import entry_points

    found = entry_points()
    return {group: tuple(found.select(group=group)) for group in (CHECK_GROUP, REPORT_GROUP)}


def _sorted_checks(checks: list[Check]) -> list[Check]:
    """Dependencies before dependants, otherwise by name: a stable order for reports (the
    graph has no cycle: `validate` removed them)."""
    by_id = {c.id: c for c in checks}
    done: dict[str, Check] = {}

    def visit(c: Check) -> None:
        if c.id in done:
            return
        for dep in (*c.depends_on, *c.starts_after):
            if dep in by_id:
                visit(by_id[dep])
        done[c.id] = c

    for c in sorted(checks, key=lambda c: (c.order, c.id)):
        visit(c)
    return list(done.values())


def _shape_problem(check: Check) -> str | None:
    """What is wrong with a check's declared data, or None."""
    if not ID.fullmatch(check.id):
        return f"check id {check.id!r} is not lower-case letters, digits and dashes"
    if check.scope not in ("registry", "host"):
        return f"scope {check.scope!r} is neither 'registry' nor 'host'"
    if not (isinstance(check.timeout_s, int | float) and check.timeout_s > 0):
        return f"timeout_s {check.timeout_s!r} is not a positive number"
    for name in ("depends_on", "starts_after", "codes", "faq_keys", "runtimes"):
        value = getattr(check, name)
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            return f"{name} must be a tuple of strings"
    return None


def _cycle(start: str, edges: dict[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle through start, as the list of ids walked (start first), or None."""
    path: list[str] = []
    seen: set[str] = set()

    def walk(node: str) -> list[str] | None:
        path.append(node)
        for nxt in edges.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen and nxt in edges:
                seen.add(nxt)
                found = walk(nxt)
                if found:
                    return found
        path.pop()
        return None

    return walk(start)


def validate(
    checks: list[Check], origin: dict[str, tuple[str, str]]
) -> tuple[list[Check], list[BrokenPlugin]]:
    """Refuse, as pluggy refuses a plugin that does not fit its hooks, every check whose wiring
    cannot work: a dependency that names no loaded check, a dependency cycle, or a check that
    depends on one refused here. Each refusal names the ids concerned; the others load."""
    good = {c.id: c for c in checks}
    broken: list[BrokenPlugin] = []

    def refuse(check_id: str, why: str) -> None:
        name, value = origin.get(check_id, (check_id, type(good[check_id]).__module__))
        broken.append(BrokenPlugin(name, value, why))
        del good[check_id]

    edges = {c.id: (*c.depends_on, *c.starts_after) for c in checks}
    for c in checks:
        if c.id in good and (cycle := _cycle(c.id, edges)) is not None:
            for member in dict.fromkeys(cycle):
                if member in good:
                    refuse(member, f"dependency cycle: {' -> '.join(cycle)}")
    changed = True
    while changed:  # unknown ids, then whatever leaned on a refused check
        changed = False
        for c in list(good.values()):
            unknown = [d for d in edges[c.id] if d not in good]
            if unknown:
                gone = [d for d in unknown if d in edges]
                why = (
                    f"depends on {', '.join(gone)}, which could not be loaded"
                    if gone and len(gone) == len(unknown)
                    else f"depends on unknown check id {', '.join(unknown)}"
                )
                refuse(c.id, why)
                changed = True
    return [c for c in checks if c.id in good], broken


def load_checks() -> tuple[list[Check], list[BrokenPlugin]]:
    """Instantiate and validate every registered check, in dependency order."""
    checks: list[Check] = []
    broken: list[BrokenPlugin] = []
    origin: dict[str, tuple[str, str]] = {}
    for ep in sorted(_registered()[CHECK_GROUP], key=lambda e: e.name):
        try:
            obj: Any = ep.load()
            check = obj() if isinstance(obj, type) else obj
            if not isinstance(check, Check) or not check.id:
                raise TypeError("not a diagnose.check.Check with an id")
            if check.id in origin:
                raise ValueError(f"check id {check.id!r} is registered twice")
            shape = _shape_problem(check)
            if shape:
                raise ValueError(shape)
        except Exception as exc:  # a broken third-party plugin must not stop the run
            broken.append(BrokenPlugin(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
            continue
        origin[check.id] = (ep.name, ep.value)
        checks.append(check)
    checks, refused = validate(checks, origin)
    return _sorted_checks(checks), broken + refused


def report_names() -> list[str]:
    return sorted(ep.name for ep in _registered()[REPORT_GROUP])


def load_report(name: str) -> Any:
    """The renderer registered under name: an object with `render(report) -> str`."""
    for ep in _registered()[REPORT_GROUP]:
        if ep.name == name:
            obj = ep.load()
            return obj() if isinstance(obj, type) else obj
    raise KeyError(name)
