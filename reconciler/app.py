"""Process wiring: client, controller and HTTP server under one task group."""

from __future__ import annotations

import logging
import signal

import anyio

from reconciler import __version__, server
from reconciler.config import Settings
from reconciler.controller import Controller
from reconciler.kube.client import KubeClient
from reconciler.metrics import Metrics

log = logging.getLogger("reconciler")


async def serve(settings: Settings) -> int:
    metrics = Metrics()
    try:
        client = await KubeClient.connect(metrics, settings.kubeconfig, settings.context, settings.qps, settings.burst)
    except Exception as exc:
        log.error("cannot load Kubernetes client configuration", extra={"error": str(exc)})
        return 1
    controller = Controller(client, settings, metrics)
    host, port = settings.bind_host_port()
    app = server.build_app(metrics, ready=controller.ready, healthy=lambda: True)
    try:
        runner, bound = await server.start(host, port, app)
    except OSError as exc:
        log.error("cannot bind metrics address", extra={"address": settings.metrics_bind_address, "error": str(exc)})
        await client.close()
        return 1
    log.info(
        "started",
        extra={
            "version": __version__,
            "apiserver": client.host,
            "metrics": f"http://{host}:{bound}/metrics",
            "backend_mode": settings.backend_mode.value,
            "route_mode": settings.route_mode.value,
            "namespaces": ",".join(settings.namespaces) or "all",
        },
    )
    try:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
                        controller.stop()
                        return

            tg.start_soon(watch_signals)
            await controller.run()
            tg.cancel_scope.cancel()
    finally:
        await runner.cleanup()
        await client.close()
    log.info("stopped")
    return 0
