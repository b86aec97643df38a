"""A third-party check package, as someone outside the project would write it."""

from __future__ import annotations

import time

from diagnose.check import Check
from diagnose.context import CheckContext
from diagnose.facts import API_ANSWER
from diagnose.models import Finding, Status, passed, problem


class SleepyCheck(Check):
    id = "sleepy"
    title = "A check that never returns in time"
    timeout_s = 2.0

    def run(self, ctx: CheckContext) -> Finding:
        time.sleep(120)
        return passed("woke up")


class CrashyCheck(Check):
    id = "crashy"
    title = "A check with a bug"

    def run(self, ctx: CheckContext) -> Finding:
        raise RuntimeError("boom in a plugin")


class HostFactCheck(Check):
    id = "host-fact"
    title = "A host-level check from a plugin"
    scope = "host"

    def run(self, ctx: CheckContext) -> Finding:
        hosts = ctx.host_path("/etc/hosts")
        if not hosts.exists():
            return problem(
                Status.WARN, "no hosts file", code="NO_HOSTS_FILE", faq=["network-connectivity"]
            )
        return passed(f"hosts file has {len(hosts.read_text().splitlines())} lines")


class AfterApiCheck(Check):
    id = "after-api"
    title = "Depends on a built-in check"
    depends_on = ("api",)

    def run(self, ctx: CheckContext) -> Finding:
        ctx.result("api")  # wait for it, then read what it left for others
        answer = ctx.fact(API_ANSWER)
        return passed(f"api said {answer.status if answer else None}")


class AcrOnlyCheck(Check):
    id = "acr-only"
    title = "Applies to ACR login servers only"
    acr_only = True

    def run(self, ctx: CheckContext) -> Finding:
        return passed(f"ran for {ctx.registry.login_server if ctx.registry else '?'}")
