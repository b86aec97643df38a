"""The interface every report format implements (registered in `registry_diagnose.reports`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from diagnose.models import Report


@dataclass(frozen=True)
class RenderOptions:
    color: bool = False
    width: int = 100
    # CI formats mark warnings as failures when the run was asked to fail on them
    fail_on_warn: bool = False


class Renderer(Protocol):
    """Turns a finished report into text; adding a format never touches a check."""

    def render(self, report: Report, options: RenderOptions) -> str: ...
