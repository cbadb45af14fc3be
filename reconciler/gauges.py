"""Gauges computed from the cache at scrape time: nothing polls, nothing is kept twice.

- `acme_gateway_challenges_waiting{project}`: solvers held back by the per-project limit;
- `acme_gateway_challenge_oldest_pending_seconds{project}`: the age of the oldest Challenge not yet final
  (the "pending longer than 10 minutes" alert);
- `acme_gateway_project_info{project,namespace,network}` = 1 per kube-dc Project, what alerts join on
  (e.g. cert-manager's certificate expiry, for cloud projects only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler.cache import ClusterCache
from reconciler.policy import Policy
from reconciler.reconcile import limits
from reconciler.text import LABEL_VALUE_MAX, clip
from reconciler.tracking import project_label

Samples = Iterable[tuple[Sequence[str], float]]


class CacheGauge(Collector):
    def __init__(self, name: str, documentation: str, labels: Sequence[str], samples: Callable[[], Samples]) -> None:
        self._name, self._documentation, self._labels = name, documentation, list(labels)
        self._samples = samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, value in self._samples():
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


def cache_gauges(cache: ClusterCache, policy: Policy) -> list[CacheGauge]:
    return [
        CacheGauge(
            "acme_gateway_challenges_waiting",
            "Challenges waiting for a free slot of their project's concurrency limit, by project.",
            ["project"],
            lambda: _waiting(cache, policy),
        ),
        CacheGauge(
            "acme_gateway_challenge_oldest_pending_seconds",
            "Age in seconds of the oldest Challenge not yet in a final state, by project.",
            ["project"],
            lambda: _oldest_pending(cache),
        ),
        CacheGauge(
            "acme_gateway_project_info",
            "1 per kube-dc Project, with its project namespace and network type.",
            ["project", "namespace", "network"],
            lambda: _projects(cache),
        ),
    ]


def _waiting(cache: ClusterCache, policy: Policy) -> Samples:
    for namespace in cache.solver_namespaces():
        waiting = limits.waiting_count(namespace, cache, policy)
        if waiting:
            yield [project_label(cache, namespace)], waiting


def _oldest_pending(cache: ClusterCache) -> Samples:
    now = time.time()
    oldest: dict[str, float] = {}
    for challenge in cache.challenges:
        created = _epoch(challenge.meta.creation_timestamp)
        if challenge.final or created is None:
            continue
        project = project_label(cache, challenge.meta.namespace)
        oldest[project] = max(oldest.get(project, 0.0), now - created)
    return [([project], age) for project, age in sorted(oldest.items())]


def _projects(cache: ClusterCache) -> Samples:
    for project in cache.projects:
        name = clip(f"{project.meta.namespace}/{project.meta.name}", LABEL_VALUE_MAX)
        network = project.network_type if project.network_type in ("cloud", "public") else "unknown"
        yield [name, clip(project.project_namespace, LABEL_VALUE_MAX), network], 1


def _epoch(timestamp: str) -> float | None:
    try:
        return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
