"""Prometheus metrics. One registry per process (tests build their own), names per Prometheus
conventions; the work-queue family uses client-go's names so existing dashboards apply."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reconciler import __version__

NS = "acme_gateway"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WIRING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class QueueGauges(Collector):
    """Work-queue gauges computed at scrape time from the live queues (nothing polls them)."""

    def __init__(self) -> None:
        self._sources: dict[str, Callable[[], tuple[float, float]]] = {}

    def register(self, name: str, source: Callable[[], tuple[float, float]]) -> None:
        """`source` returns (unfinished work seconds, longest running processor seconds)."""
        self._sources[name] = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        unfinished = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds",
            "Seconds of work in progress not yet observed by work_duration.",
            labels=["name"],
        )
        longest = GaugeMetricFamily(
            "workqueue_longest_running_processor_seconds",
            "Seconds the longest running processor for the queue has been running.",
            labels=["name"],
        )
        for name, source in sorted(self._sources.items()):
            u, lr = source()
            unfinished.add_metric([name], u)
            longest.add_metric([name], lr)
        yield unfinished
        yield longest

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(f"{NS}_build_info", "Build information.", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.leader = Gauge(
            f"{NS}_leader", "1 while this process holds the leader lease (or runs without election).", registry=r
        )

        # Challenges: the user's explicit ask.
        self.challenge_outcomes = Counter(
            f"{NS}_challenge_outcomes_total",
            "ACME challenges that reached a final state, by project namespace and outcome "
            "(valid = success; invalid, expired, errored = failure). Each challenge counts once.",
            ["project", "outcome", "state"],
            registry=r,
        )
        self.route_wiring = Histogram(
            f"{NS}_route_wiring_seconds",
            "Time from an ACME HTTPRoute appearing in the watch to it being routed to a Backend.",
            buckets=WIRING_BUCKETS,
            registry=r,
        )
        self.route_reverts = Counter(
            f"{NS}_route_reverts_total",
            "Route mode patch: solver HTTPRoutes seen turned back from the Backend to the Service (cert-manager's "
            "Present before each self-check).",
            registry=r,
        )
        self.route_repatches = Counter(
            f"{NS}_route_repatches_total",
            "Route mode patch: solver HTTPRoutes routed to the Backend again after a revert.",
            registry=r,
        )
        self.writes = Counter(
            f"{NS}_writes_total",
            "Writes the reconciler sent, by kind, verb and result.",
            ["kind", "verb", "result"],
            registry=r,
        )
        self.refusals = Counter(
            f"{NS}_refusals_total",
            "Objects the reconciler refused to act on (bad or foreign input), once per object and reason.",
            ["kind", "reason"],
            registry=r,
        )
        self.events = Counter(
            f"{NS}_events_total", "Kubernetes Events emitted, by type and reason.", ["type", "reason"], registry=r
        )

        # Reconcile loop.
        self.reconciles = Counter(
            f"{NS}_reconcile_total", "Reconcile runs by controller and result.", ["controller", "result"], registry=r
        )
        self.reconcile_errors = Counter(
            f"{NS}_reconcile_errors_total", "Reconcile runs that failed, by controller.", ["controller"], registry=r
        )
        self.reconcile_duration = Histogram(
            f"{NS}_reconcile_duration_seconds",
            "Duration of one reconcile run including its writes, by controller.",
            ["controller"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # Work queues (client-go names).
        self.wq_depth = Gauge("workqueue_depth", "Current depth of the work queue.", ["name"], registry=r)
        self.wq_adds = Counter("workqueue_adds_total", "Adds handled by the work queue.", ["name"], registry=r)
        self.wq_queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "Seconds an item stays in the work queue before being requested.",
            ["name"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wq_work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "Seconds processing an item from the work queue takes.",
            ["name"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wq_retries = Counter("workqueue_retries_total", "Retries handled by the work queue.", ["name"], registry=r)
        self.wq_gauges = QueueGauges()
        r.register(self.wq_gauges)

        # Watches and the API.
        self.watch_restarts = Counter(
            f"{NS}_watch_restarts_total",
            "Watch streams re-opened, by resource and reason (timeout, error, gone).",
            ["resource", "reason"],
            registry=r,
        )
        self.relists = Counter(f"{NS}_relists_total", "Full lists, by resource.", ["resource"], registry=r)
        self.watch_events = Counter(
            f"{NS}_watch_events_total", "Watch events received, by resource and type.", ["resource", "type"], registry=r
        )
        self.cache_objects = Gauge(
            f"{NS}_cache_objects", "Objects in the cache, by resource.", ["resource"], registry=r
        )
        self.informer_synced = Gauge(
            f"{NS}_informer_synced", "1 once the resource's first list is in the cache.", ["resource"], registry=r
        )
        self.api_requests = Counter(
            f"{NS}_api_requests_total",
            "Requests to the Kubernetes API by verb and HTTP status code ('error' for no response).",
            ["verb", "code"],
            registry=r,
        )
        self.api_request_duration = Histogram(
            f"{NS}_api_request_duration_seconds",
            "Latency of non-watch API requests, by verb.",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.api_throttle = Histogram(
            f"{NS}_api_client_rate_limiter_seconds",
            "Time requests waited for the client-side rate limiter.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
