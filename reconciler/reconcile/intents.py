"""What a reconcile step wants done: writes for the shell to apply, and refusals to report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from reconciler.model import JSON
from reconciler.reconcile.reasons import Refused, Skip


class Kind(StrEnum):
    """The kinds of object a decision writes to or reports on."""

    SERVICE = "Service"
    BACKEND = "Backend"
    HTTPROUTE = "HTTPRoute"
    CHALLENGE = "Challenge"
    DOMAINCLAIM = "DomainClaim"


class Subject(NamedTuple):
    """An object an Event is about (the tenant sees it with `kubectl describe`)."""

    kind: Kind
    namespace: str
    name: str
    uid: str


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
    subresource: str | None = None
    """`status` for a status update (the main resource ignores status changes)."""

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
    also: tuple[Subject, ...] = ()
    """More objects the same Warning is shown on (the Challenge): counted once, in the metric."""

    @property
    def subject(self) -> Subject:
        return Subject(self.kind, self.namespace, self.name, self.uid)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a tenant should know that is not bad input (progress, a stuck hop): an Event on each
    subject, posted once per subject and reason, or with `repeat` aggregated into a count."""

    subjects: tuple[Subject, ...]
    type: str  # Normal or Warning
    reason: str  # CamelCase, from a closed set
    message: str
    cite: Subject | None = None
    """Another object whose own Events (the platform's, e.g. an EIP port conflict) belong in the message."""
    repeat: bool = False
    """It can happen again (a probe failing): each time counts on the same Event."""


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """GET `path` with `Host: host` from the gateway at `address` (HOST:PORT) and expect `expected`."""

    challenge_uid: str
    route_uid: str
    address: str
    host: str
    path: str
    expected: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Decision:
    writes: tuple[Write, ...] = ()
    """Applied in order; the first that does not succeed stops the rest (a claim before the wiring)."""
    refusals: tuple[Refusal, ...] = ()
    notices: tuple[Notice, ...] = ()
    skipped: Skip | None = None
    """Why nothing was done when that is expected (public project, not a solver...): a debug log line."""
    routed: str | None = None
    """uid of cert-manager's solver route whose challenge path reaches the Backend once `writes` are
    applied (for the wiring-latency and re-patch metrics; never needed for correctness)."""
    probe: ProbeRequest | None = None
    """Ask the gateway whether it serves the challenge (the shell sends it and records the answer)."""
    recheck_after: float | None = None
    """Look at this key again after so many seconds (a time limit that has not passed yet)."""
