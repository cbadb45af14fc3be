"""A rate-limited work queue of keys with client-go semantics.

- A key is handed to at most one worker at a time. Adding a key while it is processed marks it dirty;
  `done` puts it back, so the change is never lost and never processed concurrently.
- Adding a key that is already queued is a no-op (dedupe).
- `add_after` delays an add; `add_rate_limited` delays by per-key exponential backoff combined with an
  overall token bucket; `forget` resets the backoff after a success.
- `shutdown` stops new adds; workers drain what is queued and then get `None`; `wait_drained` returns
  once in-flight work is done.

Single event loop, so no locks: state only changes between awaits.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
from prometheus_client import Counter, Gauge, Histogram

from reconciler.kube.ratelimit import QueueRateLimiter
from reconciler.metrics import Metrics

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class _QueueMetrics:
    """One queue's labelled metrics, resolved once: `.labels()` on every add and get is a lock and a
    dictionary lookup each, on the hottest path there is."""

    adds: Counter
    retries: Counter
    queue_duration: Histogram
    work_duration: Histogram
    depth: Gauge

    @classmethod
    def bind(cls, metrics: Metrics, name: str) -> _QueueMetrics:
        return cls(
            metrics.wq_adds.labels(name),
            metrics.wq_retries.labels(name),
            metrics.wq_queue_duration.labels(name),
            metrics.wq_work_duration.labels(name),
            metrics.wq_depth.labels(name),
        )


class WorkQueue(Generic[K]):
    def __init__(
        self,
        name: str,
        metrics: Metrics | None = None,
        limiter: QueueRateLimiter[K] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._metrics = _QueueMetrics.bind(metrics, name) if metrics is not None else None
        self._limiter: QueueRateLimiter[K] = limiter or QueueRateLimiter()
        self._clock = clock
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._queued_at: dict[K, float] = {}
        self._processing: dict[K, float] = {}
        self._waiting: list[tuple[float, int, K]] = []
        self._waiting_until: dict[K, float] = {}
        self._seq = itertools.count()
        self._shutting_down = False
        self._item_ready = anyio.Event()
        self._delay_changed = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        if metrics is not None:
            metrics.wq_gauges.register(name, self._in_flight_seconds)
            metrics.wq_depth.labels(name).set(0)

    # -- adding ---------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        self._queued_at.setdefault(key, self._clock())
        if self._metrics is not None:
            self._metrics.adds.inc()
        if key in self._processing:
            return  # re-queued by `done`
        self._queue.append(key)
        self._depth_changed()
        self._wake(getters=True)

    def add_after(self, key: K, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready = self._clock() + delay
        current = self._waiting_until.get(key)
        if current is not None and current <= ready:
            return  # an earlier add is already scheduled
        self._waiting_until[key] = ready
        heapq.heappush(self._waiting, (ready, next(self._seq), key))
        self._wake(delays=True)

    def add_rate_limited(self, key: K, at_least: float = 0.0) -> None:
        """Back after the key's backoff, and not before `at_least` seconds."""
        if self._metrics is not None:
            self._metrics.retries.inc()
        self.add_after(key, max(at_least, self._limiter.when(key)))

    def ready_at(self, key: K) -> float | None:
        """When a delayed key is due (queue clock), or None if it is not waiting."""
        return self._waiting_until.get(key)

    def forget(self, key: K) -> None:
        self._limiter.forget(key)

    def retries(self, key: K) -> int:
        return self._limiter.retries(key)

    # -- taking ---------------------------------------------------------------------------------

    async def get(self) -> K | None:
        """Next key to process, or None once shut down and empty."""
        while not self._queue:
            if self._shutting_down:
                return None
            event = self._item_ready
            await event.wait()
        key = self._queue.popleft()
        now = self._clock()
        self._processing[key] = now
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._dirty.discard(key)
        queued = self._queued_at.pop(key, now)
        if self._metrics is not None:
            self._metrics.queue_duration.observe(max(0.0, now - queued))
        self._depth_changed()
        return key

    def done(self, key: K) -> None:
        started = self._processing.pop(key, None)
        if started is not None and self._metrics is not None:
            self._metrics.work_duration.observe(max(0.0, self._clock() - started))
        if key in self._dirty:
            self._queue.append(key)
            self._depth_changed()
            self._wake(getters=True)
        if not self._processing:
            self._idle.set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run_delays(self) -> None:
        """Moves delayed keys into the queue when due; run it in the controller's task group."""
        while not self._shutting_down:
            event = self._delay_changed
            if not self._waiting:
                await event.wait()
                continue
            ready, _, key = self._waiting[0]
            wait = ready - self._clock()
            if wait > 0:
                with anyio.move_on_after(wait):
                    await event.wait()
                continue
            heapq.heappop(self._waiting)
            if self._waiting_until.get(key) == ready:
                del self._waiting_until[key]
                self.add(key)

    def shutdown(self, drain: bool = True) -> None:
        """Refuse new adds. With `drain` the queued keys are still handed out; without, only the work in
        progress finishes (a replica handing over: the next leader has every key in its own queue)."""
        self._shutting_down = True
        self._waiting.clear()
        self._waiting_until.clear()
        if not drain:
            self._queue.clear()
            self._dirty.clear()
            self._queued_at.clear()
            self._depth_changed()
        self._wake(getters=True, delays=True)

    async def wait_drained(self) -> None:
        await self._idle.wait()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def delayed(self) -> int:
        return len(self._waiting_until)

    # -- internals ------------------------------------------------------------------------------

    def _wake(self, getters: bool = False, delays: bool = False) -> None:
        if getters:
            self._item_ready.set()
            self._item_ready = anyio.Event()
        if delays:
            self._delay_changed.set()
            self._delay_changed = anyio.Event()

    def _depth_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.depth.set(len(self._queue))

    def _in_flight_seconds(self) -> tuple[float, float]:
        now = self._clock()
        ages = [now - t for t in self._processing.values()]
        return (sum(ages), max(ages, default=0.0))
