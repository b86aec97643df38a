"""What ships in deploy/: a real Prometheus (Debian) scrapes `diagnose serve` through the
shipped relabelling config and loads the shipped alert rules; promtool checks the rules and
runs their unit tests; the Grafana dashboard only asks for metrics the exporter exports."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests import lab, tokenserver
from tests.monitoring import (
    DEPLOY,
    PROMTOOL_BIN,
    fetch,
    flaky_front,
    prometheus,
    prometheus_config,
    query,
    start_serve,
    wait_query,
)

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "registry-diagnose.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL_BIN is None:
        pytest.fail("promtool is not installed (Debian package prometheus)")
    return subprocess.run(
        [PROMTOOL_BIN, *args], capture_output=True, text=True, timeout=60, cwd=str(lab.ROOT)
    )


def test_promtool_checks_the_rules_and_the_scrape_config():
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 4 rules found" in rules.stdout
    config = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_cover_every_alert():
    assert RULE_TESTS
    run = promtool("test", "rules", *map(str, RULE_TESTS))
    assert run.returncode == 0, run.stdout + run.stderr
    alerts = set(re.findall(r"^\s+- alert: (\w+)", RULES.read_text(), re.M))
    tested = set()
    for path in RULE_TESTS:
        tested |= set(re.findall(r"alertname: (\w+)", path.read_text()))
    assert (
        alerts
        == tested
        == {
            "RegistryProbeFailing",
            "RegistryCertificateExpiringSoon",
            "RegistryRateLimitLow",
            "RegistryTokenSlow",
        }
    )


@pytest.fixture(scope="module")
def dead_token_registry(tmp_path_factory, good_cert):
    """The registry in token mode whose token service is gone (its realm port is closed)."""
    d = tmp_path_factory.mktemp("dead-token")
    signer = tokenserver.Signer.create(d)
    realm = f"https://127.0.0.1:{lab.closed_port()}/token"
    reg = lab.start_registry(
        d / "registry",
        *good_cert,
        extra=tokenserver.token_auth_config(realm, "registry.test", signer.cert_file),
    )
    yield reg
    reg.stop()


def test_prometheus_scrapes_the_exporter_through_the_shipped_relabelling(
    registry, dead_token_registry, image_registry, pki, good_cert, env, tmp_path
):
    healthy = f"127.0.0.1:{registry.port}"
    broken = f"127.0.0.1:{dead_token_registry.port}"
    with flaky_front(image_registry.port, pki.ca_file, *good_cert) as front:
        front.state["ratelimit"] = (38, 100)
        limited = f"127.0.0.1:{front.port}/team/app:1.0"
        serve = start_serve(
            tmp_path / "serve", env, "--ca-bundle", str(pki.ca_file), "--min-interval", "1"
        )
        exporter = f"127.0.0.1:{serve.port}"
        config = prometheus_config(tmp_path, exporter, [healthy, broken, limited])
        try:
            with prometheus(tmp_path / "prometheus", config) as base:
                ok = wait_query(base, f'registry_diagnose_probe_success{{instance="{healthy}"}}')
                bad = wait_query(base, f'registry_diagnose_probe_success{{instance="{broken}"}}')
                code = wait_query(
                    base,
                    f'registry_diagnose_finding{{instance="{broken}",'
                    'code="CONNECTIVITY_REALM_ERROR"}',
                )
                left = wait_query(
                    base, f'registry_diagnose_rate_limit_remaining{{instance="{limited}"}}'
                )
                up = wait_query(base, 'up{job="registry-diagnose-exporter"} == 1')
                names = set(json.loads(fetch(f"{base}/api/v1/label/__name__/values"))["data"])
                rules = json.loads(fetch(f"{base}/api/v1/rules"))["data"]["groups"]
                jobs = {r["metric"]["job"] for r in query(base, "registry_diagnose_probe_success")}
        finally:
            lab.stop_process(serve.proc)
    assert [r["value"][1] for r in ok] == ["1"], ok
    assert [r["value"][1] for r in bad] == ["0"], bad
    assert [r["value"][1] for r in code] == ["1"], code
    assert code[0]["metric"]["check"] == "auth-challenge"
    assert [r["value"][1] for r in left] == ["38"]
    assert up and "process_resident_memory_bytes" in names
    assert jobs == {"registry-diagnose"}
    assert sorted(r["name"] for g in rules for r in g["rules"]) == sorted(
        [
            "RegistryCertificateExpiringSoon",
            "RegistryProbeFailing",
            "RegistryRateLimitLow",
            "RegistryTokenSlow",
        ]
    )
    # the dashboard asks only for what Prometheus now holds from the exporter
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(registry_diagnose_\w+|process_\w+)", e)}
    assert used and used <= names, used - names
    assert dashboard["uid"] and all(p.get("title") for p in dashboard["panels"])
