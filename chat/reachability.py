"""Whether a model deployment's host can be reached, for readiness: a TCP connection opened and
closed at once, never a request. A model request costs tokens, and a probe every few seconds
would spend them all day; it would also count against the deployment's rate limit.

The connection goes where the SDK's would go first: the endpoint's host and port, or the proxy
the environment names for it (the SDK's HTTP client trusts HTTPS_PROXY / NO_PROXY, as urllib
reads them). A host that accepts connections may still refuse the app's credentials or not know
the deployment: the circuit breaker finds that out from real calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import urllib.request
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# An answer is reused for this long: probes come every few seconds, from several probers, and
# /readyz is unauthenticated, so no request to it may open a connection of its own.
REACHABILITY_FRESH_SECONDS = 5.0
# Within the readiness probe's own timeout (app.READINESS_TIMEOUT_SECONDS).
CONNECT_TIMEOUT_SECONDS = 2.0
_DEFAULT_PORTS = {"https": 443, "http": 80}


def first_hop(endpoint: str) -> tuple[str, int] | None:
    """Host and port the SDK connects to for `endpoint`; None when the URL names no host."""
    url = urlsplit(endpoint)
    if not url.hostname:
        return None
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.hostname:
            return via.hostname, via.port or _DEFAULT_PORTS.get(via.scheme, 80)
    return url.hostname, url.port or _DEFAULT_PORTS.get(url.scheme, 443)


class Reachability:
    """One host and port, checked at most once per REACHABILITY_FRESH_SECONDS (probes arriving
    meanwhile wait for that check and share its answer). A change is logged once: WARNING when
    the host stops answering, INFO when it answers again."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        fresh_seconds: float = REACHABILITY_FRESH_SECONDS,
        timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self._address = address
        self._fresh_seconds = fresh_seconds
        self._timeout_seconds = timeout_seconds
        self._checked_at = -math.inf
        self._reachable = True
        self._lock = asyncio.Lock()

    async def reachable(self) -> bool:
        async with self._lock:
            if time.monotonic() - self._checked_at < self._fresh_seconds:
                return self._reachable
            reachable = await self._connect()
            self._checked_at = time.monotonic()
            if reachable != self._reachable:
                self._report(reachable)
            self._reachable = reachable
            return reachable

    async def _connect(self) -> bool:
        host, port = self._address
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self._timeout_seconds
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):  # closed all the same
            await writer.wait_closed()
        return True

    def _report(self, reachable: bool) -> None:
        host, port = self._address
        if reachable:
            log.info(
                "model endpoint reachable again at %s:%d",
                host,
                port,
                extra={"event": "model_endpoint_reachable"},
            )
        else:
            log.warning(
                "model endpoint unreachable: no TCP connection to %s:%d (readiness says"
                " model unavailable)",
                host,
                port,
                extra={"event": "model_endpoint_unreachable"},
            )
