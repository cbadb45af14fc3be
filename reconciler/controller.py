"""The imperative shell: watch -> cache -> triggers -> queues -> pure reconcile -> writer -> metrics.

Informers (`watches`) fill the cache and hand each change to a pure trigger function (`triggers`), whose
keys go onto the loops' work queues. Workers read the current views from the cache, ask the pure
reconcilers what to do, and hand the result to the `Writer`, which applies each write conditional on the
resourceVersion it was computed from.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from reconciler.cache import ClusterCache
from reconciler.config import Settings
from reconciler.gauges import cache_gauges
from reconciler.kube.client import KubeClient
from reconciler.kube.events import EventRecorder
from reconciler.kube.informer import Informer
from reconciler.kube.queue import WorkQueue
from reconciler.kube.store import Change, EventType
from reconciler.metrics import Metrics
from reconciler.model import Key
from reconciler.outcomes import Outcome, Requeue
from reconciler.policy import Policy
from reconciler.probe import Prober
from reconciler.reconcile import backends, diagnosis, routes, services, shadows
from reconciler.reconcile.intents import Decision, Kind
from reconciler.reconcile.snapshot import Snapshot
from reconciler.tracking import ChallengeOutcomes, Exposures, RouteWiring
from reconciler.triggers import Wake, matters
from reconciler.watches import Watch, watches
from reconciler.writer import Writer

log = logging.getLogger(__name__)

DRAIN_SECONDS = 20.0

Reconcile = Callable[[Key, Snapshot, Policy], Decision]


@dataclass
class Loop:
    """One controller: its queue, workers and pure reconcile function."""

    name: str
    reconcile: Reconcile
    workers: int
    subject: Kind  # the kind a key names, for Events about the key's object
    queue: WorkQueue[Key]
    per_namespace: bool = False
    """Decide one key of a namespace at a time (port allocation reads every Service of a namespace)."""


@dataclass
class Loops:
    services: Loop
    backends: Loop
    routes: Loop
    shadows: Loop
    challenges: Loop
    """What each Challenge's owner is told (Events) and the gateway probe (`reconcile/diagnosis.py`)."""

    def __iter__(self) -> Iterator[Loop]:
        return iter((self.services, self.backends, self.routes, self.shadows, self.challenges))

    def enqueue(self, wake: Wake) -> None:
        for key in wake.services:
            self.services.queue.add(key)
        for key in wake.backends:
            self.backends.queue.add(key)
        for key in wake.routes:
            self.routes.queue.add(key)
        for key in wake.shadows:
            self.shadows.queue.add(key)
        for key in wake.challenges:
            self.challenges.queue.add(key)


def _loops(settings: Settings, metrics: Metrics) -> Loops:
    def loop(name: str, reconcile: Reconcile, workers: int, subject: Kind, per_namespace: bool = False) -> Loop:
        return Loop(name, reconcile, workers, subject, WorkQueue(name, metrics), per_namespace)

    return Loops(
        services=loop("services", services.reconcile_service, settings.service_workers, Kind.SERVICE, True),
        backends=loop("backends", backends.reconcile_backend, settings.backend_workers, Kind.SERVICE),
        routes=loop("routes", routes.reconcile_route, settings.route_workers, Kind.HTTPROUTE),
        shadows=loop("shadows", shadows.reconcile_shadow, settings.route_workers, Kind.SERVICE),
        challenges=loop("challenges", diagnosis.diagnose, settings.challenge_workers, Kind.CHALLENGE),
    )


async def _first_of(wanted: anyio.Event, other: anyio.Event) -> bool:
    """Waits for either event; True when `wanted` was set first (or already)."""
    if wanted.is_set() or other.is_set():
        return wanted.is_set()
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait, wanted)
        tg.start_soon(wait, other)
    return wanted.is_set()


class Controller:
    def __init__(self, client: KubeClient, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.metrics = metrics
        self.cache = ClusterCache(self.policy.solver_label)
        self.loops = _loops(settings, metrics)
        self.outcomes = ChallengeOutcomes(metrics, self.cache)
        self.wiring = RouteWiring(metrics)
        self.exposures = Exposures(self.cache, self.policy)
        for gauge in cache_gauges(self.cache, self.policy):
            metrics.registry.register(gauge)
        table = watches(self.cache, self.policy, self.outcomes.observe, self.wiring.observe, self.exposures.observe)
        self.events = EventRecorder(client, metrics, dry_run=settings.dry_run)
        self.writer = Writer(
            client,
            self.cache,
            table,
            self.policy,
            self.events,
            metrics,
            dry_run=settings.dry_run,
            on_change=self._changed,
        )
        self.prober = Prober(metrics)
        self.informers = [self._informer(client, watch, ns) for watch in table for ns in self._scopes(watch)]
        # Port allocation reads every Service of a namespace: decisions there are taken one at a time,
        # each seeing the previous one's result (written through to the cache).
        self._namespace_locks: dict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self._stop = anyio.Event()
        self.started = False

    # -- wiring -------------------------------------------------------------------------------

    def _scopes(self, watch: Watch[Any]) -> list[str | None]:
        return [None] if watch.cluster_wide or not self.settings.namespaces else list(self.settings.namespaces)

    def _informer(self, client: KubeClient, watch: Watch[Any], namespace: str | None) -> Informer[Any]:
        keep = self.policy.annotation_keys()
        return Informer(
            client,
            watch.resource,
            lambda raw: watch.parse(raw, keep),
            watch.store,
            lambda change: self._changed(watch, change),
            self.metrics,
            namespace=namespace,
            label_selector=str(watch.selector) if watch.selector else None,
            watch_timeout=self.settings.watch_timeout,
            optional=watch.optional,
            idle_timeout=self.settings.watch_idle_timeout,
            keep=watch.keep,
        )

    def _changed(self, watch: Watch[Any], change: Change[Any]) -> None:
        """A change of the cache (a watch event, or a write's answer): bookkeeping, then the keys it wakes."""
        if change.type is EventType.DELETED:
            self.writer.saw_deleted(watch.resource, change.obj.meta.key)
        if not matters(change):
            return
        if watch.observe is not None:
            watch.observe(change)
        self.loops.enqueue(watch.trigger(change, self.cache))

    def ready(self) -> bool:
        return self.started and all(i.synced.is_set() for i in self.informers)

    # -- running --------------------------------------------------------------------------------

    async def run(self, leading: anyio.Event | None = None) -> None:
        """Runs until `stop()`. The informers start at once, so a standby's cache is warm and it is ready;
        the workers (every write) start once `leading` is set (None: at once). On stop: no new work, the
        work in progress finishes (up to `DRAIN_SECONDS`), then it returns."""
        self.started = True
        async with anyio.create_task_group() as tg:
            informer_scope = anyio.CancelScope()

            async def run_informers() -> None:
                with informer_scope:
                    async with anyio.create_task_group() as itg:
                        for informer in self.informers:
                            itg.start_soon(informer.run)

            tg.start_soon(run_informers)
            for informer in self.informers:
                await informer.synced.wait()
            log.info("caches synced", extra={"objects": self._cache_sizes()})
            if leading is not None and not leading.is_set():
                log.info("standby: caches warm, waiting for the lease")
                await _first_of(leading, self._stop)
            if not self._stop.is_set():
                self._start_work(tg)
            await self._stop.wait()
            log.info("stopping: no new work, finishing the writes in progress")
            informer_scope.cancel()
            for loop in self.loops:
                loop.queue.shutdown(drain=False)
            with anyio.move_on_after(DRAIN_SECONDS):
                for loop in self.loops:
                    await loop.queue.wait_drained()
                await self.events.close()
            tg.cancel_scope.cancel()
        await self.prober.aclose()

    def _start_work(self, tg: anyio.abc.TaskGroup) -> None:
        """The workers: every key the informers queued meanwhile (as a standby: everything) is decided."""
        tg.start_soon(self.events.run)
        for loop in self.loops:
            tg.start_soon(loop.queue.run_delays)
            for _ in range(loop.workers):
                tg.start_soon(self._worker, loop)
        if self.settings.resync_period > 0:
            tg.start_soon(self._resync)

    def stop(self) -> None:
        self._stop.set()

    def _cache_sizes(self) -> dict[str, int]:
        c = self.cache
        sizes = {"services": len(c.services), "backends": len(c.backends), "httproutes": len(c.routes)}
        return sizes | {"challenges": len(c.challenges), "projects": len(c.projects)}

    async def _resync(self) -> None:
        """A slow safety net; every real trigger is a watch event."""
        while True:
            await anyio.sleep(self.settings.resync_period * random.uniform(0.9, 1.1))
            wake = Wake()
            for svc in self.cache.services:
                wake.solver_service(svc.meta.key, self.cache)
            wake.routes.extend(route.meta.key for route in self.cache.routes)
            self.loops.enqueue(wake)

    async def _worker(self, loop: Loop) -> None:
        while (key := await loop.queue.get()) is not None:
            started = time.monotonic()
            result = "success"
            try:
                await self._sync(loop, key)
                loop.queue.forget(key)
            except Requeue as again:
                result = "requeue"
                loop.queue.add_rate_limited(key, again.at_least)
            except Exception:
                result = "error"
                self.metrics.reconcile_errors.labels(loop.name).inc()
                log.exception("reconcile failed", extra={"controller": loop.name, "object": f"{key[0]}/{key[1]}"})
                loop.queue.add_rate_limited(key)
            finally:
                loop.queue.done(key)
                self.metrics.reconciles.labels(loop.name, result).inc()
                self.metrics.reconcile_duration.labels(loop.name).observe(time.monotonic() - started)

    async def _sync(self, loop: Loop, key: Key) -> None:
        if loop.per_namespace:
            async with self._namespace_locks[key[0]]:
                await self._decide_and_apply(loop, key)
        else:
            await self._decide_and_apply(loop, key)

    async def _decide_and_apply(self, loop: Loop, key: Key) -> None:
        decision = loop.reconcile(key, self.cache, self.policy)
        for refusal in decision.refusals:
            await self.writer.report(refusal)
        for notice in decision.notices:
            await self.writer.notify(notice)
        if decision.skipped and not decision.writes:
            log.debug(
                "no action",
                extra={"controller": loop.name, "object": f"{key[0]}/{key[1]}", "reason": decision.skipped.value},
            )
        for write in decision.writes:
            if await self.writer.apply(write, (loop.subject, key)) not in (Outcome.SUCCESS, Outcome.DRY_RUN):
                break  # later writes depend on this one (a claim before the wiring); its event re-triggers
        self.wiring.decided(decision, rewrites_route=loop is self.loops.routes)
        if decision.probe is not None:
            self.cache.probes[decision.probe.challenge_uid] = await self.prober.probe(decision.probe)
            loop.queue.add(key)  # look again with the answer
        elif decision.recheck_after is not None:
            loop.queue.add_after(key, decision.recheck_after)

    def challenges(self) -> list[dict[str, object]]:
        """Every Challenge under way, hop by hop (`/debug/challenges`)."""
        found = (diagnosis.progress(c, self.cache, self.policy) for c in self.cache.challenges if not c.final)
        return [p.as_dict() for p in sorted(found, key=lambda p: p.challenge)]
