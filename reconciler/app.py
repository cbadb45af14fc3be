"""Process wiring: client, start-up checks, controller and HTTP server under one task group.

Exit codes (`kube/diagnosis.ExitCode`): 0 after a clean stop, 2 when our own configuration cannot work
(settings, kubeconfig), 1 when the cluster does not let us run (unreachable, a CRD or a permission
missing, the leader lease lost) or the metrics address cannot be bound.
"""

from __future__ import annotations

import logging
import signal
import socket
import uuid

import anyio

from reconciler import __version__, access, server
from reconciler.config import Settings
from reconciler.controller import Controller
from reconciler.kube import preflight
from reconciler.kube.client import KubeClient, Limits
from reconciler.kube.diagnosis import StartupError
from reconciler.kube.informer import not_ready as not_ready_informers
from reconciler.kube.leader import LeaderElector, LeadershipLost
from reconciler.metrics import Metrics

log = logging.getLogger("reconciler")


async def serve(settings: Settings) -> int:
    metrics = Metrics()
    try:
        limits = Limits(qps=settings.qps, burst=settings.burst)
        client = await KubeClient.connect(metrics, settings.kubeconfig, settings.context, limits)
    except StartupError as exc:
        return _failed(exc)
    controller = Controller(client, settings, metrics)
    host, port = settings.bind_host_port()
    checked = False
    standby = settings.leader_elect  # until the lease is ours: ready (a rollout must not wait on it), no writes

    def not_ready() -> str | None:
        if not checked:
            return "start-up checks running"
        if standby and not controller.started:
            return None
        return not_ready_informers(controller.informers) if controller.started else "starting"

    app = server.build_app(metrics, not_ready=not_ready, healthy=lambda: True, challenges=controller.challenges)
    try:
        runner, bound = await server.start(host, port, app)
    except OSError as exc:
        log.error("cannot bind metrics address", extra={"address": settings.metrics_bind_address, "error": str(exc)})
        await client.close()
        return 1
    try:
        # Before the election too: a standby that could never lead must say so now, not at takeover.
        lease_namespace = settings.leader_election_namespace if settings.leader_elect else None
        needs = access.for_policy(controller.policy, settings.namespaces, lease_namespace)
        report = await preflight.run(client, needs, settings.startup_timeout)
    except StartupError as exc:
        await runner.cleanup()
        await client.close()
        return _failed(exc)
    checked = True
    log.info(
        "started",
        extra={
            "version": __version__,
            "apiserver": client.host,
            "kubernetes": report.version,
            "user": report.user or "unknown",
            "metrics": f"http://{host}:{bound}/metrics",
            "backend_mode": settings.backend_mode.value,
            "route_mode": settings.route_mode.value,
            "dry_run": settings.dry_run,
            "namespaces": ",".join(settings.namespaces) or "all",
        },
    )
    elector = _elector(settings, client, metrics)
    exit_code = 0
    try:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
                        controller.stop()
                        if not controller.started:  # still waiting for the lease: nothing to drain
                            tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            exit_code = await _run(controller, elector, metrics, client)
            tg.cancel_scope.cancel()
    finally:
        await runner.cleanup()
        await client.close()
    log.info("stopped", extra={"exit_code": exit_code})
    return exit_code


async def _run(controller: Controller, elector: LeaderElector | None, metrics: Metrics, client: KubeClient) -> int:
    """Runs the controller, as the lease holder when electing; returns the exit code. A standby runs its
    informers all along (warm cache, ready) and starts writing the moment the lease is its own."""
    if elector is None:
        metrics.leader.set(1)
        await controller.run()
        return 0
    leading = anyio.Event()
    lost = False
    async with anyio.create_task_group() as tg:

        async def lead() -> None:
            nonlocal lost
            async with anyio.create_task_group() as waiting:
                waiting.start_soon(elector.follow, client)
                await elector.acquire()
                waiting.cancel_scope.cancel()
            leading.set()
            try:
                await elector.hold()
            except LeadershipLost as exc:
                # Another replica may already be writing: stop at once (no drain) and exit non-zero so
                # the pod restarts as a candidate.
                log.error("lost the leader lease; stopping", extra={"error": str(exc)})
                lost = True
                tg.cancel_scope.cancel()

        tg.start_soon(lead)
        await controller.run(leading)
        tg.cancel_scope.cancel()
    if lost:
        return 1
    await elector.release()
    return 0


def _failed(exc: StartupError) -> int:
    """One line per problem, each naming its cause and fix; the exit code says whose problem it is."""
    for line in exc.lines:
        log.error(line)
    return int(exc.exit_code)


def _elector(settings: Settings, client: KubeClient, metrics: Metrics) -> LeaderElector | None:
    if not settings.leader_elect:
        return None
    return LeaderElector(
        client,
        settings.leader_election_namespace,
        settings.leader_election_id,
        identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        lease_duration=settings.lease_duration,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
        on_change=lambda leader: metrics.leader.set(1 if leader else 0),
    )
