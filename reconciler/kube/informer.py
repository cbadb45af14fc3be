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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import anyio
from pydantic import ValidationError

from reconciler.kube.client import ApiError, KubeClient, SilentWatch
from reconciler.kube.diagnosis import BUILT_IN, forbidden, install_hint, rbac_fix, rbac_name, resource_id
from reconciler.kube.resources import Resource
from reconciler.kube.store import Change, EventType, Store
from reconciler.metrics import Metrics
from reconciler.model import HasMeta

log = logging.getLogger(__name__)

T = TypeVar("T", bound=HasMeta)


def _hint(exc: BaseException, resource: Resource, namespace: str | None) -> str | None:
    """What an operator must fix when retrying cannot help by itself: a resource the API server stopped
    serving (404: its CRD is gone) or a permission we lost (401/403). None for anything transient."""
    if isinstance(exc, ApiError) and exc.not_found:
        fix = "" if resource.group in BUILT_IN else f": {install_hint(resource)}"
        return f"{resource_id(resource)} is not served by the API server (is its CRD installed?){fix}"
    if isinstance(exc, ApiError) and exc.status == 401:
        return (
            f"the API server rejects our credentials (401 Unauthorized) for {rbac_name(resource)}: renew the "
            "kubeconfig's token or client certificate (or the ServiceAccount token)"
        )
    if isinstance(exc, ApiError) and exc.status == 403:
        return forbidden(("list", "watch"), rbac_name(resource), namespace, rbac_fix())
    return None


def not_ready(informers: Iterable[Informer[Any]]) -> str | None:
    """Why the cache is not (or no longer) trustworthy, in a few words for /readyz; None when it is."""
    failing = sorted({i.problem for i in informers if i.problem})
    if failing:
        return "; ".join(failing)
    waiting = sorted({i.name for i in informers if not i.synced.is_set()})
    if waiting:
        return f"waiting for the first list of {', '.join(waiting)}"
    return None


OPTIONAL_RECHECK_SECONDS = 300.0


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
        optional: bool = False,
        idle_timeout: float | None = None,
        keep: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self.keep = keep
        """Objects this returns False for (read from the raw JSON, before any view is built) are not
        cached at all; one that stops being kept leaves the cache as if deleted."""
        self.idle_timeout = idle_timeout
        """Seconds a watch may deliver nothing before it is re-opened (`SilentWatch`)."""
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
        self.optional = optional
        """The cluster may not serve this resource: 404 on the list means "none of them" (looked for again
        every `OPTIONAL_RECHECK_SECONDS`), not "not ready"."""
        self.synced = anyio.Event()
        self.resource_version: str | None = None
        self.problem: str | None = None
        """Set while list/watch fails in a way only an operator can fix (404, 403): not ready until then."""
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
                    self._recovered()
                    self.synced.set()
                    self.metrics.informer_synced.labels(self._label).set(1)
                await self._watch()
                failures = 0
                self.metrics.watch_restarts.labels(self._label, "timeout").inc()
            except Gone:
                log.info("watch expired, relisting", extra={"resource": self.name})
                self.metrics.watch_restarts.labels(self._label, "gone").inc()
                self.resource_version = None
            except SilentWatch as exc:
                # The server sends a bookmark about once a minute even when nothing changes: this long a
                # silence means a dead stream. Re-open from the last resourceVersion at once (no relist).
                log.warning("watch went silent; re-opening it", extra={"resource": self.name, "error": str(exc)})
                self.metrics.watch_restarts.labels(self._label, "silent").inc()
            except ApiError as exc:
                if not (self.optional and exc.not_found):
                    failures = await self._back_off(exc, failures)
                    continue
                if not self.synced.is_set():
                    log.info("resource not served by the API server; treated as empty", extra={"resource": self.name})
                    self.synced.set()
                    self.metrics.informer_synced.labels(self._label).set(1)
                await anyio.sleep(OPTIONAL_RECHECK_SECONDS)
            except Exception as exc:  # aiohttp raises many shapes; none may kill the informer
                failures = await self._back_off(exc, failures)

    async def _back_off(self, exc: BaseException, failures: int) -> int:
        """Log, count and sleep before the next attempt; returns the new failure count. A problem only an
        operator can fix is logged once when it starts (and when it changes), not on every retry."""
        failures += 1
        delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1)))
        hint = _hint(exc, self.resource, self.namespace)
        extra = {"resource": self.name, "error": str(exc) or repr(exc), "retry_in": round(delay, 3)}
        if hint is None:
            log.warning("list/watch failed, retrying", extra=extra)
        else:
            level = logging.ERROR if hint != self.problem else logging.DEBUG
            log.log(level, f"{hint}; not ready, retrying", extra=extra)
            self.problem = hint
        self.metrics.watch_restarts.labels(self._label, "error").inc()
        await anyio.sleep(delay)
        return failures

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
                if self.keep is not None and not self.keep(raw):
                    continue
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
                self.resource,
                self.namespace,
                self.resource_version,
                self.label_selector,
                self.watch_timeout,
                idle_timeout=self.idle_timeout,
            ) as events:
                self._recovered()
                async for event in events:
                    self._handle(event)
        except ApiError as exc:
            if exc.gone:
                raise Gone() from exc
            raise

    def _recovered(self) -> None:
        if self.problem is not None:
            log.info("list/watch works again", extra={"resource": self.name, "was": self.problem})
            self.problem = None

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
        if self.keep is not None and not self.keep(obj):
            if rv:
                self.resource_version = rv
            self._drop(obj)
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

    def _drop(self, raw: Mapping[str, Any]) -> None:
        """An object not kept: if the cache held it (it was kept before), it leaves as if deleted."""
        md = raw.get("metadata") or {}
        old = self.store.delete((str(md.get("namespace") or ""), str(md.get("name") or "")))
        if old is not None:
            self._emit(Change(EventType.DELETED, old, None))
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
