"""Running checks concurrently under one deadline, honouring their dependencies.

Checks start at once, in dependency order, without waiting for what they depend on: a check that
needs a dependency's facts asks `ctx.result(id)`, which waits for it. Only the dependencies a
check names in `starts_after` hold its start (the network checks wait for the name to resolve:
when it does not, nothing past DNS runs at all). Whether a check counts is still decided by its
dependencies: the moment one fails, every check depending on it is reported as "blocked by" it,
whatever it was doing. A healthy run therefore takes about as long as its
slowest check, not the sum of a chain.

Each check runs in a daemon thread: a check stuck in a system call cannot hold the run (or the
process) past its deadline. Its late answer, if any, is ignored.
"""

from __future__ import annotations

import contextlib
import platform
import queue
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from diagnose import __version__, faq
from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext, Options, RunState
from diagnose.models import (
    CheckResult,
    Finding,
    Registry,
    Report,
    Status,
    ToolInfo,
    problem,
    skipped,
)
from diagnose.workers import WORKERS

MAX_PARALLEL = 32
BLOCKING = (Status.FAIL, Status.ERROR)


@dataclass(eq=False)
class Node:
    """One check applied to one registry (or to the host)."""

    check: Check
    registry: Registry | None
    deps: list[Node] = field(default_factory=list)
    gates: list[Node] = field(default_factory=list)  # must finish before this one starts
    dependants: list[Node] = field(default_factory=list)
    result: CheckResult | None = None
    held: tuple[Finding, float, float] | None = None  # finished, waiting on its dependencies
    started: float | None = None
    deadline: float = 0.0
    ctx: CheckContext | None = None
    blocked: bool = False

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.registry.login_server if self.registry else None, self.check.id)

    @property
    def label(self) -> str:
        return f"{self.check.id} [{self.registry.login_server}]" if self.registry else self.check.id


Listener = Callable[[str, Node], None]


def select(checks: Sequence[Check], only: Sequence[str], skip: Sequence[str]) -> list[Check]:
    """--checks keeps the named checks plus what they depend on; --skip removes."""
    by_id = {c.id: c for c in checks}
    unknown = [n for n in [*only, *skip] if n not in by_id]
    if unknown:
        raise ValueError(
            f"unknown check {', '.join(sorted(set(unknown)))} (see `diagnose list-checks`)"
        )
    wanted: set[str] = set(by_id)
    if only:
        wanted = set()
        stack = list(only)
        while stack:
            cid = stack.pop()
            if cid in wanted or cid in skip:
                continue
            wanted.add(cid)
            stack.extend(d for d in by_id[cid].depends_on if d in by_id)
    wanted -= set(skip)
    return [c for c in checks if c.id in wanted]


def _tool() -> ToolInfo:
    return ToolInfo(
        name="registry-diagnose",
        version=__version__,
        python=platform.python_version(),
        platform=f"{sys.platform}-{platform.machine()}",
    )


# Called with (check id, code) when a check returns a code it does not declare in `codes`.
# The test suite sets it to fail such a test; REGISTRY_DIAGNOSE_STRICT_CODES=1 makes the
# finding an error instead, for runs in another process. Otherwise the finding stands as given:
# a user never loses a verdict because a check's declaration lags behind its code.
on_undeclared_code: Callable[[str, str], None] | None = None
TRACE_FRAMES = 6


def undeclared_codes(check: Check, finding: Finding) -> list[str]:
    """The codes in a finding (its own and those of the issues it combines) that its check does
    not declare."""
    found = [finding.code] if finding.code else []
    extra = finding.evidence.get("codes") if isinstance(finding.evidence, dict) else None
    if isinstance(extra, list):
        found += [str(c) for c in extra]
    declared = {str(c) for c in check.codes}
    return [str(c) for c in dict.fromkeys(found) if str(c) not in declared]


def _frames(exc: BaseException) -> list[str]:
    """The last frames of a traceback, as "module.py:line in function: source", for a bug
    report (the report scrubs them like any evidence; no locals, no full paths)."""
    import traceback

    out = []
    for frame in traceback.extract_tb(exc.__traceback__)[-TRACE_FRAMES:]:
        parts = Path(frame.filename).parts
        where = "/".join(parts[-2:]) if len(parts) >= 2 else frame.filename
        line = (frame.line or "").strip()[:160]
        out.append(f"{where}:{frame.lineno} in {frame.name}: {line}")
    return out


def _guarded_run(node: Node, ctx: CheckContext) -> Finding:
    """A check that raises gets an ERROR result carrying the error text and the last frames of
    its traceback, never a crash."""
    try:
        finding = node.check.run(ctx)
        if not isinstance(finding, Finding):
            raise TypeError(f"run() returned {type(finding).__name__}, not a Finding")
        if finding.status.is_problem and (not finding.faq or not finding.code):
            raise TypeError("a warn/fail/error finding must carry a code and FAQ keys")
        undeclared = undeclared_codes(node.check, finding)
        if undeclared:
            hook = on_undeclared_code
            for code in undeclared:
                if hook is not None:
                    hook(node.check.id, code)
            if ctx.environ.get("REGISTRY_DIAGNOSE_STRICT_CODES") == "1":
                raise TypeError(f"returned code {', '.join(undeclared)}, which it does not declare")
        return finding
    except Exception as exc:
        return problem(
            Status.ERROR,
            f"the check itself failed: {type(exc).__name__}: {str(exc)[:300]}",
            code=Code.CHECK_CRASHED,
            faq=["check-health"],
            remediation=[
                "The other checks' results still stand; run again with `--format json` and "
                "attach the report to a bug report for this check: its evidence holds the last "
                "frames of the traceback (scrubbed of secrets).",
            ],
            evidence={"exception": type(exc).__name__, "traceback": _frames(exc)},
        )
    finally:
        ctx.close()


def build_nodes(checks: Sequence[Check], registries: Sequence[Registry]) -> list[Node]:
    """Host checks first, then each registry's checks, each list in dependency order."""
    nodes = [Node(c, None) for c in checks if c.scope == "host"]
    for reg in registries:
        nodes.extend(Node(c, reg) for c in checks if c.scope == "registry")
    by_key = {n.key: n for n in nodes}
    for n in nodes:
        reg_key = n.registry.login_server if n.registry else None
        for dep in (*n.check.depends_on, *n.check.starts_after):
            d = by_key.get((reg_key, dep)) or by_key.get((None, dep))
            if d is None or d is n:
                continue
            if d not in n.deps:  # a gate is a dependency too: its failure blocks this one
                n.deps.append(d)
                d.dependants.append(n)
            if dep in n.check.starts_after and d not in n.gates:
                n.gates.append(d)
    return nodes


class _Run:
    def __init__(self, nodes: list[Node], state: RunState, listener: Listener | None) -> None:
        self.nodes = nodes
        self.state = state
        self.listener = listener
        self.done: queue.Queue[tuple[Node, Finding, float, float]] = queue.Queue()
        self.running: list[Node] = []

    def notify(self, event: str, node: Node) -> None:
        if self.listener is not None:
            with contextlib.suppress(Exception):  # a broken live view must not break the run
                self.listener(event, node)

    def finish(self, node: Node, finding: Finding, end: float, waited: float = 0.0) -> None:
        if node.result is not None:
            return
        start = node.started if node.started is not None else end
        work_start = min(end, start + waited)
        node.result = CheckResult.from_finding(
            node.check.id,
            node.check.title,
            finding,
            duration_s=max(0.0, end - work_start),
            registry=node.registry.login_server if node.registry else None,
            started_s=max(0.0, work_start - self.state.started),
        )
        if node in self.running:
            self.running.remove(node)
        self.state.record(node.result)
        self.notify("finished", node)
        if node.result.status in BLOCKING or node.blocked:
            for dep in node.dependants:
                self.block(dep, node)
        for dep in node.dependants:
            self.release(dep)

    def block(self, node: Node, by: Node) -> None:
        if node.result is None:
            node.blocked = True  # and so is everything that depends on it
            reason = f"blocked by {by.check.id}"
            self.finish(node, skipped(reason, blocked_by=by.check.id), time.monotonic())

    def release(self, node: Node) -> None:
        """A held result counts once every dependency has finished without failing."""
        if node.result is None and node.held and all(d.result for d in node.deps):
            finding, end, waited = node.held
            self.finish(node, finding, end, waited)

    def start(self, node: Node) -> None:
        now = time.monotonic()
        node.started = now
        node.deadline = min(self.state.deadline, now + node.check.time_limit(self.state.options))
        ctx = CheckContext(self.state, node.registry, node.deadline)
        node.ctx = ctx
        reason = node.check.skip_reason(ctx)
        if reason:
            self.finish(node, skipped(reason), now)
            return
        self.running.append(node)
        self.notify("started", node)

        def work() -> None:
            finding = _guarded_run(node, ctx)
            self.done.put((node, finding, time.monotonic(), ctx.waited))

        WORKERS.submit(work)

    def timed_out(self, node: Node, now: float) -> Finding:
        whole_run = now >= self.state.deadline
        opts = self.state.options
        limit = (
            f"the run deadline ({opts.timeout_s:g}s, --timeout)"
            if whole_run
            else f"its {node.check.time_limit(opts):g}s time limit"
        )
        return problem(
            Status.ERROR,
            f"did not finish within {limit}",
            code=Code.CHECK_TIMEOUT,
            faq=["client-timeout", "network-connectivity"],
            remediation=[
                "Something on the path answers too slowly or not at all; the checks it depends "
                "on show where the path still works.",
                "Run again with a larger --timeout to see whether it is slow rather than stuck.",
            ],
        )

    def take(self, done: tuple[Node, Finding, float, float]) -> None:
        """A check's own answer: held until its dependencies are in (see `release`)."""
        node, finding, end, waited = done
        if node.result is None and node.held is None:
            if node in self.running:
                self.running.remove(node)
            node.held = (finding, end, waited)
            self.release(node)

    def loop(self) -> None:
        pending = list(self.nodes)
        while True:
            for node in list(pending):
                if len(self.running) >= MAX_PARALLEL:
                    break
                if node.result is not None:  # blocked by a failed dependency: never starts
                    pending.remove(node)
                elif all(g.result is not None for g in node.gates):
                    pending.remove(node)
                    self.start(node)
            waiting = [n for n in self.nodes if n.result is None and n.started is not None]
            if not waiting and not pending:
                return
            now = time.monotonic()
            active = [n for n in waiting if n.held is None]
            next_deadline = min(
                (_deadline(n, self.state) for n in active), default=self.state.deadline
            )
            next_deadline = min(next_deadline, now + 0.25)  # waiting checks move their deadline
            try:
                self.take(self.done.get(timeout=max(0.0, next_deadline - now)))
                while True:  # and whatever else finished meanwhile, before looking again
                    self.take(self.done.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            if now >= next_deadline:  # a time limit may have passed: end what overran it
                for node in [n for n in self.nodes if n.result is None and n.started is not None]:
                    if node.held is None and _deadline(node, self.state) <= now:
                        self.finish(node, self.timed_out(node, now), now)
            if now >= self.state.deadline:
                for node in self.nodes:
                    if node.result is None:
                        if node.started is None:
                            node.started = now
                            self.finish(node, _not_started(self.state.options.timeout_s), now)
                        elif node.held is not None:
                            self.release(node)
                        if node.result is None:
                            self.finish(node, self.timed_out(node, now), now)
                return


def _deadline(node: Node, state: RunState) -> float:
    """When the runner gives up on a node: its own limit, moved by time spent waiting."""
    ctx = node.ctx
    if ctx is None:
        return node.deadline
    if ctx.waiting_since is not None:
        return state.deadline
    return ctx.deadline


def run(
    checks: Sequence[Check],
    registries: Sequence[Registry],
    options: Options,
    *,
    target_source: str = "argument",
    listener: Listener | None = None,
    notes: Sequence[str] = (),
) -> Report:
    """Run checks against every registry (and host checks once) and build the report."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    state = RunState(options)
    nodes = build_nodes(checks, registries)
    state.expect(n.key for n in nodes)
    state.registries = tuple(registries)
    try:
        _Run(nodes, state, listener).loop()
    finally:
        state.close()
    results = tuple(n.result for n in nodes if n.result is not None)
    return Report(
        tool=_tool(),
        registries=tuple(registries),
        target_source=target_source,
        started_at=started_at,
        duration_s=time.monotonic() - state.started,
        results=results,
        faq=faq.load(),
        notes=tuple(notes),
    )


def _not_started(timeout_s: float) -> Finding:
    return problem(
        Status.ERROR,
        f"not run: the run deadline ({timeout_s:g}s, --timeout) came first",
        code=Code.CHECK_TIMEOUT,
        faq=["client-timeout"],
        remediation=["Run again with a larger --timeout."],
    )
