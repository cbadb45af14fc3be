"""The gateway probe: once a challenge path is routed, GET it through the shared gateway the way the ACME
server will (`Host: <dnsName>`), and compare the body with the Challenge's key.

A tenant then learns which hop fails before cert-manager's self-check or the ACME server say only "wrong
status code 503". The probe goes only to the gateway's own address (configured, or the route's
Gateway's), never to an address a tenant chose; it follows no redirects and reads at most a few KiB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx

from reconciler.metrics import Metrics
from reconciler.model import ProbeResult
from reconciler.reconcile.intents import ProbeRequest
from reconciler.text import clip

log = logging.getLogger(__name__)

TIMEOUT = 3.0
BODY_MAX = 4096
DETAIL_MAX = 200


class Prober:
    def __init__(
        self, metrics: Metrics, client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False)
        self._clock = clock

    async def aclose(self) -> None:
        await self._client.aclose()

    async def probe(self, request: ProbeRequest) -> ProbeResult:
        url = f"http://{request.address}{request.path}"
        try:
            async with self._client.stream("GET", url, headers={"Host": request.host}) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > BODY_MAX:
                        break
            if response.status_code != 200:
                result, detail = "bad_status", f"HTTP {response.status_code}"
            elif body.decode("utf-8", "replace").strip() != request.expected:
                result, detail = "wrong_body", f"HTTP 200 with another body ({len(body)} bytes)"
            else:
                result, detail = "ok", "HTTP 200 with the key"
        except httpx.HTTPError as exc:
            result, detail = "connection_error", clip(f"{type(exc).__name__}: {exc}", DETAIL_MAX)
        self._metrics.probes.labels(result).inc()
        log.info(
            "gateway probe",
            extra={"url": url, "host": request.host, "result": result, "detail": detail, "attempt": request.attempts},
        )
        return ProbeResult(
            ok=result == "ok",
            result=result,
            detail=detail,
            at=self._clock(),
            route_uid=request.route_uid,
            attempts=request.attempts,
        )
