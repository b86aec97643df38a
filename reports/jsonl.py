"""The JSON report on one line (JSON Lines): what a pod prints, so that `kubectl logs` holds one
report per line and `diagnose merge -` reads a whole cluster's logs at once."""

from __future__ import annotations

import json

from diagnose.models import Report
from diagnose.render import RenderOptions


class JsonLineReport:
    name = "jsonl"

    def render(self, report: Report, options: RenderOptions) -> str:
        return json.dumps(report.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
