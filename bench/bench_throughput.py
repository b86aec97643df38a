"""Pull throughput over shaped links: our figure, curl's figure on the same blob and link, and
their ratio. Needs root (a network namespace, a veth pair, tbf and netem).

    python3 bench/bench_throughput.py [--rates 20,100] [--seconds 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import lab  # the real parts the tests use
from tests.test_throughput import curl_rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="20,100", help="shaped rates, Mbit/s")
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rd-bench-tp-"))
    pki = lab.make_pki(tmp / "pki")
    env = lab.clean_env(tmp)
    with lab.netns_host(host_ip="198.18.2.1", ns_ip="198.18.2.2", name="rdbench") as (ns, addr):
        reg = lab.start_registry(tmp / "reg", *pki.leaf("b", addr), host=addr, netns=ns, port=5000)
        try:
            data = os.urandom(96 * 1024 * 1024)
            lab.push_image(
                f"https://{addr}:5000", "big/blob", "1", ca_file=pki.ca_file, layers=[data]
            )
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            print(
                f"{'shaped':>8}  {'ours MB/s':>9}  {'curl MB/s':>9}  {'ours/curl':>9}  "
                f"{'ours/shaped':>11}  {'3 streams':>9}  {'elapsed s':>9}"
            )
            for rate in [float(r) for r in args.rates.split(",")]:
                lab.shape(ns, rate)
                r = lab.diagnose(
                    "check-health",
                    f"{addr}:5000",
                    "--ca-bundle",
                    str(pki.ca_file),
                    "--repository",
                    "big/blob",
                    "--throughput",
                    "--throughput-seconds",
                    str(args.seconds),
                    "--checks",
                    "pull-throughput",
                    "--skip",
                    "internet-speed",
                    "-f",
                    "json",
                    env=env,
                    timeout=180,
                )
                check = next(c for c in json.loads(r.out)["checks"] if c["id"] == "pull-throughput")
                ours = check["evidence"]["single_stream"]["mb_per_s"]
                multi = check["evidence"]["multi_stream"]["mb_per_s"]
                theirs = curl_rate(addr, digest, pki.ca_file, args.seconds / 2) / 1e6
                shaped = rate / 8
                print(
                    f"{rate:>5.0f} Mb  {ours:>9.3f}  {theirs:>9.3f}  {ours / theirs:>9.3f}  "
                    f"{ours / shaped:>11.3f}  {multi:>9.3f}  "
                    f"{check['evidence']['elapsed_s']:>9.2f}"
                )
        finally:
            reg.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
