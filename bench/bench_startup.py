"""How fast does the tool start, and how fast does it answer when the name does not resolve?

Whole-process wall times, median (and minimum) of several runs, for `diagnose --help` and for a
check-health on a short name that fails at DNS: a dnsmasq on loopback refuses the query, once
with host files from an empty fixture root and once looking at this machine itself. Beside them
stand two floors measured the same way: a bare interpreter, and an interpreter that only imports
the libraries such a run cannot do without (typer, importlib.metadata, dnspython).

Give `--python` the interpreter of another installation (a venv holding an earlier release) to
time both side by side; runs alternate between them, so a machine that slows down for a while
slows both. Bytecode is compiled first, as an installed release has it.

    python3 bench/bench_startup.py [--runs 21] [--python /path/to/venv/bin/python ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import lab  # the real parts the tests use

FLOOR_IMPORTS = "import typer, importlib.metadata, dns.resolver"


def _script(python: str) -> str:
    """The console script next to an interpreter (the real one, not a pyenv shim)."""
    found = Path(python).parent / "diagnose"
    if not found.exists():
        raise SystemExit(f"no diagnose console script next to {python}")
    return str(found)


def _compile(python: str) -> None:
    """Compiled bytecode for the package wherever that interpreter imports it from."""
    code = (
        "import compileall, diagnose, checks, reports, os\n"
        "for m in (diagnose, checks, reports):\n"
        "    compileall.compile_dir(os.path.dirname(m.__file__), quiet=1)\n"
    )
    subprocess.run([python, "-c", code], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--python", action="append", default=[], help="another installation")
    args = ap.parse_args()
    pythons = [sys.executable, *args.python]
    for py in pythons:
        _compile(py)
    with tempfile.TemporaryDirectory(prefix="rd-startup-") as t:
        tmp = Path(t)
        dns = lab.start_dnsmasq(tmp / "dns", *lab.TEST_ZONE)
        env = lab.clean_env(tmp)
        empty = str(lab.empty_root())
        dns_fail = ["check-health", "nosuchreg", "--nameserver", dns.nameserver, "-q"]
        scenarios: list[tuple[str, bool]] = [
            ("python -c pass", False),
            (f"python -c '{FLOOR_IMPORTS}'", False),
            ("diagnose --help", True),
            ("check-health nosuchreg (fails at DNS), --host-root empty", True),
            ("check-health nosuchreg (fails at DNS), this machine", True),
        ]

        def command(py: str, i: int) -> list[str]:
            return [
                [py, "-c", "pass"],
                [py, "-c", FLOOR_IMPORTS],
                [_script(py), "--help"],
                [_script(py), *dns_fail, "--host-root", empty],
                [_script(py), *dns_fail],
            ][i]

        times: dict[tuple[str, int], list[float]] = {}
        codes: dict[tuple[str, int], int] = {}
        try:
            for _ in range(args.runs):
                for i in range(len(scenarios)):
                    for py in pythons:
                        t0 = time.monotonic()
                        p = subprocess.run(command(py, i), capture_output=True, env=env, cwd=t)
                        times.setdefault((py, i), []).append(time.monotonic() - t0)
                        codes[(py, i)] = p.returncode
        finally:
            dns.stop()
    print(f"whole-process wall time, median (min) of {args.runs} runs, seconds")
    header = "".join(f"  {Path(py).parent.parent.name[:18]:>18}" for py in pythons)
    print(f"{'':58}{header}")
    for i, (name, _) in enumerate(scenarios):
        cells = "".join(
            f"  {statistics.median(times[(py, i)]):>8.3f} ({min(times[(py, i)]):.3f})"
            for py in pythons
        )
        rcs = ",".join(str(codes[(py, i)]) for py in pythons)
        print(f"{name:<58}{cells}  rc {rcs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
