"""The machine-readable report (schema registry-diagnose/report/v1)."""

from __future__ import annotations

import json

from diagnose.models import Report
from diagnose.render import RenderOptions


class JsonReport:
    name = "json"

    def render(self, report: Report, options: RenderOptions) -> str:
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
