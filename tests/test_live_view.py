"""On a terminal the live view runs and the report still arrives, without a traceback."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from tests import lab


def test_live_view_on_a_pty(registry, pki, env):
    master, slave = pty.openpty()
    p = subprocess.Popen(
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
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "TERM": "xterm", "COLUMNS": "100"},
        cwd=str(lab.ROOT),
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    end = time.monotonic() + 30
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    rc = p.wait(10)
    os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert rc == 0, out
    assert "Traceback" not in out
    assert "PASS" in out and "api" in out
