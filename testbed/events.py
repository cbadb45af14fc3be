"""Events as an owner reads them with ``kubectl describe``: the ones about one object, and their story.

Events outlive their object, so a Challenge cert-manager deleted after issuance can still be told by its
uid. Core/v1 Events are stamped to the second; within one second they are kept in the order the API server
stored them (their resourceVersion: the reconciler never updates a progress Event).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from testbed.kube import EVENTS, Kube, Obj


def _epoch(stamp: object) -> float:
    return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


def first_seen(event: Obj) -> float:
    """Epoch seconds of the Event's first occurrence (``firstTimestamp``, else ``eventTime``)."""
    return _epoch(event.get("firstTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"])


def last_seen(event: Obj) -> float:
    """Epoch seconds of its latest occurrence (``lastTimestamp``, raised with ``count``)."""
    return _epoch(event.get("lastTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"])


async def events_about(api: Kube, namespace: str, uid: str) -> list[Obj]:
    """The Events whose involvedObject has ``uid``, oldest first."""
    found = await api.list(EVENTS, namespace, field_selector=f"involvedObject.uid={uid}")
    return sorted(found, key=lambda e: (first_seen(e), int(e["metadata"]["resourceVersion"])))


def source(event: Obj) -> str:
    """Who posted it (kubectl's ``From`` column)."""
    return str(event.get("reportingComponent") or (event.get("source") or {}).get("component") or "")


def story(title: str, events: Sequence[Obj], since: float) -> str:
    """A ``kubectl describe``-like Events section; ``At`` is seconds after ``since`` (epoch), to the second
    as the Events are stamped."""
    rows = [("Type", "Reason", "At", "Count", "From", "Message")]
    rows += [
        (
            str(e.get("type", "")),
            str(e.get("reason", "")),
            f"+{first_seen(e) - math.floor(since):.0f}s",
            str(e.get("count") or 1),
            source(e),
            str(e.get("message", "")),
        )
        for e in events
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5] for row in rows]
    return "\n".join([f"{title}\nEvents:", *(f"  {line.rstrip()}" for line in lines)])
