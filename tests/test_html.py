"""The HTML report in a real headless Chromium: it renders, logs no console error, and the
screenshot shows the summary."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests import lab
from tests.conftest import USERS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _chromium(tmp_path, *args):
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_html_report_renders_without_console_errors(tokens, pki, env, tmp_path):
    from PIL import Image

    _, reg = tokens
    page = tmp_path / "report.html"
    r = lab.diagnose(
        "check-health",
        f"127.0.0.1:{reg.port}",
        "--ca-bundle",
        str(pki.ca_file),
        "--repository",
        "team/app",
        "--require",
        "push",
        "-u",
        "bob",
        "--password-stdin",
        "-f",
        "html",
        "-o",
        str(page),
        env=env,
        stdin=USERS["bob"],
    )
    assert r.rc == 1
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="summary"' in dom.stdout and "TOKEN_SCOPE_ERROR" in dom.stdout
    errors = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)
    ]
    assert not errors, errors
    shot = tmp_path / "shot.png"
    s = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,900", page.as_uri())
    assert shot.exists(), s.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1100, 900)
    # the summary badge at the top is the FAIL red (#cf222e)
    top = _pixels(img.crop((0, 0, 1100, 120)))
    reds = sum(
        1
        for px in top
        if abs(px[0] - 0xCF) < 12 and abs(px[1] - 0x22) < 12 and abs(px[2] - 0x2E) < 12
    )
    assert reds > 200, reds
    # and the page is not blank below it: text pixels exist
    dark = sum(1 for px in _pixels(img.crop((0, 120, 1100, 900))) if sum(px) < 200)
    assert dark > 2000, dark


def _pixels(img):
    raw = img.tobytes()
    return [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
