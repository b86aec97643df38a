"""The interface a check implements, ours and third parties' alike.

A check's identity and wiring (id, title, dependencies, timeout, the FAQ keys and codes it may
emit) are class-level data, so the runner, `list-checks` and the tests can read them without
running anything; `run` holds only the logic.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from diagnose.context import CheckContext, Options
    from diagnose.models import Finding

Scope = Literal["registry", "host"]


class Check:
    """Subclass this, fill the class attributes, implement `run`, and register an entry point
    in the `registry_diagnose.checks` group."""

    id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    depends_on: ClassVar[tuple[str, ...]] = ()
    # Dependencies whose results must be in before the check starts at all. The others are
    # awaited inside `run` (`ctx.result`), so that work needing no answer from them goes ahead
    # at once; a gate saves that speculative work (imports, connections) when the gate fails,
    # and the check is then reported blocked without having run.
    starts_after: ClassVar[tuple[str, ...]] = ()
    # Where the check sits in reports (lower first); dependencies always come before it.
    order: ClassVar[int] = 1000
    timeout_s: ClassVar[float] = 10.0
    # "registry": once per registry checked; "host": once per run, about this machine.
    scope: ClassVar[Scope] = "registry"
    acr_only: ClassVar[bool] = False
    # about one image: skipped (NO_IMAGE) when the run names none
    needs_image: ClassVar[bool] = False
    # the container runtimes whose pulls this check is about (docker, podman, crio,
    # containerd); empty: every client's. `--runtime` leaves out checks about other runtimes.
    runtimes: ClassVar[tuple[str, ...]] = ()
    faq_keys: ClassVar[tuple[str, ...]] = ()
    # every code run() may return (an enumeration: ours is diagnose.codes.Code)
    codes: ClassVar[tuple[StrEnum, ...]] = ()
    # whether `explain` may suggest running it to tell causes apart (False for measurements
    # that take long or move data)
    suggest: ClassVar[bool] = True

    def skip_reason(self, ctx: CheckContext) -> str | None:
        """Why this check does not apply here, or None when it does."""
        if self.acr_only and (ctx.registry is None or not ctx.registry.is_acr):
            return "applies to Azure Container Registry login servers only"
        if self.needs_image and (ctx.registry is None or ctx.registry.image is None):
            from diagnose.context import NO_IMAGE

            return NO_IMAGE
        chosen = ctx.options.runtimes
        if chosen and self.runtimes and not set(chosen) & set(self.runtimes):
            return f"about {', '.join(self.runtimes)}, not the runtime chosen ({', '.join(chosen)})"
        return None

    def time_limit(self, options: Options) -> float:
        """How long this check may take; override when an option changes it."""
        return self.timeout_s

    def run(self, ctx: CheckContext) -> Finding:
        raise NotImplementedError
