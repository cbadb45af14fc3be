"""The informer against a scripted API server: list, watch, bookmarks, relist on 410, backoff."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from reconciler.kube.informer import Informer
from reconciler.kube.resources import SERVICES
from reconciler.kube.store import Change, Store, by_namespace
from reconciler.metrics import Metrics
from reconciler.model import Service
from tests.unit.fake_apiserver import Script, item, listing, serve

pytestmark = pytest.mark.anyio

Event = tuple[str, str, bool]


async def run_until(
    script: Script, condition: Any, timeout: float = 5.0, **options: Any
) -> tuple[Store[Service], list[Event], Metrics]:
    metrics = Metrics()
    store: Store[Service] = Store({"namespace": by_namespace})
    events: list[Event] = []

    def handler(change: Change[Service]) -> None:
        events.append((change.type.value, change.obj.meta.name, change.initial))

    async with serve(script, metrics) as client:
        informer = Informer(client, SERVICES, Service.from_raw, store, handler, metrics, backoff_base=0.01, **options)
        async with anyio.create_task_group() as tg:
            tg.start_soon(informer.run)
            with anyio.fail_after(timeout):
                while not condition(store, events):  # noqa: ASYNC110 - polls a plain condition in a test
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    return store, events, metrics


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_list_then_watch_from_the_list_resource_version_with_bookmarks() -> None:
    script = Script(
        lists=[(200, listing("10", item("a", "5")))],
        watches=[
            (
                200,
                [
                    {"type": "ADDED", "object": item("b", "11")},
                    {"type": "MODIFIED", "object": item("a", "12")},
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
                    {"type": "DELETED", "object": item("b", "21")},
                ],
            )
        ],
    )
    store, events, metrics = await run_until(script, lambda s, e: len(e) >= 4 and len(script.requests) >= 3)
    assert events == [("ADDED", "a", True), ("ADDED", "b", False), ("MODIFIED", "a", False), ("DELETED", "b", False)]
    assert [s.meta.name for s in store] == ["a"]
    watches = [q for verb, q in script.requests if verb == "watch"]
    assert watches[0]["resourceVersion"] == "10"
    assert watches[0]["allowWatchBookmarks"] == "true"
    assert watches[1]["resourceVersion"] == "21", "a watch that ends re-opens from the last resourceVersion"
    assert count(metrics, "acme_gateway_relists_total", resource="services") == 1
    assert count(metrics, "acme_gateway_watch_restarts_total", resource="services", reason="timeout") >= 1


async def test_gone_event_relists_and_replaces_the_cache() -> None:
    script = Script(
        lists=[
            (200, listing("10", item("a", "5"), item("b", "6"))),
            (200, listing("30", item("a", "25"), item("c", "26"))),
        ],
        watches=[(200, [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}])],
    )
    store, events, metrics = await run_until(script, lambda s, e: len(e) >= 5)
    assert sorted(s.meta.name for s in store) == ["a", "c"]
    assert ("DELETED", "b", False) in events, "objects gone during the gap are reported as deleted"
    assert ("MODIFIED", "a", False) in events
    assert ("ADDED", "c", False) in events
    assert count(metrics, "acme_gateway_relists_total", resource="services") == 2
    assert count(metrics, "acme_gateway_watch_restarts_total", resource="services", reason="gone") == 1


async def test_gone_when_opening_the_watch_relists() -> None:
    script = Script(
        lists=[(200, listing("10", item("a", "5"))), (200, listing("40", item("a", "5")))],
        watches=[(410, [])],
    )
    _, events, _metrics = await run_until(
        script, lambda s, e: sum(1 for v, _ in script.requests if v == "list") >= 2 and len(script.requests) >= 4
    )
    assert events == [("ADDED", "a", True)], "an unchanged object is not re-announced after a relist"
    watches = [q for verb, q in script.requests if verb == "watch"]
    assert watches[-1]["resourceVersion"] == "40"


async def test_list_errors_back_off_and_recover() -> None:
    script = Script(lists=[(500, {"kind": "Status", "code": 500}), (200, listing("3", item("a", "1")))])
    _store, _, metrics = await run_until(script, lambda s, e: len(s) == 1)
    assert count(metrics, "acme_gateway_api_requests_total", verb="list", code="500") >= 1


async def test_paginated_list_is_followed_to_the_end() -> None:
    first = listing("", item("a", "1"))
    first["metadata"]["continue"] = "tok"
    script = Script(lists=[(200, first), (200, listing("9", item("b", "2")))])
    _store, _, _ = await run_until(script, lambda s, e: len(s) == 2)
    lists = [q for verb, q in script.requests if verb == "list"]
    assert lists[1]["continue"] == "tok"


async def test_an_object_of_the_wrong_shape_is_skipped_not_fatal() -> None:
    bad = item("bad", "11")
    bad["spec"]["ports"] = [{"port": 80, "name": {"not": "a string"}}]
    script = Script(
        lists=[(200, listing("10"))],
        watches=[(200, [{"type": "ADDED", "object": bad}, {"type": "ADDED", "object": item("good", "12")}])],
    )
    store, _, metrics = await run_until(script, lambda s, e: len(s) == 1)
    assert [s.meta.name for s in store] == ["good"]
    assert count(metrics, "acme_gateway_watch_events_total", resource="services", type="INVALID") == 1


async def test_a_missing_crd_is_reported_as_such(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(
        lists=[
            (404, {"kind": "Status", "code": 404, "message": "the server could not find it"}),
            (200, listing("3", item("a", "1"))),
        ]
    )
    await run_until(script, lambda s, e: len(s) == 1)
    assert any("is its CRD installed?" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


async def test_a_silent_watch_is_reopened_from_where_it_was_without_a_relist() -> None:
    """The connection stays open and nothing comes (a stalled proxy, a half-open socket): after the idle
    limit the watch is opened again from the last resourceVersion."""
    script = Script(lists=[(200, listing("10", item("a", "5")))], watches=[])  # every watch hangs, silent

    def reopened_twice(store: Any, events: Any) -> bool:
        return len([r for r in script.requests if r[0] == "watch"]) >= 3

    started = anyio.current_time()
    _, _, metrics = await run_until(script, reopened_twice, timeout=5.0, idle_timeout=0.2)
    assert anyio.current_time() - started < 2.0, "detected within a bounded time"
    watches = [query for verb, query in script.requests if verb == "watch"]
    assert {w["resourceVersion"] for w in watches} == {"10"}
    assert [verb for verb, _ in script.requests].count("list") == 1, "no relist: nothing was lost"
    assert count(metrics, "acme_gateway_watch_restarts_total", resource="services", reason="silent") >= 2


async def test_objects_that_cannot_matter_are_not_cached_and_leave_when_they_stop_mattering() -> None:
    def lb(name: str, rv: str, type_: str = "LoadBalancer") -> Any:
        obj = item(name, rv)
        obj["spec"]["type"] = type_
        return obj

    script = Script(
        lists=[(200, listing("10", item("plain", "5"), lb("edge", "6")))],
        watches=[
            (
                200,
                [
                    {"type": "ADDED", "object": item("another-plain", "11")},
                    {"type": "MODIFIED", "object": lb("plain", "12")},  # becomes a LoadBalancer: now it matters
                    {"type": "MODIFIED", "object": lb("edge", "13", "ClusterIP")},  # stops mattering: leaves
                ],
            )
        ],
    )

    def done(store: Any, events: Any) -> bool:
        return len(events) >= 3

    def keep(raw: Any) -> bool:
        return bool(raw["spec"]["type"] == "LoadBalancer")

    store, events, _ = await run_until(script, done, keep=keep)
    assert sorted(s.meta.name for s in store) == ["plain"]
    assert events == [("ADDED", "edge", True), ("ADDED", "plain", False), ("DELETED", "edge", False)]
