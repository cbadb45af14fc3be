"""Fair concurrency (`reconcile/limits.py`): at most N challenges of a project wired at once, oldest first."""

from __future__ import annotations

from reconciler.model import JSON, Key
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind, Patch
from reconciler.reconcile.limits import waiting_count
from reconciler.reconcile.services import reconcile_service
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

LIMIT = 10
POLICY = Policy(max_challenges_per_project=LIMIT)
CLOUD = o.project()


def solvers(n: int) -> tuple[list[JSON], list[Key]]:
    world: list[JSON] = []
    keys: list[Key] = []
    for i in range(n):
        ch = o.challenge(name=f"ch-{i:02d}", dns_name=f"n{i}.example.com", token=f"tok-{i}")
        ch["metadata"]["creationTimestamp"] = f"2026-08-01T10:{i // 60:02d}:{i % 60:02d}Z"
        svc = o.solver_service(ch, name=f"s-{i:02d}")
        world += [ch, svc]
        keys.append((o.NS, f"s-{i:02d}"))
    return world, keys


def wired(api: FakeAPI, keys: list[Key]) -> list[Key]:
    return [k for k in keys if api.objects[("Service", *k)]["spec"]["type"] == "LoadBalancer"]


def run_all(api: FakeAPI, keys: list[Key]) -> None:
    for key in reversed(keys):  # youngest first: order of processing must not matter
        decision = reconcile_service(key, o.cache_of(api.objects.values(), POLICY), POLICY)
        api.apply_all(decision.writes)


def test_never_more_than_the_limit_and_the_oldest_go_first() -> None:
    world, keys = solvers(25)
    api = FakeAPI([CLOUD, *world])
    for _ in range(3):
        run_all(api, keys)
    assert wired(api, keys) == keys[:LIMIT]
    assert waiting_count(o.NS, o.cache_of(api.objects.values(), POLICY), POLICY) == 25 - LIMIT


def test_a_waiting_solver_says_so_on_its_challenge_and_writes_nothing() -> None:
    world, keys = solvers(LIMIT + 1)
    api = FakeAPI([CLOUD, *world])
    run_all(api, keys)
    decision = reconcile_service(keys[-1], o.cache_of(api.objects.values(), POLICY), POLICY)
    assert decision.writes == ()
    assert decision.skipped == "waiting-for-slot"
    (notice,) = decision.notices
    assert notice.reason == "ConcurrencyLimitReached"
    assert [s.kind for s in notice.subjects] == [Kind.CHALLENGE, Kind.SERVICE]


def test_a_finished_challenge_frees_its_slot_for_the_oldest_waiting_one() -> None:
    world, keys = solvers(LIMIT + 2)
    api = FakeAPI([CLOUD, *world])
    run_all(api, keys)
    first = api.objects[("Challenge", o.NS, "ch-00")]
    api.update({**first, "status": {**first["status"], "state": "valid"}})
    run_all(api, keys)
    assert wired(api, keys) == keys[: LIMIT + 1], "the slot went to the oldest waiting solver, s-10"


def test_other_projects_are_not_held_back() -> None:
    world, keys = solvers(LIMIT)
    other = o.project("other", status_namespace="shalb-other")
    ch = o.challenge(name="ch-x", namespace="shalb-other", dns_name="x.example.com", token="tok-x")
    svc = o.solver_service(ch, name="s-x")
    api = FakeAPI([CLOUD, other, *world, ch, svc])
    run_all(api, keys)
    decision = reconcile_service(("shalb-other", "s-x"), o.cache_of(api.objects.values(), POLICY), POLICY)
    assert [type(w) for w in decision.writes] == [Patch]
