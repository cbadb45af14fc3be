"""Applying what the reconcilers decided: writes, and reports of refused input.

`Writer` sends each write, counts and logs it by the API answer -> outcome table (`outcomes.handling`),
puts the answer into the cache at once (the next port allocation must see it), and raises `Requeue` when
retrying later can help.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from reconciler.cache import ClusterCache
from reconciler.kube.client import ApiError
from reconciler.kube.events import COMPONENT, EventRecorder, ObjectRef
from reconciler.kube.resources import EVENTS, Resource
from reconciler.kube.store import Change
from reconciler.metrics import Metrics
from reconciler.model import JSON, Key, Meta
from reconciler.outcomes import VERBS, Outcome, Requeue, Verb, handling
from reconciler.policy import Policy
from reconciler.reconcile.intents import Create, Delete, Kind, Notice, Patch, Refusal, Subject, Write
from reconciler.watches import RESOURCES, Changed, Watch, forget, store_raw

log = logging.getLogger(__name__)

REPORTED_MAX = 10_000
REJECTED_MEMORY_SECONDS = 600.0
RECREATE_CHECK_SECONDS = 30.0
"""How long after an object's deletion a create of the same name first asks whether its owner lives."""


class WriteClient(Protocol):
    async def get(self, resource: Resource, namespace: str | None, name: str) -> JSON: ...

    async def list_page(
        self, resource: Resource, namespace: str | None = None, *, field_selector: str | None = None, limit: int = 500
    ) -> JSON: ...

    async def patch(
        self, resource: Resource, namespace: str | None, name: str, body: Any, *, subresource: str | None = None
    ) -> JSON: ...

    async def create(self, resource: Resource, namespace: str | None, body: Mapping[str, Any]) -> JSON: ...

    async def delete(
        self, resource: Resource, namespace: str | None, name: str, uid: str | None, resource_version: str | None
    ) -> JSON: ...


def object_ref(kind: Kind, meta: Meta) -> ObjectRef:
    return ObjectRef(RESOURCES[kind].api_version, kind.value, meta.namespace, meta.name, meta.uid)


def subject_ref(subject: Subject) -> ObjectRef:
    resource = RESOURCES[subject.kind]
    return ObjectRef(resource.api_version, subject.kind.value, subject.namespace, subject.name, subject.uid)


def _path(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _fingerprint(write: Write) -> str:
    """The same write to the same object version (a Create's version is its body)."""
    if isinstance(write, Delete):
        return f"delete {write.kind} {write.namespace}/{write.name} {write.uid} {write.resource_version}"
    body = json.dumps(write.body, sort_keys=True, default=str)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    sub = write.subresource if isinstance(write, Patch) else None
    return f"{type(write).__name__} {write.kind} {write.namespace}/{write.name}/{sub} {digest}"


class Writer:
    def __init__(
        self,
        client: WriteClient,
        cache: ClusterCache,
        table: tuple[Watch[Any], ...],
        policy: Policy,
        recorder: EventRecorder,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        dry_run: bool = False,
        on_change: Callable[[Watch[Any], Change[Any]], None] | None = None,
    ) -> None:
        self._on_change = on_change
        """Where the cache changes a write made go: the triggers, as if the watch had seen them."""
        self._dry_run = dry_run
        """Decide and log every write, send none (`--dry-run`)."""
        self._client = client
        self._cache = cache
        self._table = table
        self._keep = policy.annotation_keys()
        self._recorder = recorder
        self._metrics = metrics
        self._reported: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._rejected: OrderedDict[str, float] = OrderedDict()
        self._deleted: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._clock = clock

    def saw_deleted(self, resource: Resource, key: Key) -> None:
        """An object left the cache: a create of its name soon after checks its owner first."""
        self._deleted[(resource.plural, *key)] = self._clock()
        self._deleted.move_to_end((resource.plural, *key))
        while len(self._deleted) > REPORTED_MAX:
            self._deleted.popitem(last=False)

    async def apply(self, write: Write, subject: tuple[Kind, Key]) -> Outcome:
        """Sends one write; `subject` is the object the decision was about (for a WriteRejected Event).
        Returns the outcome; raises `Requeue` when the decision must be taken again later."""
        resource = RESOURCES[write.kind]
        verb = VERBS[type(write)]
        fingerprint = _fingerprint(write)
        if self._dry_run:
            return self._would(write, verb, fingerprint)
        rejected_at = self._rejected.get(fingerprint)
        if rejected_at is not None and self._clock() - rejected_at < REJECTED_MEMORY_SECONDS:
            # The API server refused exactly this write to exactly this version: sending it again on the
            # next event in the namespace cannot succeed, and would flood the logs and Events.
            self._count(write, verb, Outcome.NOT_SENT)
            return Outcome.NOT_SENT
        if isinstance(write, Create) and await self._owner_gone(write, resource):
            self._count(write, verb, Outcome.OWNER_GONE)
            log.info(
                f"not re-creating {write.kind.value}: its owner is gone",
                extra={"kind": write.kind.value, "object": _path(write.namespace, write.name)},
            )
            return Outcome.OWNER_GONE
        error: ApiError | None = None
        try:
            if isinstance(write, Patch):
                answer = await self._client.patch(
                    resource, write.namespace, write.name, write.body, subresource=write.subresource
                )
                self._changed(store_raw(self._table, resource, answer, self._keep))
            elif isinstance(write, Create):
                answer = await self._client.create(resource, write.namespace, write.body)
                self._changed(store_raw(self._table, resource, answer, self._keep))
            else:
                await self._client.delete(resource, write.namespace, write.name, write.uid, write.resource_version)
        except ApiError as exc:
            error = exc
        how = handling(verb, error)
        if isinstance(write, Delete) and how.outcome in (Outcome.SUCCESS, Outcome.NOT_FOUND):
            self._changed(forget(self._table, resource, (write.namespace, write.name), write.uid))  # one delete
        if how.outcome is Outcome.REJECTED:
            self._rejected[fingerprint] = self._clock()
            while len(self._rejected) > REPORTED_MAX:
                self._rejected.popitem(last=False)
        where: dict[str, Any] = {"kind": write.kind.value, "object": _path(write.namespace, write.name)}
        where["reason"] = write.reason
        if error is not None and how.outcome is not Outcome.NOT_FOUND:
            where |= {"status": error.status, "error": error.message}
        self._count(write, verb, how.outcome)
        log.log(how.level, how.message.format(verb=verb.value, past=verb.past, kind=write.kind.value), extra=where)
        if how.report and error is not None:
            about = self._subject(*subject)
            if about is not None:
                message = (
                    f"{verb.value} {write.kind.value} {_path(write.namespace, write.name)} rejected "
                    f"({error.status} {error.reason}): {error.message}"
                )
                await self._recorder.post(about, "Warning", "WriteRejected", message)
        if how.requeue:
            raise Requeue(how.retry_at_least) from error
        return how.outcome

    async def _owner_gone(self, write: Create, resource: Resource) -> bool:
        """For a create of a name deleted moments ago: is its controlling owner gone from the API server?

        When a solver Service is deleted, the garbage collector deletes our Backend and route; if their
        events reach us before the Service's, the cache still shows the Service and would have them made
        again. One GET of the owner settles it (only in that case); a 404 also drops the owner from the
        cache, so its clean-up starts now."""
        deleted_at = self._deleted.pop((resource.plural, write.namespace, write.name), None)
        if deleted_at is None or self._clock() - deleted_at > RECREATE_CHECK_SECONDS:
            return False
        refs = (write.body.get("metadata") or {}).get("ownerReferences") or ()
        owner = next((r for r in refs if r.get("controller")), None)
        if owner is None or owner.get("kind") not in {k.value for k in RESOURCES}:
            return False
        owner_resource, name = RESOURCES[Kind(owner["kind"])], str(owner.get("name"))
        try:
            live = await self._client.get(owner_resource, write.namespace, name)
        except ApiError as exc:
            if not exc.not_found:
                return False  # cannot tell: create as decided
            self._changed(forget(self._table, owner_resource, (write.namespace, name), str(owner.get("uid"))))
            return True
        return bool((live.get("metadata") or {}).get("uid") != owner.get("uid"))

    async def report(self, refusal: Refusal) -> None:
        """Log, count and show a refusal once per object and reason (not on every resync)."""
        if not self._first(refusal.subject, refusal.reason.value):
            return
        self._metrics.refusals.labels(refusal.kind.value, refusal.reason.value).inc()
        log.warning(
            "refused",
            extra={
                "kind": refusal.kind.value,
                "object": _path(refusal.namespace, refusal.name),
                "reason": refusal.reason.value,
                "detail": refusal.message,
            },
        )
        for subject in (refusal.subject, *refusal.also):
            await self._recorder.post(subject_ref(subject), "Warning", refusal.reason.value, refusal.message)

    async def notify(self, notice: Notice) -> None:
        """Show a notice on each of its objects: once per object and reason, or (`repeat`) aggregated."""
        message = notice.message
        for subject in notice.subjects:
            if not notice.repeat and not self._first(subject, notice.reason):
                continue
            if notice.cite is not None and message is notice.message:
                message = await self._citing(notice.message, notice.cite)
            await self._recorder.post(subject_ref(subject), notice.type, notice.reason, message, notice.repeat)

    async def _citing(self, message: str, cited: Subject) -> str:
        """`message` with the latest Events others (the platform) posted about `cited`."""
        try:
            page = await self._client.list_page(
                EVENTS, cited.namespace, field_selector=f"involvedObject.uid={cited.uid}", limit=50
            )
        except Exception as exc:  # a best-effort detail of a best-effort Event
            log.debug("could not read the events of the cited object", extra={"error": str(exc)})
            return message
        theirs = [e for e in page.get("items") or () if (e.get("source") or {}).get("component") != COMPONENT]
        theirs.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        said = "; ".join(f"{e.get('reason')}: {e.get('message')}" for e in theirs[-3:])
        return f"{message}; the platform says: {said}" if said else f"{message}; the platform posted no Event about it"

    def _would(self, write: Write, verb: Verb, fingerprint: str) -> Outcome:
        """Dry run: log and count each distinct write once (decisions repeat, as nothing changes)."""
        if fingerprint not in self._rejected:
            self._rejected[fingerprint] = self._clock()
            where = {"kind": write.kind.value, "object": _path(write.namespace, write.name), "reason": write.reason}
            log.info(f"dry run: would {verb.value} {write.kind.value}", extra=where)
            self._count(write, verb, Outcome.DRY_RUN)
        return Outcome.DRY_RUN

    def _changed(self, changed: Changed) -> None:
        if self._on_change is not None:
            for watch, change in changed:
                self._on_change(watch, change)

    def _count(self, write: Write, verb: Verb, outcome: Outcome) -> None:
        dry_run = "true" if self._dry_run else "false"
        self._metrics.writes.labels(write.kind.value, verb.value, outcome.value, dry_run).inc()

    def _first(self, subject: Subject, reason: str) -> bool:
        """True the first time (in a bounded memory) this object is told this reason."""
        marker = (subject.uid or _path(subject.namespace, subject.name), reason)
        if marker in self._reported:
            return False
        self._reported[marker] = None
        if len(self._reported) > REPORTED_MAX:
            self._reported.popitem(last=False)
        return True

    def _subject(self, kind: Kind, key: Key) -> ObjectRef | None:
        obj = self._cache.service(*key) if kind is Kind.SERVICE else self._cache.route(*key)
        return object_ref(kind, obj.meta) if obj is not None else None
