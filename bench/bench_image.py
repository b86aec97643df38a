"""How long does `check-health REGISTRY/REPO:TAG` take against a healthy registry?

Starts the real distribution registry (TLS, test CA) on loopback with a real image, then times
the whole command, as a process, several times for each Python given (`--python`, repeatable):
so an earlier release installed in its own virtual environment and this tree are measured on
the same registry, the same image and the same machine, in alternation. Medians are what to
quote. `--registry-only` times the plain `check-health REGISTRY` on the same registry instead
(no image named): the healthy run every user starts with.

    python3 bench/bench_image.py [--runs 9] [--registry-only] [--this PY]
        [--python /path/to/old/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--python", action="append", default=[])
    ap.add_argument("--require-push", action="store_true")
    ap.add_argument("--registry-only", action="store_true", help="no image: check-health REGISTRY")
    ap.add_argument("--this", help="the Python whose diagnose is this tree (default: this one)")
    args = ap.parse_args()
    pythons = [args.this or sys.executable, *args.python]
    # an installed release has its bytecode compiled by pip; give this tree the same (an
    # environment with PYTHONDONTWRITEBYTECODE would otherwise compile it on every run)
    import compileall

    for pkg in ("diagnose", "checks", "reports"):
        compileall.compile_dir(str(Path(__file__).resolve().parent.parent / pkg), quiet=1)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        pki = lab.make_pki(tmp / "pki")
        reg = lab.start_registry(tmp / "registry", *pki.leaf("good", *lab.GOOD_NAMES))
        try:
            base = f"https://127.0.0.1:{reg.port}"
            lab.push_real_image(base, "team/app", "1.4", ca_file=pki.ca_file, payload=1 << 20)
            env = lab.clean_env(tmp)
            ref = f"127.0.0.1:{reg.port}" + ("" if args.registry_only else "/team/app:1.4")
            cmd = ["check-health", ref, "--ca-bundle", str(pki.ca_file), "-f", "json", "-q"]
            cmd += ["--host-root", str(lab.empty_root())]
            if args.require_push:
                cmd += ["--require", "push"]
            walls: dict[str, list[float]] = {p: [] for p in pythons}
            runs: dict[str, list[float]] = {p: [] for p in pythons}
            statuses: dict[str, set[str]] = {p: set() for p in pythons}
            for _ in range(args.runs):
                for py in pythons:
                    t0 = time.monotonic()
                    p = subprocess.run(
                        [py, "-m", "diagnose", *cmd],
                        capture_output=True,
                        text=True,
                        env=env,
                        timeout=120,
                        cwd=str(tmp),
                    )
                    walls[py].append(time.monotonic() - t0)
                    report = json.loads(p.stdout)
                    runs[py].append(report["duration_s"])
                    statuses[py].add(f"rc={p.returncode} {report['summary']['status']}")
            print(f"check-health {ref} ({args.runs} runs each, alternating)")
            print(f"{'python':<50} {'process s':>10} {'run s':>8}  outcome")
            for py in pythons:
                print(
                    f"{py:<50} {statistics.median(walls[py]):>10.3f} "
                    f"{statistics.median(runs[py]):>8.3f}  {', '.join(sorted(statuses[py]))}"
                )
            if len(pythons) > 1:
                now, before = (
                    statistics.median(runs[pythons[0]]),
                    statistics.median(runs[pythons[1]]),
                )
                proc = statistics.median(walls[pythons[0]]) / statistics.median(walls[pythons[1]])
                print(
                    f"ratio (this tree / {pythons[1]}): run {now / before:.2f}, process {proc:.2f}"
                )
        finally:
            reg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
