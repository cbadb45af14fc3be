"""What the controller lists and watches, and where each kind of object lives in the cache.

One table serves both directions of the data path: the informers are built from it, and a write's answer
goes back through it into the store(s) whose selector the object matches, so the next decision sees it
without waiting for the watch event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from reconciler import triggers
from reconciler.cache import ClusterCache
from reconciler.gateways import EnvoyProxy, Gateway, GatewayClass
from reconciler.hostnames import DomainClaim, ServedRoute
from reconciler.kube.resources import (
    BACKENDS,
    CHALLENGES,
    DOMAINCLAIMS,
    ENVOYPROXIES,
    GATEWAYCLASSES,
    GATEWAYS,
    HTTPROUTES,
    PROJECTS,
    SERVICES,
    TLSROUTES,
    Resource,
)
from reconciler.kube.store import Change, EventType, Store
from reconciler.model import Backend, Challenge, HasMeta, HTTPRoute, Project, Service
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind

T = TypeVar("T", bound=HasMeta)

RESOURCES: dict[Kind, Resource] = {
    Kind.SERVICE: SERVICES,
    Kind.BACKEND: BACKENDS,
    Kind.HTTPROUTE: HTTPROUTES,
    Kind.CHALLENGE: CHALLENGES,
    Kind.DOMAINCLAIM: DOMAINCLAIMS,
}
"""The resources our writes and Events address, by the kind an intent names."""


@dataclass(frozen=True, slots=True)
class Selector:
    """A server-side label selector of one term: `label` (exists) or `label=value`."""

    label: str
    value: str | None = None

    def __str__(self) -> str:
        return self.label if self.value is None else f"{self.label}={self.value}"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels if self.value is None else labels.get(self.label) == self.value


@dataclass(frozen=True, slots=True)
class Watch(Generic[T]):
    """One list+watch: the resource, how a raw object becomes a view, where it is kept, and which keys
    its changes wake."""

    resource: Resource
    parse: Callable[[Mapping[str, Any], frozenset[str] | None], T]
    store: Store[T]
    trigger: Callable[[Change[T], ClusterCache], triggers.Wake]
    selector: Selector | None = None
    cluster_wide: bool = False
    """Listed across all namespaces even when the controller is scoped (Projects live in org namespaces)."""
    observe: Callable[[Change[T]], None] | None = None
    """Metric bookkeeping that needs every change (`tracking`), before the keys are enqueued."""
    optional: bool = False
    """An API the cluster may not serve (TLSRoute): a missing resource counts as an empty list."""
    keep: Callable[[Mapping[str, Any]], bool] | None = None
    """Which objects can matter at all, judged on the raw JSON at the informer: the others cost a JSON
    parse and are neither cached nor looked at again."""

    def holds(self, view: T) -> bool:
        return self.selector is None or self.selector.matches(view.meta.labels)


def can_matter(solver_label: str) -> Callable[[Mapping[str, Any]], bool]:
    """Services that can matter: solvers (or Services claiming to be one, to be refused) and LoadBalancers
    (the ports they hold on a project's EIP; their Backends in backend mode `all`). A cluster's many
    ClusterIP and NodePort Services are dropped at the edge."""

    def keep(raw: Mapping[str, Any]) -> bool:
        spec = raw.get("spec")
        if isinstance(spec, Mapping) and spec.get("type") == "LoadBalancer":
            return True
        labels = (raw.get("metadata") or {}).get("labels")
        return isinstance(labels, Mapping) and solver_label in labels

    return keep


served_http = ServedRoute.parser("HTTPRoute")
served_tls = ServedRoute.parser("TLSRoute")


def watches(
    cache: ClusterCache,
    policy: Policy,
    challenges: Callable[[Change[Challenge]], None] | None = None,
    routes: Callable[[Change[HTTPRoute]], None] | None = None,
    services: Callable[[Change[Service]], None] | None = None,
) -> tuple[Watch[Any], ...]:
    """The watches, in the order they are started; `challenges` and `routes` observe those changes."""
    managed = Selector(policy.managed_by_label, policy.managed_by_value)
    solver_routes = Selector(policy.domain_label)
    solver_or_lb = can_matter(policy.solver_label)
    return (
        Watch(PROJECTS, Project.from_raw, cache.projects, triggers.on_project, cluster_wide=True),
        Watch(CHALLENGES, Challenge.from_raw, cache.challenges, triggers.on_challenge, observe=challenges),
        Watch(SERVICES, Service.from_raw, cache.services, triggers.on_service, observe=services, keep=solver_or_lb),
        Watch(BACKENDS, Backend.from_raw, cache.backends, triggers.on_backend),
        Watch(HTTPROUTES, HTTPRoute.from_raw, cache.routes, triggers.on_route, solver_routes, observe=routes),
        Watch(HTTPROUTES, HTTPRoute.from_raw, cache.shadows, triggers.on_shadow, managed),
        Watch(DOMAINCLAIMS, DomainClaim.from_raw, cache.claims, triggers.on_claim, cluster_wide=True),
        # Every route serving a hostname anywhere decides domain claims, whatever namespaces are watched.
        Watch(HTTPROUTES, served_http, cache.served_http, triggers.on_served_route, cluster_wide=True),
        Watch(TLSROUTES, served_tls, cache.served_tls, triggers.on_served_route, cluster_wide=True, optional=True),
        # Route mode `auto` and the probe read how the Gateways are set up.
        Watch(GATEWAYS, Gateway.from_raw, cache.gateways, triggers.on_gateway_config, cluster_wide=True),
        Watch(
            GATEWAYCLASSES, GatewayClass.from_raw, cache.gateway_classes, triggers.on_gateway_config, cluster_wide=True
        ),
        Watch(
            ENVOYPROXIES,
            EnvoyProxy.from_raw,
            cache.envoy_proxies,
            triggers.on_gateway_config,
            cluster_wide=True,
            optional=True,
        ),
    )


Changed = list[tuple[Watch[Any], Change[Any]]]
"""What a write did to the cache, for the same triggers a watch event would have woken."""


def forget(table: tuple[Watch[Any], ...], resource: Resource, key: tuple[str, str], uid: str) -> Changed:
    """Drop a deleted object from every store that holds it (this very object: same uid), so no decision
    deletes it a second time before the watch event arrives."""
    changed: Changed = []
    for watch in table:
        if watch.resource == resource and (held := watch.store.get(key)) is not None and held.meta.uid == uid:
            watch.store.delete(key)
            changed.append((watch, Change(EventType.DELETED, held, None)))
    return changed


def store_raw(
    table: tuple[Watch[Any], ...], resource: Resource, raw: Mapping[str, Any], keep: frozenset[str]
) -> Changed:
    """Put an object into every store that watches such an object (unless a newer one is there): how a
    write's answer reaches the cache, and the triggers, before its watch event (which then changes
    nothing and wakes nothing)."""
    changed: Changed = []
    if not isinstance(raw, Mapping) or not raw.get("metadata"):
        return changed
    for watch in table:
        if watch.resource != resource or (watch.keep is not None and not watch.keep(raw)):
            continue
        view = watch.parse(raw, keep)
        if watch.holds(view) and not watch.store.is_stale(view):
            old = watch.store.upsert(view)
            changed.append((watch, Change(EventType.ADDED if old is None else EventType.MODIFIED, old, view)))
    return changed
