"""Is this tree slower than an earlier release on a healthy local registry?

Starts the real distribution registry (TLS, test CA) and dnsmasq once, then runs the same
check-health with each installation in turn, alternating, and prints for each the median (and
minimum) of the whole-process time and of the run's own reported duration. Each `--python` is
the interpreter of a virtual environment holding an installed release; its source tree, when
given after a colon, becomes the working directory (so `-m diagnose` finds that tree).

    python3 bench/bench_compare_healthy.py --runs 21 \\
        --python /venv-old/bin/python[:/src-old] --python /venv-new/bin/python[:/src-new]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import lab  # the real parts the tests use


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--python", action="append", required=True, help="PYTHON[:SOURCE_TREE]")
    args = ap.parse_args()
    installs = []
    for spec in args.python:
        py, _, src = spec.partition(":")
        installs.append((py, src or None))
    tmp = Path(tempfile.mkdtemp(prefix="rd-compare-"))
    pki = lab.make_pki(tmp / "pki")
    reg = lab.start_registry(tmp / "registry", *pki.leaf("good", *lab.GOOD_NAMES))
    dns = lab.start_dnsmasq(tmp / "dns", *lab.TEST_ZONE)
    etc = tmp / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    home = tmp / "home"
    home.mkdir()
    env = lab.clean_env(home)
    args_run = [
        "check-health",
        f"registry.test:{reg.port}",
        "--nameserver",
        dns.nameserver,
        "--ca-bundle",
        str(pki.ca_file),
        "--host-root",
        str(tmp / "root"),
        "-f",
        "json",
        "-q",
    ]
    runs: dict[str, list[float]] = {}
    process: dict[str, list[float]] = {}
    try:
        for _ in range(args.runs):
            for py, src in installs:
                t0 = time.monotonic()
                p = subprocess.run(
                    [py, "-m", "diagnose", *args_run],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=src or str(tmp),
                )
                wall = time.monotonic() - t0
                if p.returncode != 0:
                    raise SystemExit(f"{py}: exit {p.returncode}: {p.stdout[-400:]}")
                runs.setdefault(py, []).append(json.loads(p.stdout)["duration_s"])
                process.setdefault(py, []).append(wall)
    finally:
        reg.stop()
        dns.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"healthy registry, TLS, median (min) of {args.runs} runs, seconds")
    for py, _ in installs:
        print(
            f"{py}: process {statistics.median(process[py]):.3f} ({min(process[py]):.3f})  "
            f"run {statistics.median(runs[py]):.3f} ({min(runs[py]):.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
