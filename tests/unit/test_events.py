"""Events are aggregated (`kube/events.py`): one Event per object and reason, repeats raise its count at
most once per interval, and a restart finds the same Event again."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from reconciler.kube.client import ApiError
from reconciler.kube.events import EventRecorder, ObjectRef, event_name
from reconciler.metrics import Metrics

pytestmark = pytest.mark.anyio

ABOUT = ObjectRef("acme.cert-manager.io/v1", "Challenge", "ns", "ch-1", "uid-1")


class EventsAPI:
    """Events by name, as the API server keeps them: a second create of a name is 409 AlreadyExists."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []

    async def create(self, resource: Any, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.writes.append("create")
        if name in self.events:
            raise ApiError(409, "AlreadyExists", f'events "{name}" already exists')
        self.events[name] = body
        return body

    async def patch(self, resource: Any, namespace: str | None, name: str, body: Any) -> dict[str, Any]:
        self.writes.append("patch")
        self.events[name] |= body
        return self.events[name]

    async def get(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any]:
        self.writes.append("get")
        return self.events[name]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_repeats_raise_the_count_at_most_once_per_interval() -> None:
    api, clock = EventsAPI(), Clock()
    recorder = EventRecorder(api, Metrics(), "test", repeat_interval=30, clock=clock)
    for _ in range(10):
        await recorder.post(ABOUT, "Warning", "GatewayProbeFailed", "HTTP 503", repeat=True)
    assert api.writes == ["create"], "nine repeats within the interval: counted, not written"
    clock.now = 31
    await recorder.post(ABOUT, "Warning", "GatewayProbeFailed", "connection refused", repeat=True)
    (event,) = api.events.values()
    assert event["count"] == 11
    assert event["message"] == "connection refused"
    assert api.writes == ["create", "patch"]


async def test_a_once_only_event_is_written_once() -> None:
    api = EventsAPI()
    recorder = EventRecorder(api, Metrics(), "test")
    for _ in range(3):
        await recorder.post(ABOUT, "Normal", "Routed", "routed")
    assert api.writes == ["create"]


async def test_after_a_restart_the_same_event_is_found_again() -> None:
    api, clock = EventsAPI(), Clock()
    await EventRecorder(api, Metrics(), "a", clock=clock).post(ABOUT, "Warning", "NoAddress", "no address", True)
    again = EventRecorder(api, Metrics(), "b", clock=clock)  # a new process
    await again.post(ABOUT, "Warning", "NoAddress", "no address", repeat=True)
    await again.post(ABOUT, "Normal", "Routed", "routed")
    await EventRecorder(api, Metrics(), "c", clock=clock).post(ABOUT, "Normal", "Routed", "routed")
    assert len(api.events) == 2, "one Event per object and reason, whatever the process"
    assert api.events[event_name(ABOUT, "NoAddress")]["count"] == 2
    assert api.events[event_name(ABOUT, "Routed")]["count"] == 1, "a once-only Event is not counted again"


async def test_after_a_restart_a_once_only_event_that_exists_costs_one_request() -> None:
    """A restarted replica tells every challenge in flight its story again: a once-only Event that exists
    is left as it is, without reading it (in a storm with a restart that was a GET per Event)."""
    api = EventsAPI()
    await EventRecorder(api, Metrics(), "a").post(ABOUT, "Normal", "Routed", "routed")
    api.writes.clear()
    await EventRecorder(api, Metrics(), "b").post(ABOUT, "Normal", "Routed", "routed")
    assert api.writes == ["create"]


async def test_event_names_are_valid_and_bounded() -> None:
    long = ObjectRef("v1", "Service", "ns", "x" * 253, "u")
    name = event_name(long, "Reason")
    assert len(name) <= 253
    assert event_name(ABOUT, "A") != event_name(ABOUT, "B")


async def test_a_dry_run_posts_nothing() -> None:
    api = EventsAPI()
    await EventRecorder(api, Metrics(), "test", dry_run=True).post(ABOUT, "Warning", "X", "y")
    assert api.writes == []


class SlowEventsAPI(EventsAPI):
    """Each create waits until released: a slow API server."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.fail = False
        self.failed = anyio.Event()

    async def create(self, resource: Any, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        await self.release.wait()
        if self.fail:
            self.writes.append("create")
            self.failed.set()
            raise ApiError(500, "InternalError", "etcd is unhappy")
        return await super().create(resource, namespace, body)


async def test_while_running_a_post_never_waits_for_the_api_server() -> None:
    """A worker's next write must not wait on an Event's round trip; what to post is decided at once,
    and `close` sends what is queued before it returns."""
    api = SlowEventsAPI()
    recorder = EventRecorder(api, Metrics(), "test")
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await anyio.lowlevel.checkpoint()  # run() opens its outbox
        with anyio.fail_after(1):
            for _ in range(3):
                await recorder.post(ABOUT, "Normal", "Routed", "routed")
            await recorder.post(ABOUT, "Normal", "BackendReady", "ready")
        assert api.writes == []
        api.release.set()
        with anyio.fail_after(5):
            await recorder.close()
    assert sorted(e["reason"] for e in api.events.values()) == ["BackendReady", "Routed"], "once each"


async def test_a_queued_event_that_fails_is_tried_again_by_the_next_post() -> None:
    api = SlowEventsAPI()
    api.fail = True
    api.release.set()
    recorder = EventRecorder(api, Metrics(), "test")
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await anyio.lowlevel.checkpoint()  # run() opens its outbox
        await recorder.post(ABOUT, "Normal", "Routed", "routed")
        with anyio.fail_after(5):
            await api.failed.wait()
        api.fail = False
        await recorder.post(ABOUT, "Normal", "Routed", "routed")
        await recorder.close()
    assert [e["reason"] for e in api.events.values()] == ["Routed"]
    assert api.writes == ["create", "create"]


async def test_close_without_run_returns_at_once() -> None:
    recorder = EventRecorder(EventsAPI(), Metrics(), "test")
    with anyio.fail_after(1):
        await recorder.close()


class FirstCreateSlowAPI(EventsAPI):
    """The first create takes a while; later ones are answered at once."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.order: list[str] = []

    async def create(self, resource: Any, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            await anyio.sleep(0.05)
        self.order.append(body["reason"])
        return await super().create(resource, namespace, body)


async def test_one_objects_story_is_written_in_the_order_it_was_told() -> None:
    """Several senders, but each object's Events go through one of them: a slow first create is not
    overtaken by the next step (`kubectl describe` would show Routed before BackendReady)."""
    api = FirstCreateSlowAPI()
    recorder = EventRecorder(api, Metrics(), "test")
    story = ["SolverExposed", "BackendReady", "Routed", "GatewayServes"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await anyio.lowlevel.checkpoint()  # run() opens its outboxes
        for reason in story:
            await recorder.post(ABOUT, "Normal", reason, reason.lower())
        with anyio.fail_after(5):
            await recorder.close()
    assert api.order == story
