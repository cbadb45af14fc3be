"""An in-memory store of views with secondary indexes (client-go's Indexer, minus the locking).

Everything runs on one event loop, so a plain dict is consistent between awaits. The store does no
I/O: unit tests fill it directly and hand it to the pure reconcilers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from reconciler.model import HasMeta, Key

T = TypeVar("T", bound=HasMeta)
IndexFunc = Callable[[T], Iterable[str]]


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """One change of the cache, as the informer saw it: the trigger functions' input.

    `old` is None for ADDED, `new` is None for DELETED. `initial` marks changes from the first list
    (objects that existed before this process started)."""

    type: EventType
    old: T | None
    new: T | None
    initial: bool = False

    @property
    def obj(self) -> T:
        """The newest version there is (the last one seen, for a deletion)."""
        obj = self.new if self.new is not None else self.old
        assert obj is not None, "a change has at least one version"
        return obj

    def versions(self) -> tuple[T, ...]:
        """Both versions that exist: a key the old one led to must be looked at again, too."""
        return tuple(v for v in (self.old, self.new) if v is not None)


def by_namespace(obj: HasMeta) -> Iterable[str]:
    return (obj.meta.namespace,)


def by_controller_uid(obj: HasMeta) -> Iterable[str]:
    ref = obj.meta.controller_ref()
    return (ref.uid,) if ref else ()


def by_label(label: str) -> Callable[[HasMeta], Iterable[str]]:
    """Index by `<namespace>/<value of label>`, for objects that carry the label."""

    def index(obj: HasMeta) -> Iterable[str]:
        value = obj.meta.labels.get(label)
        return (f"{obj.meta.namespace}/{value}",) if value is not None else ()

    return index


def by_uid(obj: HasMeta) -> Iterable[str]:
    return (obj.meta.uid,) if obj.meta.uid else ()


class Store(Generic[T]):
    """Objects by (namespace, name), plus named indexes from index value to keys."""

    def __init__(
        self, indexers: dict[str, IndexFunc[T]] | None = None, on_delete: Callable[[T], None] | None = None
    ) -> None:
        self._on_delete = on_delete
        self._items: dict[Key, T] = {}
        self._indexers: dict[str, IndexFunc[T]] = dict(indexers or {})
        self._indexes: dict[str, defaultdict[str, set[Key]]] = {n: defaultdict(set) for n in self._indexers}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items.values()))

    def get(self, key: Key) -> T | None:
        return self._items.get(key)

    def is_stale(self, obj: T) -> bool:
        """True when the cache already holds a newer version of this very object.

        A write's response goes into the cache at once (so the next decision sees it); a watch event
        from before that write may still be in flight and must not roll the cache back. resourceVersions
        are etcd revisions: integers that grow."""
        old = self._items.get(obj.meta.key)
        if old is None or old.meta.uid != obj.meta.uid:
            return False
        a, b = old.meta.resource_version, obj.meta.resource_version
        return a.isdigit() and b.isdigit() and int(b) < int(a)

    def upsert(self, obj: T) -> T | None:
        """Insert or replace; returns the previous version."""
        key = obj.meta.key
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj)
        return old

    def delete(self, key: Key) -> T | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
            if self._on_delete is not None:
                self._on_delete(old)
        return old

    def replace(self, objs: Iterable[T], namespace: str | None = None) -> tuple[list[tuple[T | None, T]], list[T]]:
        """Swaps in a fresh list (after a relist), within one namespace when the list was scoped to it.

        Returns the (old, new) pairs that changed (unchanged resourceVersions are left out) and the
        objects that disappeared, for the informer to fan out as events.
        """
        fresh = {o.meta.key: o for o in objs}
        in_scope = [k for k in self._items if namespace is None or k[0] == namespace]
        deleted = [self._items[k] for k in in_scope if k not in fresh]
        for obj in deleted:
            self.delete(obj.meta.key)
        changed: list[tuple[T | None, T]] = []
        for obj in fresh.values():
            old = self._items.get(obj.meta.key)
            if old is not None and old.meta.resource_version == obj.meta.resource_version:
                continue
            self.upsert(obj)
            changed.append((old, obj))
        return changed, deleted

    def index_values(self, index: str) -> list[str]:
        """The values an index holds keys for (e.g. the namespaces that have solver Services)."""
        return sorted(self._indexes[index])

    def by_index(self, index: str, value: str) -> list[T]:
        keys = self._indexes[index].get(value, ())
        return [self._items[k] for k in sorted(keys)]

    def _index(self, key: Key, obj: T) -> None:
        for name, fn in self._indexers.items():
            for value in fn(obj):
                self._indexes[name][value].add(key)

    def _unindex(self, key: Key, obj: T) -> None:
        for name, fn in self._indexers.items():
            index = self._indexes[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
