"""`diagnose serve` next to prometheus-blackbox-exporter, and under load.

1. The same broken registries (real distribution registries, a real token service, a front
   that answers 429 or 503, on loopback) probed by both exporters: what each one reports, and
   the CPU time each process spends per probe (its own user + system time, over --probes
   probes of every case): ours with the default checks, and with a module of the registry's
   own steps only (no checks about this host). blackbox_exporter gets the module a registry is
   usually watched with: GET over TLS trusting the CA, 200 or 401 counting as up; for an image,
   the manifest URL.
2. Load: --targets targets (names that fail fast at DNS, answered NXDOMAIN by a real dnsmasq)
   probed with a cheap module (the network chain: login-server, dns, tcp, tls, api; all but
   the first two blocked by the DNS failure), scraped by 32 clients at once, --load probes in
   all, behind --bound probes in flight: the most ever in flight (counted inside the exporter,
   under its lock), and the resident memory after 1,000 probes and at the end. Then the same
   targets scraped five times each under a 30 s minimum interval: one probe per target.

    python3 bench/bench_exporter.py [--probes 20] [--targets 200] [--load 10000] [--bound 8]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import re
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
import trustme

from tests import lab, tokenserver
from tests.monitoring import blackbox, flaky_front, get, probe, samples, start_serve, value

# the registry's own steps, up to a blob's first byte (and all they depend on)
REGISTRY_CHECKS = '", "'.join(["authorized-request", "image-blobs"])
# the cheap module of the load run: the network chain, which stops at DNS for these targets
LOAD_CHECKS = "login-server,dns,tcp,tls,api"
MANIFEST_ACCEPT = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def ours_says(body: str) -> str:
    got = samples(body)
    ok = value(got, "registry_diagnose_probe_success")
    codes = sorted({lab_["code"] for n, lab_, v in got if n == "registry_diagnose_finding" and v})
    return f"{'up' if ok else 'DOWN'} {' '.join(codes)}".strip()


def blackbox_says(port: int, url: str) -> str:
    q = urllib.parse.urlencode({"target": url, "module": "registry_v2", "debug": "true"})
    _, text = get(f"http://127.0.0.1:{port}/probe?{q}")
    success = re.search(r"^probe_success (\S+)", text, re.M)
    status = re.search(r"^probe_http_status_code (\S+)", text, re.M)
    errors = re.findall(r'err="((?:[^"\\]|\\.)*)"', text)
    said = "up" if success and success.group(1) == "1" else "DOWN"
    if status and status.group(1) != "0":
        said += f" HTTP {status.group(1)}"
    if errors and said.startswith("DOWN"):
        err = re.sub(r'^\w+ "[^"]*": ', "", errors[-1].replace("\\", ""))
        err = err.rsplit(": ", 1)[-1] if err.startswith("dial ") else err.split(": current")[0]
        said += f" ({err[:60]})"
    return said


@contextlib.contextmanager
def cases(tmp: Path, pki: lab.Pki) -> Iterator[list[tuple[str, str, str]]]:
    """(case, our target, blackbox's URL) for each broken registry, all started here."""
    good = pki.leaf("good", *lab.GOOD_NAMES)
    now = dt.datetime.now(dt.UTC)
    expired = pki.leaf(
        "expired", *lab.GOOD_NAMES, not_before=now - dt.timedelta(days=30), not_after=now
    )
    stranger = trustme.CA().issue_cert(*lab.GOOD_NAMES)
    foreign = (tmp / "foreign.crt", tmp / "foreign.key")
    stranger.cert_chain_pems[0].write_to_path(str(foreign[0]))
    stranger.private_key_pem.write_to_path(str(foreign[1]))
    signer = tokenserver.Signer.create(tmp)
    ts = tokenserver.TokenServer(signer, service="registry.test", mode="500")
    started: list[lab.Registry] = []

    def registry(name: str, cert: tuple[Path, Path], extra: str = "") -> lab.Registry:
        reg = lab.start_registry(tmp / name, *cert, extra=extra)
        started.append(reg)
        return reg

    with tokenserver.serve(ts, *pki.leaf("auth", "127.0.0.1", "localhost")):
        open_reg = registry("open", good)
        lab.push_image(f"https://127.0.0.1:{open_reg.port}", "team/app", "1.0", ca_file=pki.ca_file)
        dead = lab.closed_port()
        dead_token = registry(
            "dead-token",
            good,
            tokenserver.token_auth_config(
                f"https://127.0.0.1:{dead}/token", "registry.test", signer.cert_file
            ),
        )
        token_500 = registry(
            "token-500", good, tokenserver.token_auth_config(ts.realm, ts.service, signer.cert_file)
        )
        expired_reg = registry("expired", expired)
        foreign_reg = registry("foreign", foreign)
        down = lab.closed_port()
        with (
            flaky_front(open_reg.port, pki.ca_file, *good) as limited,
            flaky_front(open_reg.port, pki.ca_file, *good) as failing,
        ):
            limited.state.update(fail=429, ratelimit=(0, 100))
            failing.state.update(fail=503)

            def image(port: int, tag: str = "1.0") -> tuple[str, str]:
                return (
                    f"127.0.0.1:{port}/team/app:{tag}",
                    f"https://127.0.0.1:{port}/v2/team/app/manifests/{tag}",
                )

            yield [
                ("healthy image", *image(open_reg.port)),
                (
                    "token service down",
                    f"127.0.0.1:{dead_token.port}",
                    f"https://127.0.0.1:{dead_token.port}/v2/",
                ),
                (
                    "token service 500",
                    f"127.0.0.1:{token_500.port}",
                    f"https://127.0.0.1:{token_500.port}/v2/",
                ),
                (
                    "certificate expired",
                    f"127.0.0.1:{expired_reg.port}",
                    f"https://127.0.0.1:{expired_reg.port}/v2/",
                ),
                (
                    "unknown CA",
                    f"127.0.0.1:{foreign_reg.port}",
                    f"https://127.0.0.1:{foreign_reg.port}/v2/",
                ),
                ("tag missing", *image(open_reg.port, "9.9")),
                ("rate limited (429)", *image(limited.port)),
                ("manifest 503", *image(failing.port)),
                ("registry down", f"127.0.0.1:{down}", f"https://127.0.0.1:{down}/v2/"),
            ]
    for reg in started:
        reg.stop()


def compare(tmp: Path, pki: lab.Pki, env: dict[str, str], probes: int) -> None:
    print(f"\n== the same broken registries, both exporters ({probes} probes per case for CPU)")
    (tmp / "serve").mkdir(parents=True, exist_ok=True)
    # a module without the checks about this host (daemon, runtimes, configuration files)
    (tmp / "serve" / "diagnose.toml").write_text(
        f'[modules.registry]\nchecks = ["{REGISTRY_CHECKS}"]\n'
    )
    serve = start_serve(tmp / "serve", env, "--ca-bundle", str(pki.ca_file), "--min-interval", "0")
    try:
        with (
            blackbox(tmp / "blackbox", pki.ca_file, accept=MANIFEST_ACCEPT) as bb_proc,
            cases(tmp, pki) as rows,
        ):
            bb, bb_pid = bb_proc.port, bb_proc.proc.pid
            print(
                "| case | blackbox_exporter says | diagnose serve says "
                "| CPU ms/probe: blackbox | ours, default checks | ours, registry checks |"
            )
            print("|---|---|---|---|---|---|")
            totals = [0.0, 0.0, 0.0]
            for case, target, url in rows:
                ours = ours_says(probe(serve.port, target)[1])
                theirs = blackbox_says(bb, url)
                c0 = cpu(bb_pid)
                q = urllib.parse.urlencode({"target": url, "module": "registry_v2"})
                for _ in range(probes):
                    get(f"http://127.0.0.1:{bb}/probe?{q}")
                bb_ms = (cpu(bb_pid) - c0) / probes * 1000
                ours_ms = []
                for module in (None, "registry"):
                    c0 = cpu(serve.proc.pid)
                    for _ in range(probes):
                        probe(serve.port, target, module)
                    ours_ms.append((cpu(serve.proc.pid) - c0) / probes * 1000)
                for i, ms in enumerate([bb_ms, *ours_ms]):
                    totals[i] += ms
                spent = " | ".join(f"{ms:.1f}" for ms in [bb_ms, *ours_ms])
                print(f"| {case} | {theirs} | {ours} | {spent} |")
            n = len(rows)
            print(f"| mean | | | {' | '.join(f'{t / n:.1f}' for t in totals)} |")
    finally:
        lab.stop_process(serve.proc)


def load(tmp: Path, env: dict[str, str], targets: int, total: int, bound: int) -> None:
    print(f"\n== load: {targets} targets failing at DNS, {total} probes, at most {bound} in flight")
    dns = lab.start_dnsmasq(tmp / "dnsmasq", *lab.TEST_ZONE)

    def exporter(name: str, min_interval: int) -> lab.Proc:
        limits = ("--max-in-flight", str(bound), "--min-interval", str(min_interval))
        return start_serve(
            tmp / name, env, "--nameserver", dns.nameserver, "--checks", LOAD_CHECKS, *limits
        )

    serve = exporter("serve-load", 0)
    proc = psutil.Process(serve.proc.pid)
    done = 0
    lock = threading.Lock()
    rss: dict[int, float] = {}
    sampled_peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal sampled_peak
        while not stop.wait(0.1):
            got = samples(get(f"http://127.0.0.1:{serve.port}/metrics")[1])
            sampled_peak = max(
                sampled_peak, int(value(got, "registry_diagnose_exporter_probes_in_flight") or 0)
            )

    def client(k: int) -> None:
        nonlocal done
        i = k
        while True:
            with lock:
                if done >= total:
                    return
            status, _ = probe(serve.port, f"t{i % targets}.test")
            assert status == 200, status
            i += 32
            with lock:
                done += 1
                if done in (1000, total):
                    rss[done] = proc.memory_info().rss / 2**20

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        c0, t0 = cpu(proc.pid), time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(client, range(32)))
        wall, spent = time.monotonic() - t0, cpu(proc.pid) - c0
        stop.set()
        own = samples(get(f"http://127.0.0.1:{serve.port}/metrics")[1])
        peak = int(value(own, "registry_diagnose_exporter_probes_in_flight_peak") or 0)
        probed = int(value(own, "registry_diagnose_exporter_probes_total", outcome="probed") or 0)
        print(
            f"probes run: {probed} in {wall:.0f} s ({probed / wall:.0f}/s), "
            f"CPU {spent / probed * 1000:.1f} ms per probe"
        )
        print(f"most in flight: {peak} (bound {bound}; sampled every 0.1 s: {sampled_peak})")
        print(
            f"RSS after 1,000 probes: {rss[1000]:.1f} MiB; after {total:,}: "
            f"{rss[total]:.1f} MiB; growth {rss[total] - rss[1000]:+.1f} MiB"
        )
    finally:
        stop.set()
        lab.stop_process(serve.proc)
    # the minimum interval: five scrapes of every target, one probe each
    serve = exporter("serve-interval", 30)
    try:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: probe(serve.port, f"t{i % targets}.test"), range(5 * targets)))
        own = samples(get(f"http://127.0.0.1:{serve.port}/metrics")[1])
        probed, cached = (
            value(own, "registry_diagnose_exporter_probes_total", outcome=o) or 0
            for o in ("probed", "cached")
        )
        print(
            f"min interval 30 s, {5 * targets} scrapes of {targets} targets: "
            f"{probed:.0f} probed, {cached:.0f} served from the last result"
        )
    finally:
        lab.stop_process(serve.proc)
        dns.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=20, help="probes per case for CPU time")
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--load", type=int, default=10_000, help="probes in the load run")
    ap.add_argument("--bound", type=int, default=8, help="--max-in-flight of the exporter")
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as d:
        tmp = Path(d)
        env = lab.clean_env(tmp)
        if not args.skip_compare:
            compare(tmp, lab.make_pki(tmp / "pki"), env, args.probes)
        if not args.skip_load:
            load(tmp, env, args.targets, max(args.load, 1000), args.bound)


if __name__ == "__main__":
    main()
