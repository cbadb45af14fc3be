"""Bad input for every reconciler (issue 13): a world of real-shaped solver objects, one to four of them
type-confused, truncated or stripped, loaded the way the informers load them (what a parser refuses is
skipped), then every loop over every key it could be asked about: services (with domain claims), backends,
routes (patch mode), shadows and the Challenge diagnosis.

Properties: no exception escapes a reconciler; every refusal, skip and Event reason comes from the closed
sets in `reconcile/reasons.py`; no write is decided for a solver whose Challenge or Service is unusable, or
in a namespace no cloud Project owns; every write carries its precondition.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cache import ClusterCache
from reconciler.model import JSON, Key
from reconciler.names import SHADOW_SUFFIX
from reconciler.policy import BackendMode, Policy, RouteMode
from reconciler.reconcile.backends import reconcile_backend
from reconciler.reconcile.diagnosis import diagnose
from reconciler.reconcile.intents import Create, Decision, Delete, Patch
from reconciler.reconcile.reasons import Noted, Refused, Skip
from reconciler.reconcile.routes import reconcile_route
from reconciler.reconcile.services import reconcile_service
from reconciler.reconcile.shadows import reconcile_shadow
from reconciler.reconcile.solvers import challenge_problem, service_problem
from reconciler.watches import watches
from tests.unit import objects as o
from tests.unit.test_properties_parsers import ALLOWED, _paths, json_values

NAMESPACES = {"cloud": o.NS, "public": "pub-demo", "none": "no-project"}
SERVER_SET = frozenset({("metadata", "resourceVersion"), ("metadata", "uid"), ("metadata", "creationTimestamp")})
"""Fields only the API server writes (no tenant can forge or mistype them): left as they are. Without them an
object could only be written blindly: the parsers' own properties cover objects that lack them."""


def _world(draw: st.DrawFn) -> list[JSON]:
    """One to three solvers per namespace kind, some with their Backend, companion route and claim."""
    objs: list[JSON] = [
        o.project(),
        o.project(name="demo", org_namespace="pub", network="public", status_namespace=NAMESPACES["public"]),
    ]
    for kind, ns in NAMESPACES.items():
        for i in range(draw(st.integers(1, 2))):
            ch = o.challenge(name=f"ch-{i}", namespace=ns, dns_name=f"n{i}.{kind}.example.com", token=f"tok{i}")
            svc = o.solver_service(ch, name=f"solver-{i}")
            if draw(st.booleans()):
                svc = o.patched(svc)
            route = o.solver_route(ch, service_name=f"solver-{i}", name=f"route-{i}")
            objs += [ch, svc, route]
            if draw(st.booleans()):
                objs.append(o.managed_backend(svc))
            if kind == "cloud":
                objs.append(o.domain_claim(f"n{i}.{kind}.example.com"))
    return objs


def _mutate(draw: st.DrawFn, objs: list[JSON]) -> list[JSON]:
    objs = copy.deepcopy(objs)
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(objs))
        paths = [p for p in _paths(target) if p not in ((), ("kind",), ("metadata",)) and p[:2] not in SERVER_SET]
        path = draw(st.sampled_from(paths))
        parent: Any = target
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["replace", "replace", "delete", "truncate"]))
        if how == "replace":
            parent[path[-1]] = draw(json_values)
        elif how == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], str | list):
            parent[path[-1]] = parent[path[-1]][: draw(st.integers(0, max(0, len(parent[path[-1]]) - 1)))]
    return objs


@st.composite
def hostile_worlds(draw: st.DrawFn) -> tuple[list[JSON], Policy]:
    policy = Policy(
        backend_mode=draw(st.sampled_from(list(BackendMode))), route_mode=draw(st.sampled_from(list(RouteMode)))
    )
    return _mutate(draw, _world(draw)), policy


def load(objs: list[JSON], policy: Policy) -> ClusterCache:
    """As the informers fill the cache: each watch parses the object, and skips it when the parser refuses."""
    cache = ClusterCache(policy.solver_label)
    keep = policy.annotation_keys()
    for raw in objs:
        for watch in watches(cache, policy):
            if watch.resource.kind != raw.get("kind"):
                continue
            try:
                view = watch.parse(raw, keep)
            except ALLOWED:
                continue
            if watch.holds(view):
                watch.store.upsert(view)
    return cache


def decisions(cache: ClusterCache, policy: Policy) -> list[tuple[str, Key, Decision]]:
    """Every loop over every key its triggers could hand it."""
    out: list[tuple[str, Key, Decision]] = []
    service_keys = {s.meta.key for s in cache.services}
    service_keys |= {(b.meta.namespace, b.meta.name.removesuffix("-backend")) for b in cache.backends}
    service_keys |= {(r.meta.namespace, r.meta.name.removesuffix(SHADOW_SUFFIX)) for r in cache.shadows}
    for key in sorted(service_keys):
        out.append(("services", key, reconcile_service(key, cache, policy)))
        out.append(("backends", key, reconcile_backend(key, cache, policy)))
        out.append(("shadows", key, reconcile_shadow(key, cache, policy)))
    for route in cache.routes:
        out.append(("routes", route.meta.key, reconcile_route(route.meta.key, cache, policy)))
    for ch in cache.challenges:
        out.append(("challenges", ch.meta.key, diagnose(ch.meta.key, cache, policy)))
    return out


def _unusable_solvers(cache: ClusterCache) -> set[Key]:
    """Solver Services whose Challenge (by controller uid) or own shape can never work."""
    bad: set[Key] = set()
    for svc in cache.services:
        ref = svc.meta.controller_ref()
        ch = cache.challenge_by_uid(ref.uid) if ref is not None else None
        if ch is not None and (challenge_problem(ch) is not None or service_problem(svc) is not None):
            bad.add(svc.meta.key)
    return bad


hostile = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@hostile
@given(hostile_worlds())
def test_no_exception_escapes_and_every_reason_is_from_the_closed_sets(world: tuple[list[JSON], Policy]) -> None:
    objs, policy = world
    cache = load(objs, policy)
    noted = {str(r) for r in Noted}
    for _, _, decision in decisions(cache, policy):
        assert decision.skipped is None or isinstance(decision.skipped, Skip)
        for refusal in decision.refusals:
            assert isinstance(refusal.reason, Refused)
        for notice in decision.notices:
            assert notice.reason in noted, notice.reason


@hostile
@given(hostile_worlds())
def test_no_write_from_unusable_input_or_outside_cloud_projects(world: tuple[list[JSON], Policy]) -> None:
    objs, policy = world
    cache = load(objs, policy)
    unusable = _unusable_solvers(cache)
    for loop, key, decision in decisions(cache, policy):
        if key[0] != o.NS:  # public project, or a namespace no Project owns: nothing at all
            assert not decision.writes, (loop, key, decision)
            assert not decision.refusals, (loop, key, decision)
            assert not decision.notices, (loop, key, decision)
        if loop in ("services", "backends", "shadows") and key in unusable:
            creates = [w for w in decision.writes if not isinstance(w, Delete)]
            assert not creates, (loop, key, decision.writes)


@hostile
@given(hostile_worlds())
def test_every_write_carries_its_precondition(world: tuple[list[JSON], Policy]) -> None:
    objs, policy = world
    cache = load(objs, policy)
    for loop, key, decision in decisions(cache, policy):
        for write in decision.writes:
            if isinstance(write, Patch):
                assert write.resource_version, (loop, key, write)
                assert write.body["metadata"]["resourceVersion"] == write.resource_version
            elif isinstance(write, Delete):
                assert write.uid, (loop, key, write)
                assert write.resource_version, (loop, key, write)
            else:
                assert isinstance(write, Create), write
                assert isinstance(write.name, str), (loop, key, write)
                assert write.name, (loop, key, write)


def test_the_unmutated_world_is_wired_so_the_properties_are_not_vacuous() -> None:
    """Without mutation the cloud project's solvers get writes: the checks above do look at writes."""
    objs = [
        o.project(),
        ch := o.challenge(),
        o.solver_service(ch),
        o.solver_route(ch),
        o.domain_claim("my-app.example.com"),
    ]
    writes = [w for _, _, d in decisions(load(objs, Policy()), Policy()) for w in d.writes]
    assert any(isinstance(w, Patch) for w in writes)
