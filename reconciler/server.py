"""The one HTTP endpoint (for `kubectl port-forward` and Prometheus): /metrics, /healthz for liveness,
/readyz for readiness (ready once the start-up checks passed and every informer's first list is in the
cache, and while no informer fails for want of a CRD or a permission; otherwise 503 with the reason), and
/debug/challenges: read-only JSON, every Challenge under way hop by hop and the step it waits on."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.metrics import Metrics


def build_app(
    metrics: Metrics,
    not_ready: Callable[[], str | None],
    healthy: Callable[[], bool],
    challenges: Callable[[], list[dict[str, object]]] | None = None,
) -> web.Application:
    """`not_ready` says why the process is not ready (None: it is)."""

    async def metrics_handler(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n") if healthy() else web.Response(status=500, text="unhealthy\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = not_ready()
        return web.Response(text="ok\n") if reason is None else web.Response(status=503, text=f"{reason}\n")

    async def debug_challenges(_: web.Request) -> web.Response:
        found = challenges() if challenges is not None else []
        return web.json_response({"challenges": found}, dumps=lambda doc: json.dumps(doc, indent=1))

    app = web.Application()
    app.router.add_get("/debug/challenges", debug_challenges)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start(host: str, port: int, app: web.Application) -> tuple[web.AppRunner, int]:
    """Starts serving; returns the runner (to stop it) and the bound port (useful with port 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound
