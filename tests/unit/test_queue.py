"""Work-queue semantics (client-go's): dedupe, one worker per key, dirty re-queue, delays, backoff, drain."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from reconciler.kube.queue import WorkQueue
from reconciler.kube.ratelimit import ItemBackoff, QueueRateLimiter, TokenBucket
from reconciler.metrics import Metrics

pytestmark = pytest.mark.anyio


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_adds_of_a_queued_key_are_deduplicated() -> None:
    metrics = Metrics()
    q: WorkQueue[str] = WorkQueue("t", metrics)
    for _ in range(3):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert sample(metrics, "workqueue_adds_total", {"name": "t"}) == 2
    assert sample(metrics, "workqueue_depth", {"name": "t"}) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"


async def test_key_added_while_processing_is_requeued_only_after_done() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    assert await q.get() == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a key in processing must not be handed to a second worker"
    q.done("a")
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0


async def test_no_key_is_processed_by_two_workers_at_once() -> None:
    q: WorkQueue[int] = WorkQueue("t")
    in_flight: set[int] = set()
    processed: list[int] = []
    overlaps: list[int] = []
    rng = random.Random(7)

    async def worker() -> None:
        while (key := await q.get()) is not None:
            if key in in_flight:
                overlaps.append(key)
            in_flight.add(key)
            await anyio.sleep(rng.random() / 1000)
            if rng.random() < 0.3:
                q.add(key)  # an event arriving mid-processing
            in_flight.discard(key)
            processed.append(key)
            q.done(key)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(worker)
        for _ in range(500):
            q.add(rng.randrange(10))
            await anyio.lowlevel.checkpoint()
        q.shutdown()
    assert overlaps == []
    assert len(processed) >= 10


async def test_add_after_delivers_when_due_and_keeps_the_earliest() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    async with anyio.create_task_group() as tg:
        tg.start_soon(q.run_delays)
        q.add_after("late", 0.2)
        q.add_after("late", 5.0)  # a later schedule does not push the earlier one back
        q.add_after("now", 0)
        assert await q.get() == "now"
        assert len(q) == 0
        assert q.delayed == 1
        with anyio.fail_after(2):
            t0 = anyio.current_time()
            assert await q.get() == "late"
            assert anyio.current_time() - t0 >= 0.15
        q.shutdown()


async def test_rate_limited_adds_back_off_exponentially_and_forget_resets() -> None:
    metrics = Metrics()
    limiter: QueueRateLimiter[str] = QueueRateLimiter(ItemBackoff(base=0.01, cap=1.0), TokenBucket(1000, 1000))
    q: WorkQueue[str] = WorkQueue("t", metrics, limiter)
    delays = [limiter.when("k") for _ in range(4)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08])
    assert q.retries("k") == 4
    q.forget("k")
    assert q.retries("k") == 0
    assert limiter.when("k") == pytest.approx(0.01)
    q.add_rate_limited("k")
    assert sample(metrics, "workqueue_retries_total", {"name": "t"}) == 1


def test_backoff_is_capped() -> None:
    backoff: ItemBackoff[str] = ItemBackoff(base=0.005, cap=300.0)
    delays = [backoff.when("k") for _ in range(100)]
    assert max(delays) == 300.0
    assert delays[-1] == 300.0


def test_token_bucket_spreads_a_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=2, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0.1, 0.2])
    now[0] = 10.0
    assert bucket.reserve() == 0


def test_overall_bucket_dominates_when_many_keys_fail() -> None:
    now = [0.0]
    limiter: QueueRateLimiter[int] = QueueRateLimiter(ItemBackoff(base=0.001), TokenBucket(10, 1, clock=lambda: now[0]))
    delays = [limiter.when(k) for k in range(5)]
    assert delays == pytest.approx([0.001, 0.1, 0.2, 0.3, 0.4])


async def test_shutdown_drains_queued_work_then_returns_none() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    q.add("b")
    first = await q.get()
    q.shutdown()
    q.add("c")  # refused after shutdown
    assert await q.get() == "b"
    assert await q.get() is None
    drained = False

    async def finish() -> None:
        nonlocal drained
        await anyio.sleep(0.05)
        drained = True
        assert first is not None
        q.done(first)

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish)
        q.done("b")
        await q.wait_drained()
        assert drained, "wait_drained must wait for in-flight work"


async def test_scrape_time_gauges_report_in_flight_work() -> None:
    now = [100.0]
    metrics = Metrics()
    q: WorkQueue[str] = WorkQueue("t", metrics, clock=lambda: now[0])
    q.add("a")
    q.add("b")
    await q.get()
    now[0] = 103.0
    await q.get()
    now[0] = 104.0
    assert sample(metrics, "workqueue_longest_running_processor_seconds", {"name": "t"}) == 4.0
    assert sample(metrics, "workqueue_unfinished_work_seconds", {"name": "t"}) == 5.0
    q.done("a")
    q.done("b")
    assert sample(metrics, "workqueue_longest_running_processor_seconds", {"name": "t"}) == 0.0
    assert sample(metrics, "workqueue_work_duration_seconds_count", {"name": "t"}) == 2


async def test_shutdown_without_drain_finishes_only_the_work_in_progress() -> None:
    """A replica handing over stops taking work: the next leader has every key in its own queue."""
    q: WorkQueue[str] = WorkQueue("t")
    for key in ("a", "b", "c"):
        q.add(key)
    assert await q.get() == "a"  # in progress
    q.shutdown(drain=False)
    assert await q.get() is None, "queued keys are not handed out any more"
    assert len(q) == 0
    finished = anyio.Event()

    async def wait() -> None:
        await q.wait_drained()
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(0.01)
        assert not finished.is_set(), "the key in progress is still being written"
        q.done("a")
        with anyio.fail_after(1):
            await finished.wait()


def test_a_rate_limited_retry_can_ask_to_wait_at_least_a_floor() -> None:
    """A 403 from RBAC meets every write: its retries wait a floor, not the per-key millisecond backoff."""
    now = [10.0]
    q: WorkQueue[str] = WorkQueue("t", clock=lambda: now[0])
    q.add_rate_limited("fast")
    q.add_rate_limited("floored", at_least=1.0)
    assert q.ready_at("fast") == pytest.approx(10.005)
    assert q.ready_at("floored") == pytest.approx(11.0)
