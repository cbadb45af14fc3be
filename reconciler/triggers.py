"""Which keys each loop must look at after a change in the cache: the event -> keys mapping.

Pure functions of (change, cache), no I/O. Each names every key a change can affect, reached through the
cache's indexes rather than scans, and from both versions of the object: a key only the old version led to
must be looked at again as well. A key missed here leaves a solver waiting for the next resync, so every
mapping has its own unit test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.cache import ClusterCache, route_service_refs
from reconciler.hostnames import DomainClaim, ServedRoute
from reconciler.kube.store import Change, EventType
from reconciler.model import Backend, Challenge, HTTPRoute, Key, Meta, Project, Service
from reconciler.names import service_of_backend


def matters(change: Change[Any]) -> bool:
    """False for an update that leaves the view as it was but for its resourceVersion: the views hold
    only what decisions read, so such an update (a status message counting down, a field we drop) can
    change no decision and wakes nothing. The store keeps the new resourceVersion all the same."""
    old, new = change.old, change.new
    if change.type is not EventType.MODIFIED or old is None or new is None:
        return True
    if type(old) is not type(new):
        return True
    for name in type(old).model_fields:
        a, b = getattr(old, name), getattr(new, name)
        if name == "meta":
            if any(getattr(a, f) != getattr(b, f) for f in _META_BUT_VERSION):
                return True
        elif a != b:
            return True
    return False


_META_BUT_VERSION = tuple(f for f in Meta.model_fields if f != "resource_version")


@dataclass(slots=True)
class Wake:
    """Keys to enqueue, per loop (duplicates are harmless: the queues dedupe)."""

    services: list[Key] = field(default_factory=list)
    backends: list[Key] = field(default_factory=list)
    routes: list[Key] = field(default_factory=list)
    shadows: list[Key] = field(default_factory=list)
    challenges: list[Key] = field(default_factory=list)
    """Challenges whose story (Events, probe) may have moved on."""

    def solver_service(self, key: Key, cache: ClusterCache) -> None:
        """A Service and everything decided from it."""
        self.services.append(key)
        self.derived_from(key, cache)

    def derived_from(self, service: Key, cache: ClusterCache) -> None:
        """What is decided from a Service: its Backend, its companion route, the solver routes naming it,
        and the story of the Challenge it solves."""
        self.backends.append(service)
        self.shadows.append(service)
        self.routes.extend(route.meta.key for route in cache.routes_for_service(*service))
        svc = cache.service(*service)
        if svc is not None:
            self.challenge_of(svc.meta, cache)

    def challenge_of(self, meta: Meta, cache: ClusterCache) -> None:
        """The Challenge that controls a solver object, if the cache holds it."""
        ref = meta.controller_ref()
        challenge = cache.challenge_by_uid(ref.uid) if ref is not None and ref.kind == "Challenge" else None
        if challenge is not None:
            self.challenges.append(challenge.meta.key)


def owning_service(meta: Meta) -> Key | None:
    """The Service that controls a derived object (a Backend, a companion route), if any."""
    ref = meta.controller_ref()
    if ref is None or ref.kind != "Service" or ref.api_version != "v1":
        return None
    return (meta.namespace, ref.name)


def on_service(change: Change[Service], cache: ClusterCache) -> Wake:
    wake = Wake()
    key = change.obj.meta.key
    if any(cache.solver_labelled(version) for version in change.versions()):
        wake.solver_service(key, cache)
    else:
        # Any other LoadBalancer Service: only its own Backend (backend mode `all`) is decided from it.
        wake.backends.append(key)
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
    wake.challenge_of(change.obj.meta, cache)
    for version in change.versions():
        for ref in route_service_refs(version):
            namespace, _, service = ref.partition("/")
            wake.shadows.append((namespace, service))
    return wake


def on_shadow(change: Change[HTTPRoute], cache: ClusterCache) -> Wake:
    """A route carrying our managed-by label: the companion decision of the Service that owns it."""
    owner = owning_service(change.obj.meta)
    wake = Wake(shadows=[owner] if owner is not None else [])
    svc = cache.service(*owner) if owner is not None else None
    if svc is not None:
        wake.challenge_of(svc.meta, cache)  # the Gateway's verdict on our route is part of its story
    return wake


def on_challenge(change: Change[Challenge], cache: ClusterCache) -> Wake:
    """The solver objects the Challenge controls (found by its uid); and when it ends, the other solvers
    of its namespace: one of them may take the concurrency slot it held."""
    wake = Wake(challenges=[change.obj.meta.key])
    uid = change.obj.meta.uid
    for svc in cache.services_controlled_by(uid):
        wake.solver_service(svc.meta.key, cache)
    wake.routes.extend(route.meta.key for route in cache.routes_controlled_by(uid))
    was_active = change.old is not None and not change.old.final
    active = change.new is not None and not change.new.final
    if was_active and not active:
        wake.services.extend(svc.meta.key for svc in cache.solver_services_in(change.obj.meta.namespace))
    return wake


def _challenges_for_names(names: set[str], cache: ClusterCache) -> Wake:
    wake = Wake()
    for name in sorted(names):
        for challenge in cache.challenges_covered_by(name):
            for svc in cache.services_controlled_by(challenge.meta.uid):
                wake.solver_service(svc.meta.key, cache)
    return wake


def on_claim(change: Change[DomainClaim], cache: ClusterCache) -> Wake:
    """A claim made, transferred or deleted: every Challenge it decides (either version's hostname)."""
    return _challenges_for_names({c.hostname for c in change.versions() if c.hostname}, cache)


def on_served_route(change: Change[ServedRoute], cache: ClusterCache) -> Wake:
    """A route that serves (or stopped serving) a name decides the Challenges for that name."""
    return _challenges_for_names({h for route in change.versions() for h in route.hostnames}, cache)


def on_project(change: Change[Project], cache: ClusterCache) -> Wake:
    """Everything in the project namespace(s) either version names: the network type decides it all."""
    wake = Wake()
    for namespace in sorted({p.project_namespace for p in change.versions()}):
        for svc in cache.services_in(namespace):
            wake.solver_service(svc.meta.key, cache)
        wake.routes.extend(route.meta.key for route in cache.routes_in(namespace))
    return wake


def on_gateway_config(change: Change[Any], cache: ClusterCache) -> Wake:
    """A Gateway, GatewayClass or EnvoyProxy changed: route mode `auto` and the probe's address may
    change for any solver route. Rare, so every solver is looked at again."""
    wake = Wake()
    for route in cache.routes:
        wake.routes.append(route.meta.key)
        wake.challenge_of(route.meta, cache)
        for ref in route_service_refs(route):
            namespace, _, service = ref.partition("/")
            wake.shadows.append((namespace, service))
    return wake
