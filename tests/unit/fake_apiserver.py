"""A scripted HTTP server on loopback that answers list and watch requests like the API server,
so the informer and client run their real network code in unit tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from kubernetes_asyncio import client as k8s_client

from reconciler.kube.client import KubeClient, Limits
from reconciler.metrics import Metrics
from reconciler.model import JSON

FOREVER = web.AppKey("forever", asyncio.Event)


@dataclass
class Script:
    """Answers in order; the last list answer repeats, an exhausted watch script hangs until cancelled."""

    lists: list[tuple[int, JSON]] = field(default_factory=list)
    watches: list[tuple[int, list[JSON]]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    patches: list[tuple[int, JSON]] = field(default_factory=list)


def item(name: str, rv: str, namespace: str = "ns", **labels: str) -> JSON:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": rv,
            "uid": f"uid-{name}",
            "labels": labels,
        },
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}]},
    }


def listing(rv: str, *items: JSON) -> JSON:
    return {"kind": "ServiceList", "metadata": {"resourceVersion": rv}, "items": list(items)}


def app_for(script: Script) -> web.Application:
    async def services(request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        if query.get("watch") == "true":
            script.requests.append(("watch", query))
            if not script.watches:
                hang = web.StreamResponse()
                await hang.prepare(request)
                await request.app[FOREVER].wait()
                return hang
            status, events = script.watches.pop(0)
            if status != 200:
                return web.json_response({"kind": "Status", "code": status, "reason": "Expired"}, status=status)
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            for event in events:
                await resp.write(json.dumps(event).encode() + b"\n")
            await resp.write_eof()
            return resp
        script.requests.append(("list", query))
        status, body = script.lists.pop(0) if len(script.lists) > 1 else script.lists[0]
        return web.json_response(body, status=status)

    async def patch(request: web.Request) -> web.Response:
        body = await request.json()
        status, answer = script.patches.pop(0)
        sent = {"content-type": request.content_type, "body": json.dumps(body)}
        sent |= {h.lower(): request.headers[h] for h in ("Authorization", "User-Agent") if h in request.headers}
        script.requests.append(("patch", sent))
        headers = {"Retry-After": "0"} if status == 429 else {}
        return web.json_response(answer, status=status, headers=headers)

    app = web.Application()
    app[FOREVER] = asyncio.Event()
    app.router.add_get("/api/v1/services", services)
    app.router.add_patch("/api/v1/namespaces/{ns}/services/{name}", patch)
    return app


@asynccontextmanager
async def serve(
    script: Script,
    metrics: Metrics,
    configure: Callable[[k8s_client.Configuration], None] | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[KubeClient]:
    runner = web.AppRunner(app_for(script))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    configuration = k8s_client.Configuration(host=f"http://127.0.0.1:{port}")
    if configure is not None:
        configure(configuration)
    client = KubeClient(configuration, metrics, limits or Limits(retry_attempts=3, retry_deadline=5))
    try:
        yield client
    finally:
        await client.close()
        runner.app[FOREVER].set()
        await runner.cleanup()
