"""Applying what the reconcilers decided: writes, and reports of refused input.

`handling` is the whole API answer -> outcome table, pure and tested on its own; `Writer` sends each
write, counts and logs it by that table, puts the answer into the cache at once (the next port allocation
must see it), and raises `Requeue` when retrying later can help.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from reconciler.cache import ClusterCache
from reconciler.kube.client import ApiError
from reconciler.kube.events import EventRecorder, ObjectRef
from reconciler.kube.resources import Resource
from reconciler.metrics import Metrics
from reconciler.model import JSON, Key, Meta
from reconciler.policy import Policy
from reconciler.reconcile.intents import Create, Delete, Kind, Patch, Refusal, Write
from reconciler.watches import WRITABLE, Watch, store_raw

log = logging.getLogger(__name__)

REPORTED_MAX = 10_000
EVENT_MESSAGE_MAX = 1000


class Requeue(Exception):
    """The decision could not be fully applied and must be retried with backoff."""


class Verb(StrEnum):
    PATCH = "patch"
    CREATE = "create"
    DELETE = "delete"

    @property
    def past(self) -> str:
        return {"patch": "patched", "create": "created", "delete": "deleted"}[self.value]


VERBS: dict[type[Write], Verb] = {Patch: Verb.PATCH, Create: Verb.CREATE, Delete: Verb.DELETE}


class Outcome(StrEnum):
    """The `result` label of `acme_gateway_writes_total`."""

    SUCCESS = "success"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    NAMESPACE_TERMINATING = "namespace_terminating"
    REJECTED = "rejected"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Handling:
    outcome: Outcome
    message: str
    """The log line (`{verb}`/`{past}`/`{kind}` filled in)."""
    level: int = logging.INFO
    requeue: bool = False
    """Retrying later can succeed: back to the queue with backoff."""
    report: bool = False
    """Our request is wrong for this object: a `WriteRejected` Warning Event where the tenant sees it."""


def handling(verb: Verb, error: ApiError | None) -> Handling:
    """What an API answer to a write means (None: success)."""
    if error is None:
        return Handling(Outcome.SUCCESS, "{past} {kind}")
    if error.conflict and verb is Verb.CREATE and error.reason == "AlreadyExists":
        # Either ours and the watch has not shown it yet (its event will re-trigger us), or someone
        # else's object of that name, which we must not touch: no retry loop either way.
        return Handling(Outcome.ALREADY_EXISTS, "{verb} found the name taken")
    if error.conflict:
        return Handling(Outcome.CONFLICT, "{verb} conflicted; will retry on fresh state", requeue=True)
    if error.not_found and verb is Verb.PATCH:
        return Handling(Outcome.NOT_FOUND, "{verb} target is gone")
    if error.not_found and verb is Verb.DELETE:
        return Handling(Outcome.SUCCESS, "{past} {kind}")  # already gone: what we wanted
    if error.namespace_terminating:
        # Everything in it is going away; nothing to fix and nobody to tell.
        return Handling(Outcome.NAMESPACE_TERMINATING, "{verb} skipped: namespace is being deleted")
    if error.transient:
        return Handling(Outcome.ERROR, "{verb} failed", logging.WARNING, requeue=True)
    # 4xx: retrying unchanged cannot help; the next watch event or resync tries again.
    return Handling(Outcome.REJECTED, "{verb} rejected by the API server", logging.ERROR, report=True)


class WriteClient(Protocol):
    async def patch(self, resource: Resource, namespace: str | None, name: str, body: Any) -> JSON: ...

    async def create(self, resource: Resource, namespace: str | None, body: Mapping[str, Any]) -> JSON: ...

    async def delete(
        self, resource: Resource, namespace: str | None, name: str, uid: str | None, resource_version: str | None
    ) -> JSON: ...


def object_ref(kind: Kind, meta: Meta) -> ObjectRef:
    return ObjectRef(WRITABLE[kind].api_version, kind.value, meta.namespace, meta.name, meta.uid)


class Writer:
    def __init__(
        self,
        client: WriteClient,
        cache: ClusterCache,
        table: tuple[Watch[Any], ...],
        policy: Policy,
        recorder: EventRecorder,
        metrics: Metrics,
    ) -> None:
        self._client = client
        self._cache = cache
        self._table = table
        self._keep = policy.annotation_keys()
        self._recorder = recorder
        self._metrics = metrics
        self._reported: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def apply(self, write: Write, subject: tuple[Kind, Key]) -> None:
        """Sends one write; `subject` is the object the decision was about (for a WriteRejected Event).
        Raises `Requeue` when the decision must be taken again later."""
        resource = WRITABLE[write.kind]
        verb = VERBS[type(write)]
        error: ApiError | None = None
        try:
            if isinstance(write, Patch):
                answer = await self._client.patch(resource, write.namespace, write.name, write.body)
                store_raw(self._table, resource, answer, self._keep)
            elif isinstance(write, Create):
                answer = await self._client.create(resource, write.namespace, write.body)
                store_raw(self._table, resource, answer, self._keep)
            else:
                await self._client.delete(resource, write.namespace, write.name, write.uid, write.resource_version)
        except ApiError as exc:
            error = exc
        how = handling(verb, error)
        where: dict[str, Any] = {"kind": write.kind.value, "object": f"{write.namespace}/{write.name}"}
        where["reason"] = write.reason
        if error is not None and how.outcome is not Outcome.NOT_FOUND:
            where |= {"status": error.status, "error": error.message}
        self._metrics.writes.labels(write.kind.value, verb.value, how.outcome.value).inc()
        log.log(how.level, how.message.format(verb=verb.value, past=verb.past, kind=write.kind.value), extra=where)
        if how.report and error is not None:
            about = self._subject(*subject)
            if about is not None:
                message = (
                    f"{verb.value} {write.kind.value} {write.namespace}/{write.name} rejected "
                    f"({error.status} {error.reason}): {error.message}"
                )
                await self._recorder.post(about, "Warning", "WriteRejected", message[:EVENT_MESSAGE_MAX])
        if how.requeue:
            raise Requeue() from error

    async def report(self, refusal: Refusal) -> None:
        """Log, count and show a refusal once per object and reason (not on every resync)."""
        marker = (refusal.uid or f"{refusal.namespace}/{refusal.name}", refusal.reason.value)
        if marker in self._reported:
            return
        self._reported[marker] = None
        if len(self._reported) > REPORTED_MAX:
            self._reported.popitem(last=False)
        self._metrics.refusals.labels(refusal.kind.value, refusal.reason.value).inc()
        log.warning(
            "refused",
            extra={
                "kind": refusal.kind.value,
                "object": f"{refusal.namespace}/{refusal.name}",
                "reason": refusal.reason.value,
                "detail": refusal.message,
            },
        )
        about = ObjectRef(
            WRITABLE[refusal.kind].api_version, refusal.kind.value, refusal.namespace, refusal.name, refusal.uid
        )
        await self._recorder.post(about, "Warning", refusal.reason.value, refusal.message)

    def _subject(self, kind: Kind, key: Key) -> ObjectRef | None:
        obj = self._cache.service(*key) if kind is Kind.SERVICE else self._cache.route(*key)
        return object_ref(kind, obj.meta) if obj is not None else None
