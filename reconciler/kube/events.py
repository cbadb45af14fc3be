"""Kubernetes Events (core/v1) about the objects the reconciler looks at, where their owners see them
(`kubectl describe`). Best effort: an Event that cannot be posted is logged and never fails a reconcile."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from reconciler.kube.resources import EVENTS, Resource
from reconciler.metrics import Metrics
from reconciler.model import JSON

log = logging.getLogger(__name__)

COMPONENT = "acme-gateway-reconciler"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


class EventClient(Protocol):
    async def create(self, resource: Resource, namespace: str | None, body: JSON) -> JSON: ...


class EventRecorder:
    def __init__(self, client: EventClient, metrics: Metrics, instance: str | None = None) -> None:
        self._client = client
        self._metrics = metrics
        self._instance = instance or socket.gethostname()

    async def post(self, about: ObjectRef, type_: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{about.name}.", "namespace": about.namespace},
            "involvedObject": {
                "apiVersion": about.api_version,
                "kind": about.kind,
                "name": about.name,
                "namespace": about.namespace,
                "uid": about.uid,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._client.create(EVENTS, about.namespace, body)
            self._metrics.events.labels(type_, reason).inc()
        except Exception as exc:  # an Event is best effort; it must never fail a reconcile
            log.warning(
                "could not post event",
                extra={"object": f"{about.namespace}/{about.name}", "reason": reason, "error": str(exc)},
            )
