"""How long does `diagnose explain --file` take on a large log?

Writes a log of --mb megabytes of ordinary service lines (timestamps, levels, request lines,
ids) with real registry error lines placed near its end, then times `diagnose explain --file`
as a process several times and prints the median, what was examined, and the first answer.

    python3 bench/bench_explain.py [--mb 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOISE = [
    'level=info msg="handled request" method=GET path=/api/v1/items status=200 took=3ms',
    'level=debug msg="cache hit" key=session:4f1c ttl=300',
    "INFO  worker-7 job 88123 finished in 412 ms (queue=default)",
    "WARN  pool size 32 reached; queueing 4 requests",
    'level=info msg="Pulling fs layer" id=3e17c6eae66c',
    "Step 4/9 : RUN make -j4 build",
    "  ---> Running in 4b5f0b2a1c3d",
    'level=info msg="container started" id=9f3e2c name=web-1',
]
ERRORS = [
    'Error response from daemon: Head "https://myreg.azurecr.io/v2/team/app/manifests/1.4": '
    "unauthorized: authentication required, visit https://aka.ms/acr/authorization for more "
    "information.",
    '  Warning  Failed     12s   kubelet  Failed to pull image "myreg.azurecr.io/team/app:1.4":'
    " rpc error: code = Unknown desc = failed to pull and unpack image",
]


def make_log(path: Path, mb: int) -> None:
    rnd = random.Random(7)
    target = mb * 1_000_000
    with path.open("w") as fh:
        written = 0
        n = 0
        while written < target:
            stamp = f"2026-11-23T10:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z"
            line = f"{stamp} {rnd.choice(NOISE)} seq={n}\n"
            if n == 5000 or (target - written < 2000 and n % 7 == 0):
                line += "\n".join(ERRORS) + "\n"
            fh.write(line)
            written += len(line)
            n += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        log = Path(t) / "big.log"
        make_log(log, args.mb)
        times = []
        doc = {}
        for _ in range(args.runs):
            t0 = time.monotonic()
            p = subprocess.run(
                [sys.executable, "-m", "diagnose", "explain", "--file", str(log), "-f", "json"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            times.append(time.monotonic() - t0)
            doc = json.loads(p.stdout)
        size = log.stat().st_size
        print(f"log {size / 1e6:.0f} MB; explain --file, {args.runs} runs")
        print(
            f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"
        )
        print(
            f"examined {doc['bytes_examined'] / 1e6:.1f} MB of {doc['bytes_total'] / 1e6:.1f} MB; "
            f"{doc['matched_lines']} matched lines; first: {doc['candidates'][0]['key']}; "
            f"command: {doc['command']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
