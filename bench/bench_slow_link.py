"""How many sequential round trips does a run make on a slow link, against the fewest the
question needs?

The registry (and, for the token flow, the token server) sit behind user-space delay proxies
(bench/delayproxy.py: netem is absent from this machine kind's kernel) that hold every chunk
for half the round trip each way. Each scenario runs at 0, 100 and 300 ms round trips; the
implied number of sequential round trips is (run time at RTT - run time at 0) / RTT. The floor
is counted from the requests themselves: the registry's access log and the token server's log
give every request the run made; the floor is two round trips (TCP, TLS 1.3) for each host the
run had to reach, plus one per request in the chain of requests that each need the previous
answer (ping -> token -> authorized request; ping -> manifest HEAD -> GET -> blobs).

    python3 bench/bench_slow_link.py [--runs 3] [--rtt 100,300] [--python PY]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from delayproxy import DelayProxy

from tests import lab, tokenserver

REQUEST = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.1" (\d{3})')


def _kind(method: str, path: str) -> str:
    p = path.split("?")[0]
    if p == "/v2/":
        return "ping"
    if "/manifests/" in p:
        return f"manifest {method}"
    if "/blobs/uploads" in p:
        return f"upload {method}"
    if "/blobs/" in p:
        return f"blob {method}"
    if p.endswith("/tags/list"):
        return "tags"
    return f"{method} {p}"


def registry_requests(log: Path, since: int) -> list[str]:
    text = log.read_text(errors="replace")[since:]
    return [_kind(m.group(1), m.group(2)) for m in REQUEST.finditer(text)]


def run(py: str, args: list[str], env: dict[str, str]) -> tuple[float, float, dict]:
    t0 = time.monotonic()
    p = subprocess.run(
        [
            py,
            "-m",
            "diagnose",
            "check-health",
            *args,
            "-f",
            "json",
            "-q",
            "--host-root",
            str(lab.empty_root()),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    wall = time.monotonic() - t0
    report = json.loads(p.stdout)
    return wall, report["duration_s"], report


def _timeline(name: str, rtt: float, rep: dict) -> None:
    print(f"-- {name} at {rtt:.0f} ms: each check's start .. end, in round trips")
    for c in sorted(rep["checks"], key=lambda c: c["started_s"]):
        end = c["started_s"] + c["duration_s"]
        if c["status"] != "skip" or c["duration_s"] > 0.05:
            print(
                f"   {c['id']:<22} {c['started_s'] / (rtt / 1000):5.1f} .. "
                f"{end / (rtt / 1000):5.1f} {c['status']}"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rtt", default="100,300")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--timeline", action="store_true", help="print each check's span")
    args = ap.parse_args()
    rtts = [0.0] + [float(x) for x in args.rtt.split(",")]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        pki = lab.make_pki(tmp / "pki")
        cert = pki.leaf("good", *lab.GOOD_NAMES)
        env = {**lab.clean_env(tmp), "REGISTRY_DIAGNOSE_PASSWORD": "pw-alice"}
        signer = tokenserver.Signer.create(tmp)
        ts = tokenserver.TokenServer(signer, service="registry.test", users={"alice": "pw-alice"})
        ts.grant("alice", "team/app", "pull", "push")
        results = []
        with tokenserver.serve(ts, *pki.leaf("auth", "127.0.0.1", "localhost")):
            for rtt in rtts:
                with DelayProxy(("127.0.0.1", ts.port), rtt / 2) as tproxy:
                    realm = f"https://127.0.0.1:{tproxy.port}/token"
                    treg = lab.start_registry(
                        tmp / f"treg{int(rtt)}",
                        *cert,
                        log_requests=True,
                        extra=tokenserver.token_auth_config(realm, ts.service, signer.cert_file),
                    )
                    areg = lab.start_registry(tmp / f"areg{int(rtt)}", *cert, log_requests=True)
                    try:
                        setup = signer.jwt(
                            {
                                "iss": tokenserver.ISSUER,
                                "sub": "setup",
                                "aud": ts.service,
                                "exp": int(time.time()) + 600,
                                "nbf": 0,
                                "iat": int(time.time()),
                                "access": [
                                    {
                                        "type": "repository",
                                        "name": "team/app",
                                        "actions": ["pull", "push"],
                                    }
                                ],
                            }
                        )
                        lab.push_real_image(
                            f"https://127.0.0.1:{treg.port}",
                            "team/app",
                            "1.0",
                            ca_file=pki.ca_file,
                            headers={"Authorization": f"Bearer {setup}"},
                        )
                        lab.push_real_image(
                            f"https://127.0.0.1:{areg.port}", "team/app", "1.0", ca_file=pki.ca_file
                        )
                        with (
                            DelayProxy(("127.0.0.1", treg.port), rtt / 2) as rp,
                            DelayProxy(("127.0.0.1", areg.port), rtt / 2) as ap_,
                        ):
                            scenarios = {
                                "token flow, push required": (
                                    [
                                        f"127.0.0.1:{rp.port}",
                                        "--ca-bundle",
                                        str(pki.ca_file),
                                        "-u",
                                        "alice",
                                        "--require",
                                        "push",
                                        "--repository",
                                        "team/app",
                                    ],
                                    treg,
                                    True,
                                ),
                                "anonymous": (
                                    [f"127.0.0.1:{ap_.port}", "--ca-bundle", str(pki.ca_file)],
                                    areg,
                                    False,
                                ),
                                "image pull verdict": (
                                    [
                                        f"127.0.0.1:{ap_.port}/team/app:1.0",
                                        "--ca-bundle",
                                        str(pki.ca_file),
                                    ],
                                    areg,
                                    False,
                                ),
                            }
                            for name, (cmd, reg, _token) in scenarios.items():
                                for i in range(args.runs):
                                    since = reg.log.stat().st_size
                                    with ts.lock:
                                        ts.log.clear()
                                    c0 = (rp.connections, ap_.connections, tproxy.connections)
                                    wall, dur, rep = run(args.python, cmd, env)
                                    conns = (
                                        rp.connections - c0[0] + ap_.connections - c0[1],
                                        tproxy.connections - c0[2],
                                    )
                                    time.sleep(0.2)
                                    reqs = registry_requests(reg.log, since)
                                    with ts.lock:
                                        treqs = [f"token {e['method']}" for e in ts.log]
                                    bad = [
                                        c["id"]
                                        for c in rep["checks"]
                                        if c["status"] in ("fail", "error")
                                    ]
                                    if args.timeline and rtt == rtts[-1] and i == 0:
                                        _timeline(name, rtt, rep)
                                    results.append(
                                        {
                                            "scenario": name,
                                            "rtt": rtt,
                                            "wall": wall,
                                            "run": dur,
                                            "registry_requests": reqs,
                                            "token_requests": treqs,
                                            "connections": conns,
                                            "failed": bad,
                                        }
                                    )
                    finally:
                        treg.stop()
                        areg.stop()
    floors = {
        # hosts x (TCP + TLS) + the chain of requests that each need the previous answer
        "token flow, push required": 2 * 2 + 3,  # ping -> token -> authorized request
        "anonymous": 1 * 2 + 1,  # ping
        "image pull verdict": 1 * 2 + 4,  # ping -> manifest HEAD -> manifest GET -> blobs
    }
    print(
        f"{'scenario':<28}{'RTT ms':>7}{'run s':>8}{'process s':>10}{'seq RTTs':>9}"
        f"{'floor':>6}{'ratio':>6}  requests"
    )
    for name in floors:
        base = statistics.median(
            r["run"] for r in results if r["scenario"] == name and r["rtt"] == 0
        )
        for rtt in rtts:
            rows = [r for r in results if r["scenario"] == name and r["rtt"] == rtt]
            run_s = statistics.median(r["run"] for r in rows)
            wall = statistics.median(r["wall"] for r in rows)
            seq = (run_s - base) / (rtt / 1000) if rtt else float("nan")
            ratio = seq / floors[name] if rtt else float("nan")
            last = rows[-1]
            from collections import Counter

            reqs = Counter(last["registry_requests"] + last["token_requests"])
            desc = ", ".join(f"{k} x{v}" for k, v in sorted(reqs.items()))
            failed = f" FAILED: {last['failed']}" if last["failed"] else ""
            print(
                f"{name:<28}{rtt:>7.0f}{run_s:>8.3f}{wall:>10.3f}{seq:>9.1f}"
                f"{floors[name]:>6}{ratio:>6.2f}  conns {last['connections']}; {desc}{failed}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
