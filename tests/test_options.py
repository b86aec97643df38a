"""One option table: the flags, the settings file and the defaults come from it, and a value
gets the same answer whichever way it was given."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from diagnose import options as table
from diagnose.context import Options
from tests import lab

# (option, a bad value as the command line takes it, the same value as TOML writes it)
BAD = [
    ("timeout", "-5", "-5"),
    ("timeout", "soon", '"soon"'),
    ("tries", "0", "0"),
    ("tries", "2.5", "2.5"),
    ("streams", "99", "99"),
    ("slow-below", "-1", "-1"),
    ("throughput-seconds", "1000", "1000"),
    ("push-bytes", "12", "12"),
    ("require", "delete", '"delete"'),
    ("fail-on", "never", '"never"'),
    ("wait-for", "read", '"read"'),
    ("propagation-timeout", "forever", '"forever"'),
    ("propagation-timeout", "0s", '"0s"'),
    ("platform", "linux/amd64/v8/x", '"linux/amd64/v8/x"'),
    ("nameserver", "300.1.1.1", '"300.1.1.1"'),
    ("repository", "Team/App", '"Team/App"'),
    ("runtime", "kubelet", '["kubelet"]'),
    ("ca-bundle", "/no/such/ca.pem", '"/no/such/ca.pem"'),
    ("pull-secret", "/no/such/secret.yaml", '"/no/such/secret.yaml"'),
]


@pytest.mark.parametrize(("key", "cli_value", "toml_value"), BAD)
def test_same_bad_value_same_answer_from_file_and_command_line(
    env, tmp_path, key, cli_value, toml_value
):
    (tmp_path / "diagnose.toml").write_text(f"{key} = {toml_value}\n")
    from_file = lab.diagnose("preflight", "127.0.0.1:1", env=env, cwd=tmp_path)
    flagged = lab.diagnose(
        "preflight", "127.0.0.1:1", f"--{key}", cli_value, env=env, cwd=tmp_path / "elsewhere"
    )
    assert from_file.rc == flagged.rc == 2, (from_file, flagged)
    assert from_file.err == flagged.err, (from_file.err, flagged.err)
    assert from_file.err.count("\n") == 1 and f"--{key} " in from_file.err
    assert not from_file.out and not flagged.out


def test_the_same_line_from_the_installed_command(env, tmp_path):
    """The check above runs in-process; the installed command says the same."""
    (tmp_path / "diagnose.toml").write_text("timeout = -5\n")
    from_file = lab.diagnose_process("preflight", "127.0.0.1:1", env=env, cwd=tmp_path)
    flagged = lab.diagnose("check-health", "127.0.0.1:1", "--timeout", "-5", env=env)
    assert from_file.rc == flagged.rc == 2
    assert (
        from_file.err
        == flagged.err
        == ("diagnose: error: --timeout '-5': must be from 1 to 3600 seconds\n")
    )


def test_options_defaults_come_from_the_table():
    fields = {f.name: f.default for f in dataclasses.fields(Options)}
    for spec_name, field_name in (
        ("timeout", "timeout_s"),
        ("tries", "tries"),
        ("propagation_timeout", "propagation_timeout_s"),
        ("streams", "streams"),
        ("throughput_seconds", "throughput_seconds"),
        ("slow_below", "slow_below_mbs"),
        ("push_bytes", "push_bytes"),
        ("host_root", "host_root"),
    ):
        assert fields[field_name] == table.default(spec_name), spec_name
    # and every option a run takes is settled from the table alone
    values = table.settle({})
    assert set(values) == {s.name for s in table.SPECS}
    assert values["timeout"] == 30.0 and values["tries"] == 3 and values["require"] == "pull"
    with pytest.raises(table.OptionError, match="is not a directory"):
        table.settle({}, {"host_root": "/no/such/dir"})


def test_every_flag_and_file_key_is_made_from_the_table():
    import typer

    from diagnose.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in ("check-health", "preflight", "bundle"):
        params = {p.name: p for p in commands[name].params}
        for spec in table.SPECS:
            assert spec.flag in params[spec.name].opts, (name, spec.name)
            if spec.default is not None and spec.kind != "flag":
                assert "default" in (params[spec.name].help or ""), spec.name
    file_keys = {s.key for s in table.SPECS if s.in_file} | set(table.FILE_ONLY)
    raw = {k: "x" for k in file_keys if k not in table.FILE_ONLY}
    loaded = table.from_table(Path("x.toml"), raw)
    assert set(loaded) == {s.name for s in table.SPECS if s.in_file}
    with pytest.raises(table.OptionError, match="unknown setting 'colour'"):
        table.from_table(Path("x.toml"), {"colour": 1})
    with pytest.raises(table.OptionError, match="does not belong"):
        table.from_table(Path("x.toml"), {"password": "hunter2"})


def test_the_command_line_wins_over_the_file(env, tmp_path, registry, pki):
    (tmp_path / "diagnose.toml").write_text(
        f'registry = "127.0.0.1:{registry.port}"\ntimeout = 1\nca-bundle = "{pki.ca_file}"\n'
        'checks = ["api"]\nreport = ["json:out.json"]\n'
    )
    r = lab.diagnose("preflight", "--timeout", "20", env=env, cwd=tmp_path)
    assert r.rc == 0, r.err + r.out
    assert (tmp_path / "out.json").is_file()
    assert "--timeout" not in r.err
