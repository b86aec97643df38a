"""What does a healthy image verdict cost, next to a Go client asking the same registry?

Starts the real distribution registry (TLS, test CA) on loopback with a real image, then, in
alternation, runs the whole process of:
- `skopeo inspect docker://REGISTRY/team/app:1.4` (a Go client reading the same manifest and
  config), and
- `diagnose check-health REGISTRY/team/app:1.4` (the healthy image verdict, default checks),
and reports for each the median wall time, CPU time (user + system of the process and its
children) and peak resident memory (the kernel's ru_maxrss for the child). Then it runs N
verdicts of the same image in one process, as `serve` and `watch` do (checks loaded once, the
first verdict left out), and reports the CPU each one took.

    python3 bench/bench_cpu.py [--runs 15] [--verdicts 50] [--this PY]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import lab  # the real parts the tests use  # noqa: E402

IN_PROCESS = """
import json, sys, time
from pathlib import Path
from diagnose import plugins, runner
from diagnose.context import Options
from diagnose.target import image_target

ref, ca, root, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
checks, _ = plugins.load_checks()
options = Options(ca_bundle=Path(ca), host_root=Path(root))
target = image_target(ref, False)
cpu = []
statuses = set()
for i in range(n + 1):
    t0 = time.process_time()
    report = runner.run(checks, [target], options)
    took = time.process_time() - t0
    statuses.add(report.status.value)
    if i:  # the first verdict pays for imports and the first handshakes
        cpu.append(took)
print(json.dumps({"cpu": cpu, "statuses": sorted(statuses)}))
"""


def _hwm_kib(pid: int) -> int:
    """The process's resident high-water mark (VmHWM); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MiB, exit code) of one process and what it waited for.

    The peak is the process's own VmHWM, sampled every millisecond until it exits: the kernel's
    ru_maxrss of a child also counts the pages it held before exec, a copy of this (much
    larger) bench process, and would report that for every program alike."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _hwm_kib(proc.pid))
        time.sleep(0.001)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, peak / 1024, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--verdicts", type=int, default=50)
    ap.add_argument("--this", help="the Python whose diagnose is measured (default: this one)")
    args = ap.parse_args()
    py = args.this or sys.executable
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        print("skopeo is not installed (Debian package skopeo)", file=sys.stderr)
        return 2
    import compileall

    for pkg in ("diagnose", "checks", "reports"):
        compileall.compile_dir(str(ROOT / pkg), quiet=1)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        pki = lab.make_pki(tmp / "pki")
        reg = lab.start_registry(tmp / "registry", *pki.leaf("good", *lab.GOOD_NAMES))
        try:
            base = f"https://127.0.0.1:{reg.port}"
            lab.push_real_image(base, "team/app", "1.4", ca_file=pki.ca_file, payload=1 << 20)
            certs = tmp / "certs"
            certs.mkdir()
            shutil.copy(pki.ca_file, certs / "ca.crt")
            ref = f"127.0.0.1:{reg.port}/team/app:1.4"
            env = lab.clean_env(tmp)
            env.pop("REGISTRY_DIAGNOSE_STRICT_CODES", None)
            theirs = [skopeo, "inspect", "--cert-dir", str(certs), f"docker://{ref}"]
            ours = [py, "-m", "diagnose", "check-health", ref, "--ca-bundle", str(pki.ca_file)]
            ours += ["-f", "json", "-q", "--host-root", str(lab.empty_root())]
            rows: dict[str, list[tuple[float, float, float, int]]] = {"skopeo": [], "ours": []}
            for _ in range(args.runs):
                rows["skopeo"].append(timed(theirs, env, tmp))
                rows["ours"].append(timed(ours, env, tmp))
            print(f"whole process, {ref}, {args.runs} alternating runs each (medians)")
            print(f"{'':<8} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9}  exit codes")
            med: dict[str, list[float]] = {}
            for name, got in rows.items():
                med[name] = [statistics.median(x[i] for x in got) for i in range(3)]
                codes = sorted({x[3] for x in got})
                print(
                    f"{name:<8} {med[name][0]:>8.3f} {med[name][1]:>8.3f} {med[name][2]:>9.1f}"
                    f"  {codes}"
                )
            ratio = [med["ours"][i] / med["skopeo"][i] for i in range(3)]
            print(f"{'ratio':<8} {ratio[0]:>8.2f} {ratio[1]:>8.2f} {ratio[2]:>9.2f}")
            p = subprocess.run(
                [py, "-c", IN_PROCESS, ref, str(pki.ca_file), str(lab.empty_root()),
                 str(args.verdicts)],
                capture_output=True, text=True, env={**env, "PYTHONPATH": ""}, cwd=str(tmp),
                timeout=600,
            )  # fmt: skip
            if p.returncode != 0:
                print(p.stderr[-2000:], file=sys.stderr)
                return 1
            import json

            data = json.loads(p.stdout)
            cpu = [c * 1000 for c in data["cpu"]]
            print(
                f"in process, {len(cpu)} verdicts after the first: CPU per verdict median "
                f"{statistics.median(cpu):.1f} ms, mean {statistics.mean(cpu):.1f} ms, "
                f"min {min(cpu):.1f} ms (outcomes: {', '.join(data['statuses'])})"
            )
        finally:
            reg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
