"""Third-party checks whose wiring is wrong, as plugin authors get it wrong."""

from __future__ import annotations

from enum import StrEnum

from diagnose.check import Check
from diagnose.context import CheckContext
from diagnose.models import Finding, Status, passed, problem


class Codes(StrEnum):
    DECLARED = "WIRING_DECLARED"
    OTHER = "WIRING_NOT_DECLARED"


class UnknownDependency(Check):
    id = "needs-nothing-real"
    title = "Depends on a check nobody registered"
    depends_on = ("no-such-check",)

    def run(self, ctx: CheckContext) -> Finding:
        return passed("never runs")


class CycleA(Check):
    id = "cycle-a"
    title = "One half of a cycle"
    depends_on = ("cycle-b",)

    def run(self, ctx: CheckContext) -> Finding:
        return passed("never runs")


class CycleB(Check):
    id = "cycle-b"
    title = "The other half"
    starts_after = ("cycle-a",)

    def run(self, ctx: CheckContext) -> Finding:
        return passed("never runs")


class AfterCycle(Check):
    id = "after-cycle"
    title = "Leans on a refused check"
    depends_on = ("cycle-a",)

    def run(self, ctx: CheckContext) -> Finding:
        return passed("never runs")


class UndeclaredCode(Check):
    id = "undeclared"
    title = "Returns a code it does not declare"
    scope = "host"
    codes = (Codes.DECLARED,)

    def run(self, ctx: CheckContext) -> Finding:
        return problem(Status.WARN, "a problem", code=Codes.OTHER, faq=["check-health"])


class LeakyCrash(Check):
    id = "leaky-crash"
    title = "Crashes with a secret on the failing line"
    scope = "host"

    def run(self, ctx: CheckContext) -> Finding:
        raise RuntimeError("Authorization: Bearer PLANTEDtracebacktoken0123 pw=PLANTED-pw")
