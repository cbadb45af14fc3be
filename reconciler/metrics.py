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

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def histogram(name: str, doc: str, *labels: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        self.build_info = gauge(f"{NS}_build_info", "Build information.", "version")
        self.build_info.labels(__version__).set(1)
        self.leader = gauge(f"{NS}_leader", "1 while this process holds the leader lease (or runs without election).")

        # Challenges: the user's explicit ask.
        self.challenge_outcomes = counter(
            f"{NS}_challenge_outcomes_total",
            "ACME challenges that reached a final state, by project namespace and outcome "
            "(valid = success; invalid, expired, errored = failure). Each challenge counts once.",
            *("project", "outcome", "state"),
        )
        self.route_wiring = histogram(
            f"{NS}_route_wiring_seconds",
            "Time from an ACME HTTPRoute appearing in the watch to it being routed to a Backend.",
            buckets=WIRING_BUCKETS,
        )
        self.route_reverts = counter(
            f"{NS}_route_reverts_total",
            "Route mode patch: solver HTTPRoutes seen turned back from the Backend to the Service (cert-manager's "
            "Present before each self-check).",
        )
        self.route_repatches = counter(
            f"{NS}_route_repatches_total",
            "Route mode patch: solver HTTPRoutes routed to the Backend again after a revert.",
        )
        self.writes = counter(
            f"{NS}_writes_total",
            "Writes the reconciler decided, by kind, verb and result; dry_run=true: logged, not sent.",
            *("kind", "verb", "result", "dry_run"),
        )
        self.probes = counter(
            f"{NS}_gateway_probes_total",
            "GETs of a routed challenge path through the gateway, by result "
            "(ok, wrong_body, bad_status, connection_error).",
            "result",
        )
        self.refusals = counter(
            f"{NS}_refusals_total",
            "Objects the reconciler refused to act on (bad or foreign input), once per object and reason.",
            *("kind", "reason"),
        )
        self.events = counter(f"{NS}_events_total", "Kubernetes Events emitted, by type and reason.", "type", "reason")
        self.events_dropped = counter(
            f"{NS}_events_dropped_total", "Events not sent because the outbox was full (the API server is that slow)."
        )

        # Reconcile loop.
        self.reconciles = counter(
            f"{NS}_reconcile_total", "Reconcile runs by controller and result.", "controller", "result"
        )
        self.reconcile_errors = counter(
            f"{NS}_reconcile_errors_total", "Reconcile runs that failed, by controller.", "controller"
        )
        self.reconcile_duration = histogram(
            f"{NS}_reconcile_duration_seconds",
            "Duration of one reconcile run including its writes, by controller.",
            "controller",
        )

        # Work queues (client-go names).
        self.wq_depth = gauge("workqueue_depth", "Current depth of the work queue.", "name")
        self.wq_adds = counter("workqueue_adds_total", "Adds handled by the work queue.", "name")
        self.wq_queue_duration = histogram(
            "workqueue_queue_duration_seconds",
            "Seconds an item stays in the work queue before being requested.",
            "name",
        )
        self.wq_work_duration = histogram(
            "workqueue_work_duration_seconds", "Seconds processing an item from the work queue takes.", "name"
        )
        self.wq_retries = counter("workqueue_retries_total", "Retries handled by the work queue.", "name")
        self.wq_gauges = QueueGauges()
        r.register(self.wq_gauges)

        # Watches and the API.
        self.watch_restarts = counter(
            f"{NS}_watch_restarts_total",
            "Watch streams re-opened, by resource and reason (timeout, error, gone).",
            *("resource", "reason"),
        )
        self.relists = counter(f"{NS}_relists_total", "Full lists, by resource.", "resource")
        self.watch_events = counter(
            f"{NS}_watch_events_total", "Watch events received, by resource and type.", "resource", "type"
        )
        self.cache_objects = gauge(f"{NS}_cache_objects", "Objects in the cache, by resource.", "resource")
        self.informer_synced = gauge(
            f"{NS}_informer_synced", "1 once the resource's first list is in the cache.", "resource"
        )
        self.api_requests = counter(
            f"{NS}_api_requests_total",
            "Requests to the Kubernetes API by verb and HTTP status code ('error' for no response).",
            *("verb", "code"),
        )
        self.api_request_duration = histogram(
            f"{NS}_api_request_duration_seconds", "Latency of non-watch API requests, by verb.", "verb"
        )
        self.api_throttle = histogram(
            f"{NS}_api_client_rate_limiter_seconds", "Time requests waited for the client-side rate limiter."
        )
