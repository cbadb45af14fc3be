"""What a reconcile step wants done: writes for the shell to apply, and refusals to report."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JSON = dict[str, Any]


class Kind(StrEnum):
    SERVICE = "Service"
    BACKEND = "Backend"
    HTTPROUTE = "HTTPRoute"


@dataclass(frozen=True, slots=True)
class Patch:
    """A JSON merge patch (RFC 7386). `resource_version` is also put into the body's metadata, so the
    API server rejects it with 409 when the object changed after the decision was made."""

    kind: Kind
    namespace: str
    name: str
    resource_version: str
    body: JSON
    reason: str


@dataclass(frozen=True, slots=True)
class Create:
    kind: Kind
    namespace: str
    body: JSON
    reason: str

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


@dataclass(frozen=True, slots=True)
class Delete:
    """Deletion with uid and resourceVersion preconditions: never removes a replacement object."""

    kind: Kind
    namespace: str
    name: str
    uid: str
    resource_version: str
    reason: str


Write = Patch | Create | Delete


@dataclass(frozen=True, slots=True)
class Refusal:
    """Bad or foreign input the reconciler will not act on: logged, counted and shown as a Warning
    Event on the object (once per object and reason)."""

    kind: Kind
    namespace: str
    name: str
    uid: str
    reason: str  # CamelCase, used as the Event reason and the metric label
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    writes: tuple[Write, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    skipped: str | None = None
    """Why nothing was done when that is expected (public project, not a solver...): a debug log line."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Facts for the shell's metrics (e.g. `routed: True`); never needed for correctness."""
