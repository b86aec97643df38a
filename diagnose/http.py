"""The HTTP client every check uses: requests, with the run's trust store and name resolution.

Two things differ from a plain `requests.Session`:
- certificates are checked against the system store plus `--ca-bundle` (not certifi alone),
  because that is what docker on this host trusts;
- with `--nameserver` a request connects to the address the run resolved while still sending
  the real host name in SNI and Host and checking the certificate against it.
The session never reads ~/.netrc and never follows redirects by itself: checks follow them by
hand so that an Authorization header can never travel to another host.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests

USER_AGENT = "registry-diagnose"

# Response headers worth keeping as evidence; anything else (cookies above all) is dropped.
SAFE_HEADERS = (
    "content-type",
    "content-length",
    "date",
    "docker-distribution-api-version",
    "www-authenticate",
    "location",
    "server",
    "x-ms-correlation-request-id",
    "x-ms-request-id",
    "x-content-type-options",
    "retry-after",
    "strict-transport-security",
)


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    keep = {}
    for k, v in headers.items():
        if k.lower() in SAFE_HEADERS:
            keep[k] = v[:500]
    return keep


def make_session(
    ssl_context: ssl.SSLContext,
    *,
    pin: Callable[[str], str | None] | None = None,
) -> requests.Session:
    """A session trusting `ssl_context`; `pin(host)` returns the address to connect to, if any."""
    import requests
    from requests.adapters import HTTPAdapter

    verifying = ssl_context.verify_mode != ssl.CERT_NONE

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ssl_context
            super().init_poolmanager(*args, **kwargs)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            # requests makes the proxy's pool manager apart from the direct one: without this,
            # a request through a proxy would trust certifi's bundle, not what docker trusts
            proxy_kwargs["ssl_context"] = ssl_context
            return super().proxy_manager_for(proxy, **proxy_kwargs)

        def build_connection_pool_key_attributes(
            self, request: requests.PreparedRequest, verify: Any, cert: Any = None
        ) -> tuple[Any, Any]:
            base = super().build_connection_pool_key_attributes(request, verify, cert)
            host_params: dict[str, Any] = dict(base[0])
            pool_kwargs: dict[str, Any] = dict(base[1])
            name = host_params.get("host")
            address = pin(name) if (pin is not None and name) else None
            if address and address != name:
                host_params["host"] = address
                if host_params.get("scheme") == "https":
                    pool_kwargs["server_hostname"] = name
            if host_params.get("scheme") == "https" and name:
                # Always let urllib3 match the host name itself. It then turns check_hostname
                # off on the context, for every session alike, so one context can be shared.
                pool_kwargs["assert_hostname"] = name if verifying else False
            return host_params, pool_kwargs

        def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
            if pin is not None and request.url:
                parts = urlsplit(request.url)
                if parts.hostname and pin(parts.hostname):
                    request.headers["Host"] = parts.netloc.rpartition("@")[2]
            return super().send(request, *args, **kwargs)

    s = requests.Session()
    s.trust_env = False  # no ~/.netrc credentials; proxies are set per request below
    s.headers["User-Agent"] = USER_AGENT
    adapter = _Adapter(max_retries=0)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    if not ssl_context.check_hostname and ssl_context.verify_mode == ssl.CERT_NONE:
        s.verify = False
    return s


def environ_proxies(url: str) -> dict[str, str]:
    """The proxy the environment names for url, read as the Go clients read it (NO_PROXY
    honoured, loopback never proxied): the run goes where docker, skopeo and containerd go."""
    from diagnose.proxy import requests_proxies

    return requests_proxies(url)
