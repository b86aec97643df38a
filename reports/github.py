"""GitHub Actions workflow commands: an ::error:: or ::warning:: line per problem and a closing
::notice:: line. The CLI writes the job summary (Markdown) when $GITHUB_STEP_SUMMARY is set."""

from __future__ import annotations

from diagnose.models import Report, Status
from diagnose.render import RenderOptions


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


class GithubReport:
    name = "github"

    def render(self, report: Report, options: RenderOptions) -> str:
        lines = []
        for r in report.results:
            if not r.status.is_problem:
                continue
            level = (
                "error"
                if (r.status in (Status.FAIL, Status.ERROR) or options.fail_on_warn)
                else "warning"
            )
            title = f"{r.id}" + (f" ({r.registry})" if r.registry else "") + f" {r.code}"
            message = r.summary
            if r.remediation:
                message += "\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(r.remediation, 1))
            if r.faq:
                message += "\nFAQ: " + ", ".join(r.faq)
            lines.append(f"::{level} title={escape_property(title)}::{escape_data(message)}")
        counts = report.counts()
        tally = ", ".join(f"{counts[s.value]} {s.value}" for s in Status if counts[s.value])
        lines.append(
            f"::notice title=registry-diagnose::"
            f"{escape_data(f'{report.status.value.upper()}: {tally}')}"
        )
        return "\n".join(lines) + "\n"
