"""The store's indexes stay exact through upserts, deletes and relists."""

from __future__ import annotations

from reconciler.cache import ClusterCache
from reconciler.kube.store import Store, by_label, by_namespace
from reconciler.model import Service


def svc(name: str, ns: str = "a", rv: str = "1", uid: str | None = None, **labels: str) -> Service:
    return Service.from_raw(
        {
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": rv,
                "uid": uid or f"u-{ns}-{name}",
                "labels": labels,
            }
        }
    )


def test_label_index_follows_label_changes_and_deletes() -> None:
    store: Store[Service] = Store({"role": by_label("role")})
    store.upsert(svc("x", role="web"))
    store.upsert(svc("y", role="web"))
    store.upsert(svc("z", ns="b", role="web"))
    assert [s.meta.name for s in store.by_index("role", "a/web")] == ["x", "y"]
    store.upsert(svc("x", rv="2", role="db"))
    assert [s.meta.name for s in store.by_index("role", "a/web")] == ["y"]
    assert [s.meta.name for s in store.by_index("role", "a/db")] == ["x"]
    store.delete(("a", "y"))
    assert store.by_index("role", "a/web") == []


def test_solver_services_by_label() -> None:
    cache = ClusterCache()
    cache.services.upsert(svc("s1", **{"acme.cert-manager.io/http01-solver": "true"}))
    cache.services.upsert(svc("plain"))
    cache.services.upsert(svc("s2", ns="b", **{"acme.cert-manager.io/http01-solver": "true"}))
    assert [s.meta.name for s in cache.solver_services_in("a")] == ["s1"]


def test_relist_in_one_namespace_keeps_the_others_and_reports_changes() -> None:
    store: Store[Service] = Store({"namespace": by_namespace})
    store.upsert(svc("keep", ns="b"))
    store.upsert(svc("old", ns="a"))
    store.upsert(svc("same", ns="a"))
    changed, deleted = store.replace([svc("same", ns="a"), svc("new", ns="a")], namespace="a")
    assert [(o, n.meta.name) for o, n in changed] == [(None, "new")]
    assert [d.meta.name for d in deleted] == ["old"]
    assert sorted(s.meta.name for s in store) == ["keep", "new", "same"]


def test_a_stale_version_is_recognised() -> None:
    store: Store[Service] = Store()
    store.upsert(svc("x", rv="10"))
    assert store.is_stale(svc("x", rv="9"))
    assert not store.is_stale(svc("x", rv="11"))
    assert not store.is_stale(svc("x", rv="9", uid="another-object-same-name"))
