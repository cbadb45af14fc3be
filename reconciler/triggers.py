"""Which keys each loop must look at after a change in the cache: the event -> keys mapping.

Pure functions of (change, cache), no I/O. Each names every key a change can affect, reached through the
cache's indexes rather than scans, and from both versions of the object: a key only the old version led to
must be looked at again as well. A key missed here leaves a solver waiting for the next resync, so every
mapping has its own unit test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.cache import ClusterCache, route_service_refs
from reconciler.kube.store import Change
from reconciler.model import Backend, Challenge, HTTPRoute, Key, Meta, Project, Service
from reconciler.names import service_of_backend


@dataclass(slots=True)
class Wake:
    """Keys to enqueue, per loop (duplicates are harmless: the queues dedupe)."""

    services: list[Key] = field(default_factory=list)
    backends: list[Key] = field(default_factory=list)
    routes: list[Key] = field(default_factory=list)
    shadows: list[Key] = field(default_factory=list)

    def solver_service(self, key: Key, cache: ClusterCache) -> None:
        """A Service and everything decided from it."""
        self.services.append(key)
        self.derived_from(key, cache)

    def derived_from(self, service: Key, cache: ClusterCache) -> None:
        """What is decided from a Service: its Backend, its companion route, the solver routes naming it."""
        self.backends.append(service)
        self.shadows.append(service)
        self.routes.extend(route.meta.key for route in cache.routes_for_service(*service))


def owning_service(meta: Meta) -> Key | None:
    """The Service that controls a derived object (a Backend, a companion route), if any."""
    ref = meta.controller_ref()
    if ref is None or ref.kind != "Service" or ref.api_version != "v1":
        return None
    return (meta.namespace, ref.name)


def on_service(change: Change[Service], cache: ClusterCache) -> Wake:
    wake = Wake()
    key = change.obj.meta.key
    wake.solver_service(key, cache)
    old, new = change.old, change.new
    if old is None or new is None or old.ports != new.ports or old.type != new.type:
        # A port taken or freed on the project's EIP can change another solver's allocation.
        wake.services.extend(svc.meta.key for svc in cache.solver_services_in(key[0]) if svc.meta.key != key)
    return wake


def on_backend(change: Change[Backend], cache: ClusterCache) -> Wake:
    wake = Wake()
    namespace, name = change.obj.meta.key
    service = service_of_backend(name)
    if service is not None:  # whoever made it: a route may be waiting for a Backend of that name
        wake.derived_from((namespace, service), cache)
    owner = owning_service(change.obj.meta)
    if owner is not None:
        wake.backends.append(owner)
    return wake


def on_route(change: Change[HTTPRoute], cache: ClusterCache) -> Wake:
    """A solver route: itself, and the companions of every Service either version names."""
    wake = Wake(routes=[change.obj.meta.key])
    for version in change.versions():
        for ref in route_service_refs(version):
            namespace, _, service = ref.partition("/")
            wake.shadows.append((namespace, service))
    return wake


def on_shadow(change: Change[HTTPRoute], cache: ClusterCache) -> Wake:
    """A route carrying our managed-by label: the companion decision of the Service that owns it."""
    owner = owning_service(change.obj.meta)
    return Wake(shadows=[owner] if owner is not None else [])


def on_challenge(change: Change[Challenge], cache: ClusterCache) -> Wake:
    """The solver objects the Challenge controls (found by its uid)."""
    wake = Wake()
    uid = change.obj.meta.uid
    for svc in cache.services_controlled_by(uid):
        wake.solver_service(svc.meta.key, cache)
    wake.routes.extend(route.meta.key for route in cache.routes_controlled_by(uid))
    return wake


def on_project(change: Change[Project], cache: ClusterCache) -> Wake:
    """Everything in the project namespace(s) either version names: the network type decides it all."""
    wake = Wake()
    for namespace in sorted({p.project_namespace for p in change.versions()}):
        for svc in cache.services_in(namespace):
            wake.solver_service(svc.meta.key, cache)
        wake.routes.extend(route.meta.key for route in cache.routes_in(namespace))
    return wake
