"""Real parts for the monitoring tests and benches: `diagnose serve` as a process, a real
Prometheus and blackbox_exporter (Debian) on loopback with their own data directories, the
scrape config generated from deploy/prometheus with the test's ports, and an HTTPS front that
forwards to a real registry but can be told to fail manifest requests or send rate-limit
headers."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests import lab

DEPLOY = lab.ROOT / "deploy"
PROMETHEUS_BIN = shutil.which("prometheus")
PROMTOOL_BIN = shutil.which("promtool")
BLACKBOX_BIN = shutil.which("prometheus-blackbox-exporter")
Sample = tuple[str, dict[str, str], float]


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def fetch(url: str) -> str:
    """The body of a 200 answer (anything else fails the test)."""
    status, body = get(url)
    assert status == 200, (status, body)
    return body


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, dict(s.labels), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def value(found: list[Sample], name: str, **labels: str) -> float | None:
    for n, lab_, v in found:
        if n == name and all(lab_.get(k) == w for k, w in labels.items()):
            return v
    return None


# ------------------------------------------------------------------------ diagnose serve
def start_serve(
    directory: Path, env: dict[str, str], *args: str, port: int | None = None
) -> lab.Proc:
    """`diagnose serve` as its own process on a loopback port (the host described by an empty
    root unless the test names one)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or lab.free_port()
    if "--host-root" not in args:
        args = (*args, "--host-root", str(lab.empty_root()))
    log = directory / "serve.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "diagnose", "serve", "--listen", f"127.0.0.1:{port}", *args],
            stdout=fh,
            stderr=fh,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(directory),
        )
    try:
        lab.wait_port(port, 20)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"diagnose serve did not start: {log.read_text()[-2000:]}") from None
    return lab.Proc(port, proc, log)


def probe(port: int, target: str, module: str | None = None, **headers: str) -> tuple[int, str]:
    query = {"target": target, **({"module": module} if module else {})}
    return get(f"http://127.0.0.1:{port}/probe?{urllib.parse.urlencode(query)}", headers)


# ---------------------------------------------------------------------------- Prometheus
def prometheus_config(
    directory: Path, exporter: str, targets: list[str], *, interval: str = "2s"
) -> Path:
    """deploy/prometheus/prometheus.yml with the test's exporter address, targets and a short
    interval; the shipped alert rules stay in (by absolute path)."""
    import yaml

    conf = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    conf["global"]["scrape_interval"] = interval
    conf["global"]["evaluation_interval"] = interval
    conf["global"]["scrape_timeout"] = interval
    conf["rule_files"] = [str(DEPLOY / "prometheus" / r) for r in conf.get("rule_files", [])]
    for job in conf["scrape_configs"]:
        if job.get("metrics_path") == "/probe":
            job["static_configs"] = [{"targets": targets}]
            for rule in job["relabel_configs"]:
                if rule.get("target_label") == "__address__":
                    rule["replacement"] = exporter
        else:
            job["static_configs"] = [{"targets": [exporter]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


@contextlib.contextmanager
def prometheus(directory: Path, config: Path) -> Iterator[str]:
    """A real Prometheus on loopback with its own data directory; yields its base URL."""
    if PROMETHEUS_BIN is None:
        raise RuntimeError("prometheus is not installed (Debian package prometheus)")
    port = lab.free_port()
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    log = directory / "prometheus.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.console.templates=/dev/null",
                "--web.console.libraries=/dev/null",
            ],
            stdout=fh,
            stderr=fh,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        lab.wait_port(port, 30)
        end = time.monotonic() + 30
        while get(f"{base}/-/ready", timeout=5)[0] != 200:
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"prometheus is not ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        lab.stop_process(proc)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    status, body = get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert status == 200, body
    data = json.loads(body)
    assert data["status"] == "success", data
    return list(data["data"]["result"])


def wait_query(base: str, promql: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The query's result once it has any, polling (bounded by timeout)."""
    end = time.monotonic() + timeout
    while True:
        result = query(base, promql)
        if result or time.monotonic() > end:
            return result
        time.sleep(0.5)


# ------------------------------------------------------------------------ blackbox_exporter
@contextlib.contextmanager
def blackbox(directory: Path, ca_file: Path, accept: str = "*/*") -> Iterator[lab.Proc]:
    """prometheus-blackbox-exporter (Debian) with the module a registry is usually watched
    with (`registry_v2`): GET over TLS trusting the test CA, 200 or 401 counting as up."""
    if BLACKBOX_BIN is None:
        raise RuntimeError("prometheus-blackbox-exporter is not installed (Debian package)")
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "blackbox.yml"
    conf.write_text(
        f"""modules:
  registry_v2:
    prober: http
    timeout: 10s
    http:
      method: GET
      valid_status_codes: [200, 401]
      preferred_ip_protocol: ip4
      headers:
        Accept: "{accept}"
      tls_config:
        ca_file: {ca_file}
"""
    )
    port = lab.free_port()
    log = directory / "blackbox.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [BLACKBOX_BIN, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=fh,
            stderr=fh,
        )
    try:
        lab.wait_port(port, 20)
        yield lab.Proc(port, proc, log)
    finally:
        lab.stop_process(proc)


# ------------------------------------------------------------------- a front that misbehaves
@contextlib.contextmanager
def flaky_front(registry_port: int, ca_file: Path, cert: Path, key: Path) -> Iterator[Any]:
    """HTTPS on loopback forwarding to the real registry; `front.state["fail"] = 503` answers
    manifest requests with that status, `front.state["ratelimit"] = (remaining, limit)` adds
    Docker Hub's rate-limit headers to manifest answers, `front.state["delay"] = seconds` holds
    them back. `front.requests` logs every request."""
    import requests

    session = requests.Session()
    state: dict[str, Any] = {"fail": None, "ratelimit": None, "delay": 0.0}
    hop = {"content-length", "transfer-encoding", "connection", "content-encoding"}

    def answer(method: str, path: str, headers: dict[str, str]) -> lab.Answer:
        extra: dict[str, str] = {}
        if "/manifests/" in path and state["delay"]:
            time.sleep(state["delay"])
        if "/manifests/" in path and state["ratelimit"] is not None:
            remaining, limit = state["ratelimit"]
            extra = {
                "RateLimit-Limit": f"{limit};w=21600",
                "RateLimit-Remaining": f"{remaining};w=21600",
            }
        if "/manifests/" in path and state["fail"]:
            body = lab.registry_errors("UNAVAILABLE", "maintenance")
            return state["fail"], {"Content-Type": "application/json", **extra}, body
        fwd = {
            k: v for k, v in headers.items() if k.lower() in ("accept", "authorization", "range")
        }
        resp = session.request(
            method,
            f"https://127.0.0.1:{registry_port}{path}",
            headers=fwd,
            verify=str(ca_file),
            allow_redirects=False,
            timeout=10,
        )
        out = {k: v for k, v in resp.headers.items() if k.lower() not in hop}
        return resp.status_code, {**out, **extra}, resp.content

    with lab.scripted_https(answer, lab.server_context(cert, key)) as server:
        server.state = state  # type: ignore[attr-defined]
        yield server
    session.close()
