"""How fast is check-health against a healthy local registry, and how fast does the CLI start?

Starts the real distribution registry (TLS, test CA) and dnsmasq on loopback, runs the whole
check-health several times, and prints for each run the wall time of the run next to its slowest
single check, plus the cold start of `diagnose --help`. Medians are what to quote.

    python3 bench/bench_check_health.py [--runs 7]
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

AUTH_STEPS = (
    "credentials",
    "auth-challenge",
    "refresh-token",
    "access-token",
    "scope",
    "authorized-request",
)


def auth_scenario(tmp: Path, pki: lab.Pki, env: dict[str, str], runs: int) -> None:
    """The same against the registry in token mode, with the test token server and a password."""
    from tests import tokenserver

    signer = tokenserver.Signer.create(tmp)
    ts = tokenserver.TokenServer(signer, service="registry.test", users={"alice": "pw-alice"})
    ts.grant("alice", "team/app", "pull", "push")
    with tokenserver.serve(ts, *pki.leaf("auth", "127.0.0.1", "localhost")):
        reg = lab.start_registry(
            tmp / "token-registry",
            *pki.leaf("good", *lab.GOOD_NAMES),
            extra=tokenserver.token_auth_config(ts.realm, ts.service, signer.cert_file),
        )
        try:
            now = int(time.time())
            setup = signer.jwt(
                {
                    "iss": tokenserver.ISSUER,
                    "sub": "setup",
                    "aud": ts.service,
                    "exp": now + 600,
                    "nbf": 0,
                    "iat": now,
                    "access": [
                        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
                    ],
                }
            )
            lab.push_image(
                f"https://127.0.0.1:{reg.port}",
                "team/app",
                "1.0",
                ca_file=pki.ca_file,
                headers={"Authorization": f"Bearer {setup}"},
            )
            rows = []
            for _ in range(runs):
                r = lab.diagnose(
                    "check-health",
                    f"127.0.0.1:{reg.port}",
                    "--ca-bundle",
                    str(pki.ca_file),
                    "--repository",
                    "team/app",
                    "--require",
                    "push",
                    "-u",
                    "alice",
                    "--password-stdin",
                    "-f",
                    "json",
                    "-q",
                    "--skip",
                    "blob-redirect",
                    env=env,
                    stdin="pw-alice",
                )
                report = json.loads(r.out)
                checks = {c["id"]: c for c in report["checks"]}
                auth_s = sum(checks[c]["duration_s"] for c in AUTH_STEPS if c in checks)
                slowest = max(report["checks"], key=lambda c: c["duration_s"])
                rows.append(
                    (
                        report["duration_s"],
                        slowest["duration_s"],
                        slowest["id"],
                        auth_s,
                        report["summary"]["status"],
                    )
                )
        finally:
            reg.stop()
    print()
    print("check-health with the token flow (registry in token mode, password, push required)")
    print(
        f"{'run':>3}  {'run wall s':>10}  {'slowest check s':>21}  {'auth steps s':>12}  "
        f"{'auth share':>10}  status"
    )
    for i, (run_s, slow_s, slow_id, auth_s, status) in enumerate(rows, 1):
        print(
            f"{i:>3}  {run_s:>10.3f}  {slow_s:>7.3f} {slow_id:<13}  {auth_s:>12.3f}  "
            f"{auth_s / run_s:>9.0%}  {status}"
        )
    med = statistics.median
    print(
        f"median: run {med(r[0] for r in rows):.3f}s, slowest check "
        f"{med(r[1] for r in rows):.3f}s, auth steps {med(r[3] for r in rows):.3f}s "
        f"(sum of the six steps' own work; they overlap the network checks)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rd-bench-"))
    pki = lab.make_pki(tmp / "pki")
    reg = lab.start_registry(tmp / "registry", *pki.leaf("good", *lab.GOOD_NAMES))
    dns = lab.start_dnsmasq(tmp / "dns", *lab.TEST_ZONE)
    home = tmp / "home"
    home.mkdir()
    hosts = tmp / "root" / "etc"
    hosts.mkdir(parents=True)
    (hosts / "hosts").write_text("127.0.0.1 localhost\n")
    env = lab.clean_env(home)
    script = shutil.which("diagnose")
    try:
        rows = []
        for _ in range(args.runs):
            t0 = time.monotonic()
            r = lab.diagnose(
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
                env=env,
            )
            process_s = time.monotonic() - t0
            report = json.loads(r.out)
            assert r.rc == 0, r.out
            slowest = max(report["checks"], key=lambda c: c["duration_s"])
            rows.append((report["duration_s"], slowest["duration_s"], slowest["id"], process_s))
        print("check-health against the healthy local registry (registry.test via dnsmasq, TLS)")
        print(
            f"{'run':>3}  {'run wall s':>10}  {'slowest check s':>15}  {'ratio':>5}  "
            f"{'process s':>9}"
        )
        for i, (run_s, slow_s, slow_id, proc_s) in enumerate(rows, 1):
            print(
                f"{i:>3}  {run_s:>10.3f}  {slow_s:>9.3f} {slow_id:<5}  {run_s / slow_s:>5.2f}  "
                f"{proc_s:>9.3f}"
            )
        med_run = statistics.median(r[0] for r in rows)
        med_slow = statistics.median(r[1] for r in rows)
        print(
            f"median: run {med_run:.3f}s, slowest check {med_slow:.3f}s, "
            f"ratio {med_run / med_slow:.2f} (target <= 1.5)"
        )

        auth_scenario(tmp, pki, env, args.runs)

        def cold(cmd: list[str], n: int = 10) -> float:
            times = []
            for _ in range(n):
                t0 = time.monotonic()
                subprocess.run(cmd, capture_output=True, env=env, check=True)
                times.append(time.monotonic() - t0)
            return statistics.median(times)

        real_script = None
        if script:
            # a pyenv shim is a bash script that re-execs the real console script: time both
            text = Path(script).read_text(errors="replace")[:200]
            if "pyenv" in text:
                found = Path(sys.executable).parent / "diagnose"
                real_script = str(found) if found.exists() else None
            else:
                real_script = script
        if real_script:
            help_s = cold([real_script, "--help"])
            print(f"`diagnose --help` cold start, console script: {help_s:.3f}s (target < 0.3 s)")
        print(
            f"`python -m diagnose --help` cold start: "
            f"{cold([sys.executable, '-m', 'diagnose', '--help']):.3f}s"
        )
        print(f"bare `python -c pass` on this machine: {cold([sys.executable, '-c', 'pass']):.3f}s")
    finally:
        reg.stop()
        dns.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
