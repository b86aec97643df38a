"""This host's internet speed with speedtest-cli: against the best speedtest.net server, a given
one, or a Speedtest Mini server. For a Mini server nothing is fetched from speedtest.net: the
configuration speedtest-cli would download is supplied here, so it works with no internet."""

from __future__ import annotations

import threading
from typing import Any


class SpeedtestUnavailable(Exception):
    """No speedtest server could be reached (or it failed); the message says why."""


def _offline_class() -> Any:
    import speedtest

    class OfflineConfig(speedtest.Speedtest):  # type: ignore[misc]
        """Speedtest whose configuration is local: what speedtest.net would have sent, sized
        for a test of a few seconds."""

        def get_config(self) -> dict[str, Any]:
            self.config.update(
                {
                    "client": {"ip": "", "isp": "", "lat": "0", "lon": "0", "country": ""},
                    "ignore_servers": [],
                    "sizes": {
                        "upload": [65536, 262144, 524288, 1048576],
                        "download": [350, 500, 750, 1000],
                    },
                    "counts": {"upload": 2, "download": 2},
                    "threads": {"upload": 4, "download": 4},
                    "length": {"upload": 4, "download": 4},
                    "upload_max": 8,
                }
            )
            self.lat_lon = (0.0, 0.0)
            return dict(self.config)

    return OfflineConfig


def _run(mini: str | None, server: int | None, timeout: float) -> dict[str, Any]:
    import speedtest

    try:
        if mini:
            st = _offline_class()(timeout=timeout, secure=mini.startswith("https"))
            st.set_mini_server(mini)
            st.get_best_server(st.servers)
        else:
            st = speedtest.Speedtest(timeout=timeout)
            st.get_servers([server] if server else [])
            st.get_best_server()
        down = st.download()
        up = st.upload(pre_allocate=False)
    except Exception as exc:  # speedtest-cli raises many kinds, all meaning "not measurable"
        raise SpeedtestUnavailable(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    best = st.best
    return {
        "download_mbps": round(down / 1e6, 2),
        "upload_mbps": round(up / 1e6, 2),
        "latency_ms": round(float(st.results.ping or 0.0), 1),
        "server": f"{best.get('sponsor')} ({best.get('name')})",
        "mini": bool(mini),
    }


def measure(
    mini: str | None, server: int | None, timeout: float = 10.0, limit: float = 45.0
) -> dict[str, Any]:
    """Run speedtest in a thread so a stuck server can never hold the run past `limit`."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["ok"] = _run(mini, server, timeout)
        except SpeedtestUnavailable as exc:
            box["err"] = exc

    t = threading.Thread(target=work, daemon=True, name="speedtest")
    t.start()
    t.join(limit)
    if "ok" in box:
        return dict(box["ok"])
    if "err" in box:
        raise box["err"]
    raise SpeedtestUnavailable(f"no result within {limit:.0f}s")
