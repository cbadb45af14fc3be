"""Bookkeeping for the metrics that span several events: challenge outcomes (each counted once) and
route wiring (first seen -> routed, and patch mode's revert/re-patch flaps). Never needed for
correctness; kept apart so the controller only routes events and decisions here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from reconciler.cache import ClusterCache
from reconciler.kube.store import Change, EventType
from reconciler.metrics import Metrics
from reconciler.model import Challenge, HTTPRoute, Service
from reconciler.policy import Policy
from reconciler.reconcile import challenges
from reconciler.reconcile.intents import Decision
from reconciler.reconcile.limits import holds_slot
from reconciler.text import LABEL_VALUE_MAX, clip

log = logging.getLogger(__name__)


def project_label(cache: ClusterCache, namespace: str) -> str:
    """`org/name` of the namespace's Project, `none` without one: a bounded label value."""
    projects = cache.projects_for(namespace)
    if not projects:
        return "none"
    return clip(f"{projects[0].meta.namespace}/{projects[0].meta.name}", LABEL_VALUE_MAX)


class ChallengeOutcomes:
    """Counts a Challenge's final state once; those already final at start-up were counted by an earlier run."""

    def __init__(self, metrics: Metrics, cache: ClusterCache) -> None:
        self._metrics = metrics
        self._cache = cache
        self._counted: set[str] = set()

    def observe(self, change: Change[Challenge]) -> None:
        challenge = change.obj
        uid = challenge.meta.uid
        outcome = challenges.outcome(challenge.state)
        if outcome is not None and uid not in self._counted:
            self._counted.add(uid)
            if not change.initial:
                project = project_label(self._cache, challenge.meta.namespace)
                self._metrics.challenge_outcomes.labels(project, outcome, challenge.state).inc()
                log.info(
                    "challenge finished",
                    extra={
                        "object": f"{challenge.meta.namespace}/{challenge.meta.name}",
                        "state": challenge.state,
                        "outcome": outcome,
                        "dnsName": challenge.dns_name,
                    },
                )
        if change.type is EventType.DELETED:
            self._counted.discard(uid)


def routed_to_backends(route: HTTPRoute) -> bool:
    refs = route.backend_refs()
    return bool(refs) and all(ref.kind == "Backend" for ref in refs)


class RouteWiring:
    """Seconds from a solver route's first watch event to the decision that routes it, and (route mode
    `patch`) cert-manager's reverts of a routed route and our re-patches."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._reverted: set[str] = set()

    def observe(self, change: Change[HTTPRoute]) -> None:
        uid = change.obj.meta.uid
        old, new = change.old, change.new
        if change.type is EventType.DELETED:
            self._seen.pop(uid, None)
            self._reverted.discard(uid)
        elif old is None and not change.initial:
            self._seen.setdefault(uid, self._clock())
        elif old is not None and new is not None and routed_to_backends(old) and not routed_to_backends(new):
            # Something put the Service backendRefs back: cert-manager's Present before a self-check.
            self._reverted.add(uid)
            self._metrics.route_reverts.inc()

    def decided(self, decision: Decision, rewrites_route: bool) -> None:
        """`rewrites_route`: the decision patches the solver route itself (patch mode)."""
        uid = decision.routed
        if uid is None:
            return
        seen = self._seen.pop(uid, None)
        if seen is not None and decision.writes:
            self._metrics.route_wiring.observe(self._clock() - seen)
        if rewrites_route and decision.writes and uid in self._reverted:
            self._reverted.discard(uid)
            self._metrics.route_repatches.inc()


class Exposures:
    """When each solver Service was first seen exposed on the EIP without an address: the clock the
    `NoAddress` time limit runs on (kept in the cache, read by `reconcile/diagnosis.py`)."""

    def __init__(self, cache: ClusterCache, policy: Policy) -> None:
        self._cache = cache
        self._policy = policy

    def observe(self, change: Change[Service]) -> None:
        svc = change.new
        uid = change.obj.meta.uid
        if svc is None or svc.ingress or not holds_slot(svc, self._policy):
            self._cache.exposures.pop(uid, None)
        else:
            self._cache.exposures.setdefault(uid, self._cache.clock())
