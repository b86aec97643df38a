from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from diagnose import faq
from tests import lab

# under CI=true a skipped real-part test fails the run; elsewhere the summary lists the skips
from tests.ci_strict import (  # noqa: F401
    pytest_configure,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)


@pytest.fixture(autouse=True)
def _declared_codes_only() -> Iterator[None]:
    """A check that returns a code it does not declare fails the test that ran it (in-process
    runs; runs in a process of their own get REGISTRY_DIAGNOSE_STRICT_CODES from lab)."""
    from diagnose import runner

    seen: list[tuple[str, str]] = []
    runner.on_undeclared_code = lambda check_id, code: seen.append((check_id, code))
    yield
    runner.on_undeclared_code = None
    assert not seen, f"checks returned codes they do not declare: {seen}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> lab.Pki:
    return lab.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def good_cert(pki: lab.Pki) -> tuple[Path, Path]:
    return pki.leaf("good", *lab.GOOD_NAMES)


@pytest.fixture(scope="session")
def registry(
    tmp_path_factory: pytest.TempPathFactory, good_cert: tuple[Path, Path]
) -> Iterator[lab.Registry]:
    reg = lab.start_registry(tmp_path_factory.mktemp("registry"), *good_cert)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Dns]:
    """dnsmasq authoritative for .test with the names the tests resolve."""
    server = lab.start_dnsmasq(tmp_path_factory.mktemp("dnsmasq"), *lab.TEST_ZONE)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dns_refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.Dns]:
    """dnsmasq with no zone and no upstream: it answers REFUSED."""
    server = lab.start_dnsmasq(
        tmp_path_factory.mktemp("dnsmasq-refusing"), "--host-record=x.signed.test,127.0.0.1"
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dns_servfail(
    tmp_path_factory: pytest.TempPathFactory, dns_refusing: lab.Dns
) -> Iterator[lab.Dns]:
    """A validating dnsmasq whose answers cannot be proven: it answers SERVFAIL."""
    server = lab.start_dnsmasq(
        tmp_path_factory.mktemp("dnsmasq-servfail"),
        "--dnssec",
        lab.ROOT_ANCHOR,
        "--dnssec-check-unsigned",
        f"--server=127.0.0.1#{dns_refusing.port}",
    )
    yield server
    server.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return lab.clean_env(home)


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    root = tmp_path / "hostroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    return root


@pytest.fixture(scope="session")
def schema() -> dict[str, Any]:
    return json.loads(lab.SCHEMA.read_text())


RUNNER_CODES = {"CHECK_CRASHED", "CHECK_TIMEOUT", "PLUGIN_LOAD_ERROR"}


def declared_codes() -> dict[str, set[str]]:
    from diagnose import plugins

    found, _ = plugins.load_checks()
    return {c.id: {str(x) for x in c.codes} for c in found}


def validate_report(report: dict[str, Any], schema: dict[str, Any]) -> None:
    """Every report a test sees must match the shipped schema, cite only known FAQ keys, and
    hold only codes its checks declare."""
    jsonschema.validate(report, schema)
    known = faq.load()
    declared = declared_codes()
    for c in report["checks"]:
        if c["code"] and c["code"] not in RUNNER_CODES and c["id"] in declared:
            assert c["code"] in declared[c["id"]], f"{c['id']} gave undeclared {c['code']}"
        assert "returned code" not in c["summary"], c  # REGISTRY_DIAGNOSE_STRICT_CODES
        for key in c["faq"]:
            assert key in known, f"{c['id']} cites unknown FAQ key {key}"
            assert key in report["faq"], f"{key} cited but not included in the report"
        if c["status"] in ("warn", "fail", "error"):
            assert c["faq"] and c["code"], c


@pytest.fixture
def run_json(env: dict[str, str], schema: dict[str, Any]) -> Any:
    """Run `diagnose check-health ... --format json` in a subprocess and validate the report."""

    def go(*args: str, timeout: float = 90) -> lab.Run:
        r = lab.diagnose(
            "check-health", "--format", "json", "--quiet", *args, env=env, timeout=timeout
        )
        assert r.rc in (0, 1), f"rc={r.rc} stderr={r.err}"
        assert "Traceback" not in r.err, r.err
        validate_report(r.report, schema)
        return r

    return go


@pytest.fixture(scope="session")
def expired_cert(pki: lab.Pki) -> tuple[Path, Path]:
    now = dt.datetime.now(dt.UTC)
    return pki.leaf(
        "expired",
        *lab.GOOD_NAMES,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=2),
    )


# --------------------------------------------------------------------------- authenticated
from tests import tokenserver as ts_mod  # noqa: E402

USERS = {
    "alice": "alice-PLANTED-pw-4471",
    "bob": "bob-PLANTED-pw-9902",
    "carol": "carol-PLANTED-pw-1234",
}


@pytest.fixture(scope="session")
def token_stack(tmp_path_factory, pki, good_cert):
    """A token server and the real registry in `auth: token` mode trusting its signer."""
    d = tmp_path_factory.mktemp("token")
    signer = ts_mod.Signer.create(d)
    server = ts_mod.TokenServer(signer, service="registry.test", users=dict(USERS))
    cert, key = pki.leaf("auth", "auth.test", "localhost", "127.0.0.1")
    with ts_mod.serve(server, cert, key):
        reg = lab.start_registry(
            d / "registry",
            *good_cert,
            extra=ts_mod.token_auth_config(server.realm, server.service, signer.cert_file),
        )
        # content: team/app:1.0, pushed with a token the registry verifies
        setup = signer.setup_token("team/app")
        lab.push_image(
            f"https://127.0.0.1:{reg.port}",
            "team/app",
            "1.0",
            ca_file=pki.ca_file,
            headers={"Authorization": f"Bearer {setup}"},
        )
        yield server, reg
        reg.stop()


@pytest.fixture
def tokens(token_stack):
    """The token server with a fresh, known state for one test."""
    server, reg = token_stack
    with server.lock:
        server.grants.clear()
        server.delayed.clear()
        server.aad_tokens.clear()
        server.refresh_tokens.clear()
        server.mode = "normal"
        server.log.clear()
    server.grant("alice", "team/app", "pull", "push")
    server.grant("bob", "team/app", "pull")
    return server, reg


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory, good_cert):
    d = tmp_path_factory.mktemp("basic")
    pw = lab.htpasswd_file(d / "htpasswd", {"alice": USERS["alice"]})
    reg = lab.start_registry(
        d / "registry",
        *good_cert,
        extra=f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {pw}\n",
    )
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def image_registry(tmp_path_factory, pki, good_cert):
    """An open registry holding team/app:1.0 (the monitoring tests probe it repeatedly)."""
    reg = lab.start_registry(tmp_path_factory.mktemp("image-registry"), *good_cert)
    lab.push_image(f"https://127.0.0.1:{reg.port}", "team/app", "1.0", ca_file=pki.ca_file)
    yield reg
    reg.stop()
