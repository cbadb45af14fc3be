"""List-then-watch for one resource (client-go's Reflector + shared informer, trimmed to our needs).

- List (paginated), replace the cache, then watch from the list's resourceVersion with bookmarks on.
- A watch that ends normally (server timeout) re-opens from the last resourceVersion seen.
- 410 Gone (at open or as an ERROR event) means our resourceVersion is too old: relist and replace.
- Any other failure re-opens after jittered exponential backoff; nothing else is lost because the
  next list or watch resumes from the last resourceVersion.
- Each watch line is decoded with `json.loads` and projected into a trimmed view once; the handler gets
  a typed `Change` (old view, new view, initial) and only maps it to keys.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import anyio
from pydantic import ValidationError

from reconciler.kube.client import ApiError, KubeClient
from reconciler.kube.resources import Resource
from reconciler.kube.store import Change, EventType, Store
from reconciler.metrics import Metrics
from reconciler.model import HasMeta

log = logging.getLogger(__name__)

T = TypeVar("T", bound=HasMeta)


def _hint(exc: BaseException) -> str | None:
    """What an operator should check when retrying cannot help by itself."""
    if isinstance(exc, ApiError) and exc.not_found:
        return "resource not served by the API server (is its CRD installed?); retrying"
    if isinstance(exc, ApiError) and exc.status in (401, 403):
        return "not allowed to list/watch (check the ClusterRole and its binding); retrying"
    return None


class Gone(Exception):
    """The watch's resourceVersion is too old (410): only a relist recovers."""


class Informer(Generic[T]):
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        from_raw: Callable[[Mapping[str, Any]], T],
        store: Store[T],
        handler: Callable[[Change[T]], None],
        metrics: Metrics,
        namespace: str | None = None,
        label_selector: str | None = None,
        watch_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.from_raw = from_raw
        self.store = store
        self.handler = handler
        self.metrics = metrics
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.synced = anyio.Event()
        self.resource_version: str | None = None
        self._label = resource.plural

    @property
    def name(self) -> str:
        return f"{self._label}@{self.namespace}" if self.namespace else self._label

    async def run(self) -> None:
        failures = 0
        initial = True
        while True:
            try:
                if self.resource_version is None:
                    self.resource_version = await self._list(initial)
                    initial = False
                    self.synced.set()
                    self.metrics.informer_synced.labels(self._label).set(1)
                await self._watch()
                failures = 0
                self.metrics.watch_restarts.labels(self._label, "timeout").inc()
            except Gone:
                log.info("watch expired, relisting", extra={"resource": self.name})
                self.metrics.watch_restarts.labels(self._label, "gone").inc()
                self.resource_version = None
            except Exception as exc:  # aiohttp raises many shapes; none may kill the informer
                failures += 1
                delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1)))
                log.log(
                    logging.ERROR if _hint(exc) else logging.WARNING,
                    _hint(exc) or "list/watch failed, retrying",
                    extra={"resource": self.name, "error": str(exc) or repr(exc), "retry_in": round(delay, 3)},
                )
                self.metrics.watch_restarts.labels(self._label, "error").inc()
                await anyio.sleep(delay)

    async def _list(self, initial: bool) -> str:
        self.metrics.relists.labels(self._label).inc()
        items: list[T] = []
        token: str | None = None
        while True:
            try:
                page = await self.client.list_page(
                    self.resource, self.namespace, self.label_selector, continue_token=token
                )
            except ApiError as exc:
                if exc.gone and token:  # the continue token expired: start over
                    items, token = [], None
                    continue
                raise
            for raw in page.get("items") or ():
                view = self._project(raw)
                if view is not None:
                    items.append(view)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                rv = str(meta.get("resourceVersion") or "")
                break
        changed, deleted = self.store.replace(items, self.namespace)
        self._count()
        for old, new in changed:
            self._emit(Change(EventType.ADDED if old is None else EventType.MODIFIED, old, new, initial))
        for gone in deleted:
            self._emit(Change(EventType.DELETED, gone, None, initial))
        log.debug("listed", extra={"resource": self.name, "objects": len(items), "resourceVersion": rv})
        return rv

    async def _watch(self) -> None:
        assert self.resource_version is not None
        try:
            async with self.client.watch(
                self.resource, self.namespace, self.resource_version, self.label_selector, self.watch_timeout
            ) as events:
                async for event in events:
                    self._handle(event)
        except ApiError as exc:
            if exc.gone:
                raise Gone() from exc
            raise

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        self.metrics.watch_events.labels(self._label, str(kind)).inc()
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone()
            raise ApiError(int(code or 500), str(obj.get("reason") or ""), str(obj.get("message") or obj))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        view = self._project(obj)
        if rv:
            self.resource_version = rv
        if view is None:
            return
        if kind in (EventType.ADDED, EventType.MODIFIED):
            if self.store.is_stale(view):
                return  # older than what a write of ours already put in the cache
            old = self.store.upsert(view)
            self._emit(Change(EventType.ADDED if old is None else EventType.MODIFIED, old, view))
        elif kind == EventType.DELETED:
            old = self.store.delete(view.meta.key)
            self._emit(Change(EventType.DELETED, old or view, None))
        self._count()

    def _project(self, raw: Mapping[str, Any]) -> T | None:
        try:
            return self.from_raw(raw)
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            md = raw.get("metadata") or {}
            log.error(
                "object does not fit the expected shape; ignored",
                extra={
                    "resource": self.name,
                    "object": f"{md.get('namespace') or ''}/{md.get('name')}",
                    "error": str(exc).splitlines()[0],
                },
            )
            self.metrics.watch_events.labels(self._label, "INVALID").inc()
            return None

    def _emit(self, change: Change[T]) -> None:
        try:
            self.handler(change)
        except Exception:  # a handler bug must not stop the watch
            log.exception("event handler failed", extra={"resource": self.name})

    def _count(self) -> None:
        self.metrics.cache_objects.labels(self._label).set(len(self.store))
