"""What a reconcile step wants done: writes for the shell to apply, and refusals to report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.model import JSON
from reconciler.reconcile.reasons import Refused, Skip


class Kind(StrEnum):
    SERVICE = "Service"
    BACKEND = "Backend"
    HTTPROUTE = "HTTPRoute"


@dataclass(frozen=True, slots=True)
class Patch:
    """A JSON merge patch (RFC 7386) of `changes`, conditional on `resource_version`: the API server
    rejects it with 409 when the object changed after the decision was made."""

    kind: Kind
    namespace: str
    name: str
    resource_version: str
    changes: JSON
    reason: str

    @property
    def body(self) -> JSON:
        """The request body: `changes` with the resourceVersion precondition (the one place it is set)."""
        metadata = {**self.changes.get("metadata", {}), "resourceVersion": self.resource_version}
        return {**self.changes, "metadata": metadata}


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
    reason: Refused
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    writes: tuple[Write, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    skipped: Skip | None = None
    """Why nothing was done when that is expected (public project, not a solver...): a debug log line."""
    routed: str | None = None
    """uid of cert-manager's solver route whose challenge path reaches the Backend once `writes` are
    applied (for the wiring-latency and re-patch metrics; never needed for correctness)."""
