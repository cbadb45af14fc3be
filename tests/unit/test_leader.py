"""Leader election against an in-memory Lease API with the API server's conditional-update rules."""

from __future__ import annotations

import copy
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from reconciler.kube.client import ApiError
from reconciler.kube.leader import LeaderElector, LeadershipLost

pytestmark = pytest.mark.anyio


class LeaseAPI:
    """One Lease; PUT succeeds only with the current resourceVersion (else 409), as the API server does."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiError(503, "ServiceUnavailable", "down")

    async def get(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any]:
        self._check()
        if self.lease is None:
            raise ApiError(404, "NotFound", "no lease")
        return copy.deepcopy(self.lease)

    async def create(self, resource: Any, namespace: str | None, body: Any) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise ApiError(409, "AlreadyExists", "exists")
        self.rv += 1
        self.lease = copy.deepcopy(body) | {"metadata": {**body["metadata"], "resourceVersion": str(self.rv)}}
        return copy.deepcopy(self.lease)

    async def replace(self, resource: Any, namespace: str | None, name: str, body: Any) -> dict[str, Any]:
        self._check()
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.rv += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(api: LeaseAPI, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        api, "ns", "lease", identity, lease_duration=15, renew_deadline=10, retry_period=2, clock=clock
    )


async def test_first_candidate_wins_and_the_second_waits_for_expiry() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "a"
    assert not await b.try_acquire_or_renew()
    clock.now += 10
    assert await a.try_acquire_or_renew(), "the holder renews"
    clock.now += 14
    assert not await b.try_acquire_or_renew(), "renewed 14 s ago as b saw it: not expired"
    clock.now += 16  # a stopped renewing
    assert await b.try_acquire_or_renew()
    assert api.lease["spec"]["holderIdentity"] == "b"
    assert api.lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew(), "the old holder cannot take it back while b renews"
    assert b.is_leader
    assert not a.is_leader


async def test_expiry_is_judged_by_local_observation_not_the_holders_clock() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert api.lease is not None
    api.lease["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"  # a holder whose clock is far behind
    assert not await b.try_acquire_or_renew(), "b first saw this record just now: the term runs from here"


async def test_release_hands_over_at_once() -> None:
    api, clock = LeaseAPI(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert not a.is_leader
    assert await b.try_acquire_or_renew(), "a released lease is free without waiting for expiry"


async def test_two_candidates_racing_on_a_free_lease_cannot_both_win() -> None:
    api, clock = LeaseAPI(), Clock()
    a = elector(api, clock, "a")
    assert await a.try_acquire_or_renew()
    await a.release()
    free = copy.deepcopy(api.lease)  # b reads the free lease ...
    assert await a.try_acquire_or_renew()  # ... but a writes first

    class StaleRead:
        async def get(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any]:
            return copy.deepcopy(free)  # type: ignore[arg-type]

        create = api.create
        replace = api.replace

    b = LeaderElector(
        StaleRead(), "ns", "lease", "b", lease_duration=15, renew_deadline=10, retry_period=2, clock=clock
    )
    assert not await b.try_acquire_or_renew(), "b's update carries the old resourceVersion: 409, no win"
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "a"
    assert not b.is_leader


async def test_hold_raises_when_renewals_fail_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    api, clock = LeaseAPI(), Clock()
    a = elector(api, clock, "a")
    assert await a.try_acquire_or_renew()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("reconciler.kube.leader.anyio.sleep", sleep)
    api.down = True
    with pytest.raises(LeadershipLost):
        await a.hold()
    assert not a.is_leader


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElector(LeaseAPI(), "ns", "l", "a", lease_duration=10, renew_deadline=10, retry_period=2)


class WatchedLeaseAPI(LeaseAPI):
    """The Lease API plus a watch that streams every update of the Lease."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[dict[str, Any]] = []
        self.changed = anyio.Event()

    async def replace(self, resource: Any, namespace: str | None, name: str, body: Any) -> dict[str, Any]:
        answer = await super().replace(resource, namespace, name, body)
        self.updates.append(answer)
        self.changed.set()
        self.changed = anyio.Event()
        return answer

    @asynccontextmanager
    async def watch(self, resource: Any, namespace: str | None, resource_version: str, **_: Any) -> Any:
        async def events() -> Any:
            seen = 0
            while True:
                while seen < len(self.updates):
                    seen += 1
                    yield {"type": "MODIFIED", "object": self.updates[seen - 1]}
                await self.changed.wait()

        yield events()


def following(tg: anyio.abc.TaskGroup, standby: LeaderElector, api: WatchedLeaseAPI) -> anyio.Event:
    """The standby follows the Lease's watch and waits to acquire it; the Event is set once it has."""
    acquired = anyio.Event()

    async def wait_for_it() -> None:
        await standby.acquire()
        acquired.set()

    tg.start_soon(standby.follow, api)
    tg.start_soon(wait_for_it)
    return acquired


async def test_a_standby_takes_a_released_lease_at_once_not_at_its_next_poll() -> None:
    api = WatchedLeaseAPI()
    leader = LeaderElector(api, "ns", "lease", "a", lease_duration=15, renew_deadline=10, retry_period=5)
    standby = LeaderElector(api, "ns", "lease", "b", lease_duration=15, renew_deadline=10, retry_period=5)
    await leader.acquire()
    async with anyio.create_task_group() as tg:
        acquired = following(tg, standby, api)
        await anyio.sleep(0.1)  # the standby tried once and sleeps up to its 5 s retry period
        started = anyio.current_time()
        await leader.release()
        with anyio.fail_after(2):
            await acquired.wait()
        assert anyio.current_time() - started < 1.0, "followed at once, not after the retry period"
        tg.cancel_scope.cancel()
    assert standby.is_leader


async def test_a_killed_leaders_lease_is_taken_when_its_term_ends_dated_by_the_watch() -> None:
    """SIGKILL: no release. The standby saw the last renewal on the watch when it happened, and tries right
    when that renewal's term ends, not at its next poll (which dated the renewal up to a period late)."""
    api = WatchedLeaseAPI()
    leader = LeaderElector(api, "ns", "lease", "a", lease_duration=2, renew_deadline=1.5, retry_period=1.0)
    standby = LeaderElector(api, "ns", "lease", "b", lease_duration=2, renew_deadline=1.5, retry_period=1.0)
    await leader.acquire()
    async with anyio.create_task_group() as tg:
        acquired = following(tg, standby, api)
        await anyio.sleep(0.3)  # the standby polled once at 0 s; its next poll is at 1.0-1.2 s
        assert await leader.try_acquire_or_renew(), "the last renewal, at 0.3 s"
        last_renewal = anyio.current_time()
        with anyio.fail_after(5):
            await acquired.wait()  # the leader is "killed": it never renews again
        took = anyio.current_time() - last_renewal
        tg.cancel_scope.cancel()
    assert standby.is_leader
    assert 2 <= took < 2 + 0.3, f"taken {took:.2f}s after the last renewal (term 2 s)"
