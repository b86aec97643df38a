"""Clock: this host's time against the registry's, since tokens are valid for a time window."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from diagnose.check import Check
from diagnose.codes import Code
from diagnose.context import CheckContext
from diagnose.facts import API_ANSWER
from diagnose.models import Finding, Status, passed, problem, skipped

MAX_SKEW_S = 300.0


class ClockCheck(Check):
    id = "clock"
    title = "Clock skew"
    order = 60
    depends_on = ("api",)
    starts_after = ("dns",)
    timeout_s = 2.0
    faq_keys = ("clock-skew",)
    codes = (Code.CLOCK_SKEW,)

    def run(self, ctx: CheckContext) -> Finding:
        ctx.result("api")
        answer = ctx.fact(API_ANSWER)
        if answer is None:
            return skipped("the api check had no answer: no Date header to compare with")
        date, received = answer.date, round(answer.received_at, 3)
        if not date:
            return skipped("the registry sent no Date header")
        try:
            server = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return skipped(f"the registry's Date header does not parse: {date[:60]!r}")
        skew = float(received) - server
        evidence = {"registry_date": date, "local_time": received, "skew_s": round(skew, 1)}
        direction = "ahead of" if skew > 0 else "behind"
        if abs(skew) > MAX_SKEW_S:
            return problem(
                Status.WARN,
                f"this host's clock is {abs(skew) / 60:.1f} minutes {direction} the registry's",
                code=Code.CLOCK_SKEW,
                faq=["clock-skew"],
                remediation=[
                    "Synchronise the clock (`timedatectl set-ntp true`, or `chronyc makestep`).",
                    "Then log in again: tokens issued with a wrong clock may look expired.",
                ],
                evidence=evidence,
            )
        return passed(f"within {abs(skew):.0f}s of the registry's clock", **evidence)
