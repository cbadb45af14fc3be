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
from reconciler.kube.resources import BACKENDS, CHALLENGES, HTTPROUTES, PROJECTS, SERVICES, Resource
from reconciler.kube.store import Change, Store
from reconciler.model import Backend, Challenge, HasMeta, HTTPRoute, Project, Service
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind

T = TypeVar("T", bound=HasMeta)

WRITABLE: dict[Kind, Resource] = {Kind.SERVICE: SERVICES, Kind.BACKEND: BACKENDS, Kind.HTTPROUTE: HTTPROUTES}
"""The resources our writes (and the Events about them) address, by the kind an intent names."""


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

    def holds(self, view: T) -> bool:
        return self.selector is None or self.selector.matches(view.meta.labels)


def watches(
    cache: ClusterCache,
    policy: Policy,
    challenges: Callable[[Change[Challenge]], None] | None = None,
    routes: Callable[[Change[HTTPRoute]], None] | None = None,
) -> tuple[Watch[Any], ...]:
    """The watches, in the order they are started; `challenges` and `routes` observe those changes."""
    managed = Selector(policy.managed_by_label, policy.managed_by_value)
    solver_routes = Selector(policy.domain_label)
    return (
        Watch(PROJECTS, Project.from_raw, cache.projects, triggers.on_project, cluster_wide=True),
        Watch(CHALLENGES, Challenge.from_raw, cache.challenges, triggers.on_challenge, observe=challenges),
        Watch(SERVICES, Service.from_raw, cache.services, triggers.on_service),
        Watch(BACKENDS, Backend.from_raw, cache.backends, triggers.on_backend),
        Watch(HTTPROUTES, HTTPRoute.from_raw, cache.routes, triggers.on_route, solver_routes, observe=routes),
        Watch(HTTPROUTES, HTTPRoute.from_raw, cache.shadows, triggers.on_shadow, managed),
    )


def store_raw(table: tuple[Watch[Any], ...], resource: Resource, raw: Mapping[str, Any], keep: frozenset[str]) -> None:
    """Put an object into every store that watches such an object (unless a newer one is there): how a
    write's answer reaches the cache before its watch event."""
    if not isinstance(raw, Mapping) or not raw.get("metadata"):
        return
    for watch in table:
        if watch.resource != resource:
            continue
        view = watch.parse(raw, keep)
        if watch.holds(view) and not watch.store.is_stale(view):
            watch.store.upsert(view)
