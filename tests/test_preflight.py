"""The CI pre-flight: a line per check, reports for the pipeline, settings files, exit codes."""

from __future__ import annotations

import json
import re

import pytest
import xmlschema

from tests import lab
from tests.conftest import USERS

JUNIT_XSD = lab.ROOT / "tests" / "schemas" / "junit-ci.xsd"
GITHUB_LINE = re.compile(r"^::(error|warning|notice)( title=[^:\n]*)?::[^\n]*$")


@pytest.fixture(scope="module")
def junit_schema():
    return xmlschema.XMLSchema(str(JUNIT_XSD))


def _preflight(env, reg, pki, tmp_path, *args, stdin=None, extra_env=None):
    return lab.diagnose(
        "preflight",
        f"127.0.0.1:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        *args,
        env={**env, **(extra_env or {})},
        stdin=stdin,
        timeout=90,
    )


def test_require_push_without_push_fails_the_pipeline(tokens, pki, env, tmp_path, junit_schema):
    _, reg = tokens
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    r = _preflight(
        env,
        reg,
        pki,
        tmp_path,
        "--repository",
        "team/app",
        "--require",
        "push",
        "-u",
        "bob",
        "--password-stdin",
        "--report",
        f"junit:{junit}",
        "--report",
        "github:-",
        stdin=USERS["bob"],
        extra_env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert r.rc == 1, r.out + r.err
    lines = r.out.splitlines()
    assert any(line.startswith("FAIL  scope [") and "TOKEN_SCOPE_ERROR" in line for line in lines)
    assert lines.count(next(x for x in lines if x.startswith("preflight: FAIL"))) == 1
    junit_schema.validate(str(junit))
    xml = junit.read_text()
    assert '<testcase name="scope"' in xml and 'type="TOKEN_SCOPE_ERROR"' in xml
    gh = [x for x in lines if x.startswith("::")]
    assert gh and all(GITHUB_LINE.match(x) for x in gh), gh
    assert any(x.startswith("::error title=scope (127.0.0.1%3A") for x in gh)
    assert gh[-1].startswith("::notice title=registry-diagnose::FAIL")
    text = summary.read_text()
    assert "# registry-diagnose: FAIL" in text and "TOKEN_SCOPE_ERROR" in text
    assert USERS["bob"] not in r.out + xml + text


def test_require_push_with_push_passes(tokens, pki, env, tmp_path, junit_schema):
    _, reg = tokens
    junit, sarif, md = tmp_path / "j.xml", tmp_path / "r.sarif", tmp_path / "r.md"
    r = _preflight(
        env,
        reg,
        pki,
        tmp_path,
        "--repository",
        "team/app",
        "--require",
        "push",
        "-u",
        "alice",
        "--password-stdin",
        "--report",
        f"junit:{junit}",
        "--report",
        f"sarif:{sarif}",
        "--report",
        f"markdown:{md}",
        stdin=USERS["alice"],
    )
    assert r.rc == 0, r.out
    junit_schema.validate(str(junit))
    doc = json.loads(sarif.read_text())
    assert doc["version"] == "2.1.0" and doc["runs"][0]["results"] == []
    assert md.read_text().startswith("# registry-diagnose: PASS")


def test_fail_on_warn_in_junit_and_exit_code(pki, env, tmp_path, junit_schema):
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = pki.leaf("soon", *lab.GOOD_NAMES, not_after=now + dt.timedelta(days=5))
    with lab.http_server({"/v2/": (200, {}, b"{}")}, lab.server_context(*cert)) as srv:
        args = ("preflight", f"127.0.0.1:{srv.port}", "--ca-bundle", str(pki.ca_file))
        soft = lab.diagnose(*args, "--report", f"junit:{tmp_path / 'a.xml'}", env=env)
        hard = lab.diagnose(
            *args,
            "--fail-on",
            "warn",
            "--report",
            f"junit:{tmp_path / 'b.xml'}",
            "--report",
            "github:-",
            env=env,
        )
    assert soft.rc == 0 and hard.rc == 1
    junit_schema.validate(str(tmp_path / "a.xml"))
    junit_schema.validate(str(tmp_path / "b.xml"))
    assert "<failure" not in (tmp_path / "a.xml").read_text()
    assert 'type="TLS_CERT_EXPIRING"' in (tmp_path / "b.xml").read_text()
    assert any(x.startswith("::error title=tls") for x in hard.out.splitlines())


def test_settings_from_diagnose_toml(tokens, pki, env, tmp_path):
    _, reg = tokens
    (tmp_path / "diagnose.toml").write_text(
        f'registries = ["127.0.0.1:{reg.port}"]\nrepository = "team/app"\nrequire = "push"\n'
        f'ca-bundle = "{pki.ca_file}"\nusername = "bob"\nreport = ["json:out.json"]\n'
    )
    p = lab.diagnose(
        "preflight",
        cwd=tmp_path,
        timeout=60,
        env={**env, "REGISTRY_DIAGNOSE_PASSWORD": USERS["bob"]},
    )
    assert p.rc == 1, p.out + p.err
    assert p.out.startswith(f"preflight: settings from {tmp_path / 'diagnose.toml'}")
    report = json.loads((tmp_path / "out.json").read_text())
    assert next(c for c in report["checks"] if c["id"] == "scope")["code"] == "TOKEN_SCOPE_ERROR"


def test_settings_from_pyproject_and_command_line_wins(tokens, pki, env, tmp_path):
    _, reg = tokens
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.registry-diagnose]\n'
        f'registry = "127.0.0.1:{reg.port}"\nrepository = "team/app"\nrequire = "push"\n'
        f'ca-bundle = "{pki.ca_file}"\nhost-root = "{lab.empty_root()}"\n'
    )
    p = lab.diagnose(
        "preflight",
        "--require",
        "pull",
        "-u",
        "bob",
        cwd=tmp_path,
        timeout=60,
        env={**env, "REGISTRY_DIAGNOSE_PASSWORD": USERS["bob"]},
    )
    assert p.rc == 0, p.out + p.err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('timeout = "soon"', "--timeout 'soon': must be a number"),
        ('password = "hunter2"', "does not belong in a settings file"),
        ("colour = 1", "unknown setting 'colour'"),
        ("this is = not toml", "diagnose.toml"),
        ('require = "delete"', "pull or push"),
    ],
)
def test_bad_settings_file_is_one_line_exit_2(env, tmp_path, content, fragment):
    (tmp_path / "diagnose.toml").write_text(content + "\n")
    p = lab.diagnose("preflight", cwd=tmp_path, timeout=30, env=env)
    assert p.rc == 2, p.out + p.err
    assert len(p.err.strip().splitlines()) == 1 and fragment in p.err, p.err
    assert "hunter2" not in p.err


@pytest.mark.parametrize("spec", ["junit", "yaml:x.yml", "json:"])
def test_bad_report_spec_exits_2(registry, env, spec):
    r = lab.diagnose("preflight", f"127.0.0.1:{registry.port}", "--report", spec, env=env)
    assert r.rc == 2 and "Traceback" not in r.err
