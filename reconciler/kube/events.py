"""Kubernetes Events (core/v1) about the objects the reconciler looks at, where their owners see them
(`kubectl describe`). Best effort: an Event that cannot be posted is logged and never fails a reconcile.

Repeats are aggregated, never one Event per retry: an Event's name is derived from its object's uid and
its reason, so a repeat (even after a restart) finds it and raises its `count`, at most one write per
`repeat_interval` per Event; repeats in between are counted and go out with the next write.

While `run` runs (the controller's workers), Events are sent from outboxes by their own tasks: what to
post is still decided at once, but no worker waits on an Event's round trip before its next write (in a
renewal storm Events are half of all requests). All Events about one object go through the same sender,
so its story is written in the order it was told. Without `run`, `post` sends before it returns.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from reconciler.kube.client import ApiError
from reconciler.kube.resources import EVENTS, Resource
from reconciler.metrics import Metrics
from reconciler.model import JSON
from reconciler.text import EVENT_MESSAGE_MAX, clip

log = logging.getLogger(__name__)

COMPONENT = "acme-gateway-reconciler"
KEPT = 10_000
"""Events remembered for aggregation (oldest forgotten first)."""
OUTBOX = 10_000
"""Events waiting to be sent; beyond that, new ones are dropped and counted."""
SENDERS = 2
"""Sender tasks; each object's Events all go through one of them, so its story is written in order."""


class ObjectRef(NamedTuple):
    """The object an Event is about."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


class EventClient(Protocol):
    async def create(self, resource: Resource, namespace: str | None, body: JSON) -> JSON: ...

    async def patch(self, resource: Resource, namespace: str | None, name: str, body: Any) -> JSON: ...

    async def get(self, resource: Resource, namespace: str | None, name: str) -> JSON: ...


@dataclass(slots=True)
class _Posted:
    count: int
    written_at: float


class _Post(NamedTuple):
    about: ObjectRef
    name: str
    type_: str
    reason: str
    message: str
    repeat: bool
    update: bool
    """The Event exists (we posted it): raise its count rather than create it."""


def event_name(about: ObjectRef, reason: str) -> str:
    """One Event per object and reason: `<object>.<hash of uid and reason>` (a valid, bounded name)."""
    digest = hashlib.sha256(f"{about.uid}/{about.namespace}/{about.name}/{reason}".encode()).hexdigest()[:16]
    return f"{about.name[:200]}.{digest}"


class EventRecorder:
    def __init__(
        self,
        client: EventClient,
        metrics: Metrics,
        instance: str | None = None,
        dry_run: bool = False,
        repeat_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._instance = instance or socket.gethostname()
        self._dry_run = dry_run
        self._repeat_interval = repeat_interval
        self._clock = clock
        self._posted: OrderedDict[str, _Posted] = OrderedDict()
        self._outboxes: list[MemoryObjectSendStream[_Post]] = []
        self._sent_all = anyio.Event()
        self._sent_all.set()

    async def post(self, about: ObjectRef, type_: str, reason: str, message: str, repeat: bool = False) -> None:
        """Tell `about`'s owner. With `repeat`, an Event that exists gets its count raised (rate-limited);
        without, an Event that exists already is left as it is."""
        name = event_name(about, reason)
        seen = self._posted.get(name)
        now = self._clock()
        if seen is not None:
            seen.count += 1
            if not repeat or now - seen.written_at < self._repeat_interval:
                return
        if self._dry_run:
            log.info("dry run: would post event", extra={"object": _path(about), "reason": reason, "detail": message})
            self._remember(name, _Posted(1, now))
            return
        job = _Post(about, name, type_, reason, message, repeat, update=seen is not None)
        if not self._outboxes:
            await self._send(job)
            return
        if seen is None:
            self._remember(name, _Posted(1, now))  # decided: a repeat before it is sent only counts
        else:
            seen.written_at = now
        outbox = self._outboxes[zlib.crc32(about.uid.encode()) % len(self._outboxes)]
        try:
            outbox.send_nowait(job)
        except anyio.WouldBlock:
            self._metrics.events_dropped.inc()
            log.debug("event outbox full; dropped", extra={"object": _path(about), "reason": reason})

    async def run(self) -> None:
        """Sends queued Events until `close`, then what is left."""
        streams = [anyio.create_memory_object_stream[_Post](OUTBOX // SENDERS) for _ in range(SENDERS)]
        self._outboxes = [send for send, _ in streams]
        self._sent_all = anyio.Event()

        async def sender(receive: MemoryObjectReceiveStream[_Post]) -> None:
            async with receive:
                async for job in receive:
                    await self._send(job)

        try:
            async with anyio.create_task_group() as tg:
                for _, receive in streams:
                    tg.start_soon(sender, receive)
        finally:
            self._outboxes = []
            self._sent_all.set()

    async def close(self) -> None:
        """No more Events; returns once `run` has sent the queued ones (at once when it is not running)."""
        for outbox in self._outboxes:
            outbox.close()
        await self._sent_all.wait()

    async def _send(self, job: _Post) -> None:
        about, name = job.about, job.name
        try:
            if job.update:
                seen = self._posted.get(name)
                count = seen.count if seen is not None else 1
                await self._update(about.namespace, name, count, job.message)
            else:
                count = await self._create(about, name, job.type_, job.reason, job.message, job.repeat)
            seen = self._posted.get(name)
            self._remember(name, _Posted(max(count, seen.count if seen else 0), self._clock()))
            self._metrics.events.labels(job.type_, job.reason).inc()
        except Exception as exc:  # an Event is best effort; it must never fail a reconcile
            if not job.update:
                self._posted.pop(name, None)  # not there: the next decision may try again
            log.warning("could not post event", extra={"object": _path(about), "reason": job.reason, "error": str(exc)})

    async def _create(self, about: ObjectRef, name: str, type_: str, reason: str, message: str, repeat: bool) -> int:
        """Create it; after a restart it may exist: then count on (repeat) or leave it (once-only)."""
        try:
            await self._client.create(EVENTS, about.namespace, self._body(about, name, type_, reason, message))
            return 1
        except ApiError as exc:
            if not (exc.conflict and exc.reason == "AlreadyExists"):
                raise
        if not repeat:
            return 1  # told already (before a restart): nothing to add, and no need to read it
        existing = await self._client.get(EVENTS, about.namespace, name)
        count = int(existing.get("count") or 1) + 1
        await self._update(about.namespace, name, count, message)
        return count

    async def _update(self, namespace: str, name: str, count: int, message: str) -> None:
        patch = {"count": count, "lastTimestamp": _now(), "message": clip(message, EVENT_MESSAGE_MAX)}
        await self._client.patch(EVENTS, namespace, name, patch)

    def _body(self, about: ObjectRef, name: str, type_: str, reason: str, message: str) -> JSON:
        now = _now()
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": about.namespace},
            "involvedObject": {
                "apiVersion": about.api_version,
                "kind": about.kind,
                "name": about.name,
                "namespace": about.namespace,
                "uid": about.uid,
            },
            "reason": reason,
            "message": clip(message, EVENT_MESSAGE_MAX),
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }

    def _remember(self, name: str, posted: _Posted) -> None:
        self._posted[name] = posted
        self._posted.move_to_end(name)
        while len(self._posted) > KEPT:
            self._posted.popitem(last=False)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path(about: ObjectRef) -> str:
    return f"{about.namespace}/{about.name}" if about.namespace else about.name
