"""The imperative shell: watch events -> keys -> queue -> pure reconcile -> apply -> metrics.

Handlers only enqueue keys; workers read the current views from the cache, ask the pure reconcilers
what to do, and apply each write conditional on the resourceVersion it was computed from.
"""

from __future__ import annotations

import copy
import logging
import random
import socket
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio

from reconciler.cache import CONTROLLER_UID, NAMESPACE, ClusterCache, route_service_refs
from reconciler.config import Policy, Settings
from reconciler.kube.client import ApiError, KubeClient
from reconciler.kube.informer import DELETED, Informer
from reconciler.kube.queue import WorkQueue
from reconciler.kube.resources import BACKENDS, CHALLENGES, EVENTS, HTTPROUTES, PROJECTS, SERVICES, Resource
from reconciler.metrics import Metrics
from reconciler.model import Backend, Challenge, HTTPRoute, Key, Project, Service
from reconciler.reconcile import backends, challenges, routes, services, shadows
from reconciler.reconcile.backends import BACKEND_SUFFIX
from reconciler.reconcile.intents import Create, Decision, Delete, Kind, Patch, Refusal, Write
from reconciler.reconcile.snapshot import Snapshot

log = logging.getLogger(__name__)

COMPONENT = "acme-gateway-reconciler"
WRITE_RESOURCES: dict[Kind, Resource] = {Kind.SERVICE: SERVICES, Kind.BACKEND: BACKENDS, Kind.HTTPROUTE: HTTPROUTES}
API_VERSIONS = {Kind.SERVICE: "v1", Kind.BACKEND: BACKENDS.api_version, Kind.HTTPROUTE: HTTPROUTES.api_version}
PAST = {"patch": "patched", "create": "created", "delete": "deleted"}
REPORTED_MAX = 10_000
DRAIN_SECONDS = 20.0

Reconcile = Callable[[Key, Snapshot, Policy], Decision]


def _routed(route: HTTPRoute) -> bool:
    refs = route.backend_refs()
    return bool(refs) and all(ref.kind == "Backend" for ref in refs)


class Requeue(Exception):
    """The decision could not be fully applied and must be retried with backoff."""


@dataclass
class Loop:
    """One controller: its queue, workers and pure reconcile function."""

    name: str
    queue: WorkQueue[Key]
    reconcile: Reconcile
    workers: int
    subject: Kind  # the kind a key names, for Events about the key's object
    per_namespace: bool = False
    """Decide one key of a namespace at a time (port allocation reads every Service of a namespace)."""


class Controller:
    def __init__(self, client: KubeClient, settings: Settings, metrics: Metrics) -> None:
        self.client = client
        self.settings = settings
        self.policy = settings.policy()
        self.metrics = metrics
        self.cache = ClusterCache(self.policy.solver_label)
        self.loops = {
            "services": Loop(
                "services",
                WorkQueue("services", metrics),
                services.reconcile_service,
                settings.service_workers,
                Kind.SERVICE,
                per_namespace=True,
            ),
            "backends": Loop(
                "backends",
                WorkQueue("backends", metrics),
                backends.reconcile_backend,
                settings.backend_workers,
                Kind.SERVICE,
            ),
            "routes": Loop(
                "routes", WorkQueue("routes", metrics), routes.reconcile_route, settings.route_workers, Kind.HTTPROUTE
            ),
            "shadows": Loop(
                "shadows", WorkQueue("shadows", metrics), shadows.reconcile_shadow, settings.route_workers, Kind.SERVICE
            ),
        }
        # Port allocation reads every Service of a namespace: decisions there are taken one at a time,
        # each seeing the previous one's result (written through to the cache).
        self._namespace_locks: dict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self._reverted: set[str] = set()
        self.informers = self._build_informers()
        self._reported: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._counted_challenges: set[str] = set()
        self._route_seen: dict[str, float] = {}
        self._stop = anyio.Event()
        self._instance = socket.gethostname()
        self.started = False

    # -- wiring -------------------------------------------------------------------------------

    def _build_informers(self) -> list[Informer[Any]]:
        keep = self.policy.annotation_keys()
        scoped: list[str | None] = list(self.settings.namespaces) or [None]
        informers: list[Informer[Any]] = []

        def add(
            resource: Resource,
            view: Any,
            store: Any,
            handler: Any,
            namespaces: list[str | None],
            selector: str | None = None,
        ) -> None:
            def from_raw(raw: Mapping[str, Any]) -> Any:
                return view.from_raw(raw, keep)

            for ns in namespaces:
                informers.append(
                    Informer(
                        self.client,
                        resource,
                        from_raw,
                        store,
                        handler,
                        self.metrics,
                        namespace=ns,
                        label_selector=selector,
                        watch_timeout=self.settings.watch_timeout,
                    )
                )

        add(PROJECTS, Project, self.cache.projects, self._on_project, [None])  # projects live in org namespaces
        add(CHALLENGES, Challenge, self.cache.challenges, self._on_challenge, scoped)
        add(SERVICES, Service, self.cache.services, self._on_service, scoped)
        add(BACKENDS, Backend, self.cache.backends, self._on_backend, scoped)
        add(HTTPROUTES, HTTPRoute, self.cache.routes, self._on_route, scoped, selector=self.policy.domain_label)
        managed = f"{self.policy.managed_by_label}={self.policy.managed_by_value}"
        add(HTTPROUTES, HTTPRoute, self.cache.shadows, self._on_shadow, scoped, selector=managed)
        return informers

    def ready(self) -> bool:
        return self.started and all(i.synced.is_set() for i in self.informers)

    # -- event handlers: enqueue keys, nothing else -----------------------------------------------

    def _enqueue_service(self, key: Key) -> None:
        self.loops["services"].queue.add(key)
        self.loops["backends"].queue.add(key)
        self.loops["shadows"].queue.add(key)
        for route in self.cache.routes_for_service(*key):
            self.loops["routes"].queue.add(route.meta.key)

    def _on_service(self, _: str, old: Service | None, new: Service | None, initial: bool) -> None:
        obj = new or old
        assert obj is not None
        self._enqueue_service(obj.meta.key)
        if old is None or new is None or old.ports != new.ports or old.type != new.type:
            # A port taken or freed on the project's EIP can change another solver's allocation.
            for svc in self.cache.solver_services_in(obj.meta.namespace):
                if svc.meta.key != obj.meta.key:
                    self.loops["services"].queue.add(svc.meta.key)

    def _on_backend(self, _: str, old: Backend | None, new: Backend | None, initial: bool) -> None:
        obj = new or old
        assert obj is not None
        ns, name = obj.meta.key
        if name.endswith(BACKEND_SUFFIX):
            service = (ns, name[: -len(BACKEND_SUFFIX)])
            self.loops["backends"].queue.add(service)
            self.loops["shadows"].queue.add(service)
            for route in self.cache.routes_for_service(*service):
                self.loops["routes"].queue.add(route.meta.key)
        ref = obj.meta.controller_ref()
        if ref is not None and ref.kind == "Service" and ref.api_version == "v1":
            self.loops["backends"].queue.add((ns, ref.name))

    def _on_route(self, kind: str, old: HTTPRoute | None, new: HTTPRoute | None, initial: bool) -> None:
        obj = new or old
        assert obj is not None
        uid = obj.meta.uid
        if kind == DELETED:
            self._route_seen.pop(uid, None)
            self._reverted.discard(uid)
        elif old is None and not initial:
            self._route_seen.setdefault(uid, time.monotonic())
        elif old is not None and new is not None and _routed(old) and not _routed(new):
            # Something put the Service backendRefs back: cert-manager's Present before a self-check.
            self._reverted.add(uid)
            self.metrics.route_reverts.inc()
        self.loops["routes"].queue.add(obj.meta.key)
        # Both versions: a Service the route no longer names must have its companion looked at too.
        refs = {ref for version in (old, new) if version is not None for ref in route_service_refs(version)}
        for ref in refs:
            namespace, _, service = ref.partition("/")
            self.loops["shadows"].queue.add((namespace, service))

    def _on_shadow(self, _: str, old: HTTPRoute | None, new: HTTPRoute | None, initial: bool) -> None:
        obj = new or old
        assert obj is not None
        ref = obj.meta.controller_ref()
        if ref is not None and ref.kind == "Service" and ref.api_version == "v1":
            self.loops["shadows"].queue.add((obj.meta.namespace, ref.name))

    def _on_challenge(self, kind: str, old: Challenge | None, new: Challenge | None, initial: bool) -> None:
        obj = new or old
        assert obj is not None
        self._count_challenge(obj, initial)
        if kind == DELETED:
            self._counted_challenges.discard(obj.meta.uid)
            self.cache.forget_challenge(obj.meta.uid)
        for svc in self.cache.services.by_index(CONTROLLER_UID, obj.meta.uid):
            self._enqueue_service(svc.meta.key)
        for route in self.cache.routes.by_index(CONTROLLER_UID, obj.meta.uid):
            self.loops["routes"].queue.add(route.meta.key)

    def _on_project(self, _: str, old: Project | None, new: Project | None, initial: bool) -> None:
        namespaces = {p.project_namespace for p in (old, new) if p is not None}
        for ns in namespaces:
            for svc in self.cache.services.by_index(NAMESPACE, ns):
                self._enqueue_service(svc.meta.key)
            for route in self.cache.routes.by_index(NAMESPACE, ns):
                self.loops["routes"].queue.add(route.meta.key)

    def _count_challenge(self, challenge: Challenge, initial: bool) -> None:
        """Counts a final state once; challenges already final at start-up were counted by an earlier run."""
        outcome = challenges.outcome(challenge.state)
        uid = challenge.meta.uid
        if outcome is None or uid in self._counted_challenges:
            return
        self._counted_challenges.add(uid)
        if initial:
            return
        projects = self.cache.projects_for(challenge.meta.namespace)
        project = f"{projects[0].meta.namespace}/{projects[0].meta.name}" if projects else "none"
        self.metrics.challenge_outcomes.labels(project, outcome, challenge.state).inc()
        log.info(
            "challenge finished",
            extra={
                "object": f"{challenge.meta.namespace}/{challenge.meta.name}",
                "state": challenge.state,
                "outcome": outcome,
                "dnsName": challenge.dns_name,
            },
        )

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs until `stop()`; then stops watching, drains in-flight work and returns."""
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
            for loop in self.loops.values():
                tg.start_soon(loop.queue.run_delays)
                for _ in range(loop.workers):
                    tg.start_soon(self._worker, loop)
            if self.settings.resync_period > 0:
                tg.start_soon(self._resync)
            await self._stop.wait()
            log.info("stopping: draining work queues")
            informer_scope.cancel()
            for loop in self.loops.values():
                loop.queue.shutdown()
            with anyio.move_on_after(DRAIN_SECONDS):
                for loop in self.loops.values():
                    await loop.queue.wait_drained()
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    def _cache_sizes(self) -> dict[str, int]:
        c = self.cache
        return {
            "services": len(c.services),
            "backends": len(c.backends),
            "httproutes": len(c.routes),
            "challenges": len(c.challenges),
            "projects": len(c.projects),
        }

    async def _resync(self) -> None:
        """A slow safety net; every real trigger is a watch event."""
        while True:
            period = self.settings.resync_period
            await anyio.sleep(period * random.uniform(0.9, 1.1))
            for svc in self.cache.services:
                self._enqueue_service(svc.meta.key)
            for route in self.cache.routes:
                self.loops["routes"].queue.add(route.meta.key)

    async def _worker(self, loop: Loop) -> None:
        while (key := await loop.queue.get()) is not None:
            started = time.monotonic()
            result = "success"
            try:
                await self._sync(loop, key)
                loop.queue.forget(key)
            except Requeue:
                result = "requeue"
                loop.queue.add_rate_limited(key)
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
            await self._report(refusal)
        if decision.skipped and not decision.writes:
            log.debug(
                "no action",
                extra={"controller": loop.name, "object": f"{key[0]}/{key[1]}", "reason": decision.skipped},
            )
        for write in decision.writes:
            await self._apply(loop, key, write)
        if decision.extra.get("routed"):
            uid = decision.extra.get("route_uid")
            if uid is None:
                route = self.cache.route(*key)
                uid = route.meta.uid if route else None
            seen = self._route_seen.pop(uid, None) if uid else None
            if seen is not None and decision.writes:
                self.metrics.route_wiring.observe(time.monotonic() - seen)
            if loop.name == "routes" and decision.writes and uid in self._reverted:
                self._reverted.discard(uid)
                self.metrics.route_repatches.inc()

    # -- applying -------------------------------------------------------------------------------

    async def _apply(self, loop: Loop, key: Key, write: Write) -> None:
        resource = WRITE_RESOURCES[write.kind]
        verb = {Patch: "patch", Create: "create", Delete: "delete"}[type(write)]
        where = {"kind": write.kind.value, "object": f"{write.namespace}/{write.name}", "reason": write.reason}
        try:
            if isinstance(write, Patch):
                body = copy.deepcopy(write.body)
                body.setdefault("metadata", {})["resourceVersion"] = write.resource_version
                self._write_through(write.kind, await self.client.patch(resource, write.namespace, write.name, body))
            elif isinstance(write, Create):
                self._write_through(write.kind, await self.client.create(resource, write.namespace, write.body))
            else:
                try:
                    await self.client.delete(resource, write.namespace, write.name, write.uid, write.resource_version)
                except ApiError as exc:
                    if not exc.not_found:
                        raise
        except ApiError as exc:
            if exc.conflict and verb == "create" and exc.reason == "AlreadyExists":
                # Either ours and the watch has not shown it yet (its event will re-trigger us), or
                # someone else's object of that name, which we must not touch: no retry loop either way.
                self.metrics.writes.labels(write.kind.value, verb, "already_exists").inc()
                log.info(f"{verb} found the name taken", extra={**where, "error": exc.message})
                return
            if exc.conflict:
                self.metrics.writes.labels(write.kind.value, verb, "conflict").inc()
                log.info(f"{verb} conflicted; will retry on fresh state", extra={**where, "error": exc.message})
                raise Requeue() from exc
            if exc.not_found and verb == "patch":
                self.metrics.writes.labels(write.kind.value, verb, "not_found").inc()
                log.info(f"{verb} target is gone", extra=where)
                return
            if exc.namespace_terminating:
                # Everything in it is going away; nothing to fix and nobody to tell.
                self.metrics.writes.labels(write.kind.value, verb, "namespace_terminating").inc()
                log.info(f"{verb} skipped: namespace is being deleted", extra=where)
                return
            if exc.transient:
                self.metrics.writes.labels(write.kind.value, verb, "error").inc()
                log.warning(f"{verb} failed", extra={**where, "status": exc.status, "error": exc.message})
                raise Requeue() from exc
            # 4xx: our request is wrong for this object; retrying unchanged cannot help. Report it
            # where the tenant can see it; the next watch event or resync tries again.
            self.metrics.writes.labels(write.kind.value, verb, "rejected").inc()
            log.error(f"{verb} rejected by the API server", extra={**where, "status": exc.status, "error": exc.message})
            subject = self._subject(loop, key)
            if subject is not None:
                await self._event(
                    subject,
                    "Warning",
                    "WriteRejected",
                    f"{verb} {write.kind.value} {write.namespace}/{write.name} rejected "
                    f"({exc.status} {exc.reason}): {exc.message}"[:1000],
                )
            return
        self.metrics.writes.labels(write.kind.value, verb, "success").inc()
        log.info(f"{PAST[verb]} {write.kind.value}", extra=where)

    def _write_through(self, kind: Kind, raw: Mapping[str, Any]) -> None:
        """Put a write's answer into the cache at once, so the next decision (e.g. the next port
        allocation in this namespace) sees it without waiting for the watch event."""
        if not isinstance(raw, Mapping) or not raw.get("metadata"):
            return
        keep = self.policy.annotation_keys()
        view: Any
        store: Any
        if kind is Kind.SERVICE:
            view, store = Service.from_raw(raw, keep), self.cache.services
        elif kind is Kind.BACKEND:
            view, store = Backend.from_raw(raw, keep), self.cache.backends
        else:
            view = HTTPRoute.from_raw(raw, keep)
            ours = view.meta.labels.get(self.policy.managed_by_label) == self.policy.managed_by_value
            store = self.cache.shadows if ours else self.cache.routes
        if not store.is_stale(view):
            store.upsert(view)

    def _subject(self, loop: Loop, key: Key) -> tuple[Kind, Service | HTTPRoute] | None:
        obj = self.cache.service(*key) if loop.subject is Kind.SERVICE else self.cache.route(*key)
        return (loop.subject, obj) if obj is not None else None

    async def _report(self, refusal: Refusal) -> None:
        """Log, count and show a refusal once per object and reason (not on every resync)."""
        marker = (refusal.uid or f"{refusal.namespace}/{refusal.name}", refusal.reason)
        if marker in self._reported:
            return
        self._reported[marker] = None
        if len(self._reported) > REPORTED_MAX:
            self._reported.popitem(last=False)
        self.metrics.refusals.labels(refusal.kind.value, refusal.reason).inc()
        log.warning(
            "refused",
            extra={
                "kind": refusal.kind.value,
                "object": f"{refusal.namespace}/{refusal.name}",
                "reason": refusal.reason,
                "detail": refusal.message,
            },
        )
        await self._post_event(
            refusal.kind, refusal.namespace, refusal.name, refusal.uid, "Warning", refusal.reason, refusal.message
        )

    async def _event(self, subject: tuple[Kind, Service | HTTPRoute], type_: str, reason: str, message: str) -> None:
        kind, obj = subject
        await self._post_event(kind, obj.meta.namespace, obj.meta.name, obj.meta.uid, type_, reason, message)

    async def _post_event(
        self, kind: Kind, namespace: str, name: str, uid: str, type_: str, reason: str, message: str
    ) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: Mapping[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": API_VERSIONS[kind],
                "kind": kind.value,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.create(EVENTS, namespace, body)
            self.metrics.events.labels(type_, reason).inc()
        except Exception as exc:  # an Event is best effort; it must never fail a reconcile
            log.warning(
                "could not post event",
                extra={"object": f"{namespace}/{name}", "reason": reason, "error": str(exc)},
            )
