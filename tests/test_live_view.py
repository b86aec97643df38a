"""On a terminal the live view runs and the report still arrives, without a traceback."""

from __future__ import annotations

import sys

from tests import lab


def test_live_view_on_a_pty(registry, pki, env):
    rc, out = lab.run_on_pty(
        [
            sys.executable,
            "-m",
            "diagnose",
            "check-health",
            f"127.0.0.1:{registry.port}",
            "--ca-bundle",
            str(pki.ca_file),
            "--host-root",
            str(lab.empty_root()),
        ],
        {**env, "TERM": "xterm", "COLUMNS": "100"},
    )
    assert rc == 0, out
    assert "Traceback" not in out
    assert "PASS" in out and "api" in out
