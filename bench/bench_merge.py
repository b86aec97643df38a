"""`diagnose merge` on a whole fleet's logs: N reports as `kubectl logs --prefix` prints them (one
JSON line per pod), merged by the CLI as a process; its wall time and peak memory (max RSS),
for a small and a large fleet side by side, so that flat memory shows as equal figures.

The reports are made from one real report (a run against a loopback port nothing listens on,
so no traffic leaves the machine), varied per node: its name, and which of a few causes it
ran into (a healthy node, DNS, TLS, a missing tag, a refused port).

    python bench/bench_merge.py            # 5,000 reports (and 500 beside it)
    python bench/bench_merge.py --reports 20000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAUSES = [
    None,
    ("dns", "CONNECTIVITY_DNS_ERROR"),
    ("tls", "CONNECTIVITY_SSL_ERROR"),
    ("manifest", "IMAGE_TAG_NOT_FOUND"),
    None,
    ("tcp", "CONNECTIVITY_TCP_REFUSED"),
]


def real_report(work: Path) -> dict[str, Any]:
    empty = work / "root"
    (empty / "etc").mkdir(parents=True, exist_ok=True)
    (empty / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "diagnose",
            "check-health",
            "127.0.0.1:1/team/app:1.0",
            "--host-root",
            str(empty),
            "-f",
            "json",
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    return dict(json.loads(p.stdout))


def fleet_logs(template: dict[str, Any], n: int, path: Path) -> int:
    """n reports, one line each behind a pod prefix; the file's size."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            report = json.loads(json.dumps(template))
            report["node"] = {"name": f"aks-nodepool1-{i:06d}", "source": "env"}
            cause = CAUSES[i % len(CAUSES)]
            for c in report["checks"]:
                if c["status"] in ("fail", "error"):
                    c["status"], c["code"] = "skip", None
                if cause and c["id"] == cause[0]:
                    c["status"], c["code"] = "fail", cause[1]
                    c["faq"] = c["faq"] or ["network-connectivity"]
            report["summary"]["status"] = "fail" if cause else "pass"
            fh.write(f"[pod/registry-diagnose-{i:05x}/diagnose] ")
            fh.write(json.dumps(report, separators=(",", ":")) + "\n")
    return path.stat().st_size


def merge(path: Path) -> tuple[float, float, dict[str, Any]]:
    """`diagnose merge - -f json` fed the file, as a process: (seconds, its own peak RSS in
    MB from wait4's rusage, the fleet it printed)."""
    out = path.with_suffix(".fleet.json")
    with path.open("rb") as fh, out.open("wb") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "diagnose", "merge", "-", "-f", "json"],
            stdin=fh,
            stdout=sink,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"merge exited {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024, json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=5000)
    ap.add_argument("--small", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        work = Path(tmp)
        template = real_report(work)
        print(f"one report: {len(template['checks'])} checks, {len(json.dumps(template))} bytes")
        for n in (args.small, args.reports):
            path = work / f"{n}.log"
            size = fleet_logs(template, n, path)
            seconds, peak, fleet = merge(path)
            assert fleet["reports"] == n, fleet["reports"]
            print(
                f"{n:>6} reports  {size / 1e6:6.1f} MB of logs  merged in {seconds:5.2f} s "
                f"({n / seconds:,.0f}/s)  peak memory {peak:5.1f} MB  "
                f"{len(fleet['groups'])} groups, {len(fleet['failed'])} failed"
            )
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
