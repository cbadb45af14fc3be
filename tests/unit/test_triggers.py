"""Every event -> keys mapping (`reconciler.triggers`), without a controller: a key missed here leaves a
solver waiting for the next resync."""

from __future__ import annotations

import copy

from reconciler.cache import ClusterCache
from reconciler.kube.store import Change, EventType
from reconciler.model import JSON, Backend, Challenge, HTTPRoute, Key, Project, Service
from reconciler.triggers import (
    Wake,
    matters,
    on_backend,
    on_challenge,
    on_gateway_config,
    on_project,
    on_route,
    on_service,
    on_shadow,
    owning_service,
)
from tests.unit import objects as o

CH = o.challenge()
SVC = o.solver_service(CH)
SVC_KEY: Key = (o.NS, SVC["metadata"]["name"])
ROUTE = o.solver_route(CH)
ROUTE_KEY: Key = (o.NS, ROUTE["metadata"]["name"])
OTHER_CH = o.challenge(name="other-1-0", dns_name="other.example.com", token="tok-other")
OTHER_SVC = o.solver_service(OTHER_CH, name="cm-acme-http-solver-other")
OTHER_KEY: Key = (o.NS, OTHER_SVC["metadata"]["name"])
APP = o.plain_service(type_="LoadBalancer")
WORLD = [CH, OTHER_CH, SVC, OTHER_SVC, APP, ROUTE, o.project()]


def cache() -> ClusterCache:
    return o.cache_of(WORLD)


def added(view: object) -> Change[object]:
    return Change(EventType.ADDED, None, view)


def solver_wake(key: Key, routes: list[Key]) -> Wake:
    return Wake(services=[key], backends=[key], shadows=[key], routes=routes)


def test_a_new_solver_service_wakes_itself_its_derived_objects_and_the_other_solvers_of_its_namespace() -> None:
    wake = on_service(Change(EventType.ADDED, None, Service.from_raw(SVC)), cache())
    assert wake.services == [SVC_KEY, OTHER_KEY], "its allocation, and the other solvers' (a port was taken)"
    assert (wake.backends, wake.shadows, wake.routes) == ([SVC_KEY], [SVC_KEY], [ROUTE_KEY])


def test_a_deleted_service_frees_its_port_for_the_other_solvers() -> None:
    wake = on_service(Change(EventType.DELETED, Service.from_raw(SVC), None), cache())
    assert OTHER_KEY in wake.services


def test_a_port_change_wakes_the_other_solvers_but_an_annotation_change_does_not() -> None:
    old = Service.from_raw(SVC)
    moved = copy.deepcopy(SVC)
    moved["spec"]["ports"][0]["port"] = 8090
    assert OTHER_KEY in on_service(Change(EventType.MODIFIED, old, Service.from_raw(moved)), cache()).services
    relabelled = copy.deepcopy(SVC)
    relabelled["metadata"]["annotations"]["x"] = "y"
    wake = on_service(Change(EventType.MODIFIED, old, Service.from_raw(relabelled)), cache())
    assert wake.services == [SVC_KEY]


def test_a_backend_wakes_the_service_its_name_stands_for_and_the_routes_that_wait_on_it() -> None:
    backend = Backend.from_raw(o.platform_backend(SVC))  # whoever made it
    wake = on_backend(Change(EventType.ADDED, None, backend), cache())
    assert wake.shadows == [SVC_KEY]
    assert wake.routes == [ROUTE_KEY]
    assert SVC_KEY in wake.backends
    assert wake.services == [], "the Service decision does not read Backends"


def test_a_backend_wakes_its_controlling_service_whatever_its_name() -> None:
    raw = o.managed_backend(APP)
    raw["metadata"]["name"] = "renamed"
    wake = on_backend(Change(EventType.MODIFIED, None, Backend.from_raw(raw)), cache())
    assert wake.backends == [(o.NS, "my-app")]
    assert wake.shadows == []
    assert wake.routes == []


def test_a_route_wakes_itself_and_the_companions_of_the_services_both_versions_name() -> None:
    raw = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "ur", "resourceVersion": "1"},
        "spec": {"rules": [{"backendRefs": [{"name": "solver", "port": 8089}]}]},
    }
    old = HTTPRoute.from_raw(copy.deepcopy(raw))
    raw["spec"]["rules"][0]["backendRefs"][0]["namespace"] = "elsewhere"
    raw["metadata"]["resourceVersion"] = "2"
    new = HTTPRoute.from_raw(raw)
    wake = on_route(Change(EventType.MODIFIED, old, new), ClusterCache())
    assert wake.routes == [("ns", "r")]
    assert wake.shadows == [("ns", "solver")], "the Service it no longer names must lose its companion"


def test_a_route_through_a_backend_wakes_the_companion_of_the_service_behind_it() -> None:
    routed = HTTPRoute.from_raw(o.backend_route(ROUTE, f"{SVC_KEY[1]}-backend"))
    assert on_route(Change(EventType.ADDED, None, routed), ClusterCache()).shadows == [SVC_KEY]


def test_a_companion_route_wakes_the_service_that_owns_it() -> None:
    raw: JSON = {
        "metadata": {
            "name": "x-acme",
            "namespace": o.NS,
            "uid": "u",
            "ownerReferences": [o.owner_ref(SVC)],
        }
    }
    wake = on_shadow(Change(EventType.DELETED, HTTPRoute.from_raw(raw), None), ClusterCache())
    assert wake == Wake(shadows=[SVC_KEY])
    del raw["metadata"]["ownerReferences"]
    assert on_shadow(Change(EventType.ADDED, None, HTTPRoute.from_raw(raw)), ClusterCache()) == Wake()


CH_KEY: Key = (o.NS, CH["metadata"]["name"])


def test_a_challenge_wakes_the_solver_objects_it_controls_and_its_own_story() -> None:
    wake = on_challenge(Change(EventType.MODIFIED, None, Challenge.from_raw(CH)), cache())
    assert wake.challenges == [CH_KEY, CH_KEY], "its Events and probe (once itself, once via its Service)"
    assert (wake.services, wake.backends, wake.shadows) == ([SVC_KEY], [SVC_KEY], [SVC_KEY])
    assert wake.routes == [ROUTE_KEY, ROUTE_KEY]
    other = on_challenge(
        Change(EventType.MODIFIED, Challenge.from_raw(OTHER_CH), Challenge.from_raw(OTHER_CH)), cache()
    )
    assert other.services == [OTHER_KEY]
    assert other.routes == []


def test_a_challenge_that_ends_wakes_every_solver_of_its_namespace() -> None:
    """Its concurrency slot is free: the oldest waiting solver of the project may take it."""
    done = copy.deepcopy(OTHER_CH)
    done["status"]["state"] = "valid"
    ended = Change(EventType.MODIFIED, Challenge.from_raw(OTHER_CH), Challenge.from_raw(done))
    assert set(on_challenge(ended, cache()).services) == {SVC_KEY, OTHER_KEY}
    deleted = Change(EventType.DELETED, Challenge.from_raw(OTHER_CH), None)
    assert set(on_challenge(deleted, cache()).services) == {SVC_KEY, OTHER_KEY}
    again = Change(EventType.MODIFIED, Challenge.from_raw(done), Challenge.from_raw(done))
    assert on_challenge(again, cache()).services == [OTHER_KEY], "already final: nothing new"


def test_a_project_wakes_everything_in_the_namespaces_either_version_names() -> None:
    old = Project.from_raw(o.project(status_namespace="old-ns"))
    new = Project.from_raw(o.project())
    moved = [o.plain_service(name="left-behind", namespace="old-ns", type_="LoadBalancer")]
    world = o.cache_of([*WORLD, *moved])
    wake = on_project(Change(EventType.MODIFIED, old, new), world)
    assert set(wake.services) == {SVC_KEY, OTHER_KEY, (o.NS, "my-app"), ("old-ns", "left-behind")}
    assert set(wake.routes) == {ROUTE_KEY}
    assert set(wake.shadows) == set(wake.services) == set(wake.backends)


def test_owning_service_needs_a_controlling_core_v1_service() -> None:
    def meta(ref: JSON) -> HTTPRoute:
        return HTTPRoute.from_raw({"metadata": {"name": "n", "namespace": "ns", "ownerReferences": [ref]}})

    svc_ref = o.owner_ref(SVC)
    assert owning_service(meta(svc_ref).meta) == ("ns", SVC_KEY[1])
    assert owning_service(meta({**svc_ref, "controller": False}).meta) is None
    assert owning_service(meta({**svc_ref, "apiVersion": "example.com/v1"}).meta) is None
    assert owning_service(meta(o.owner_ref(CH)).meta) is None


def test_every_hop_of_a_solver_wakes_the_story_of_its_challenge() -> None:
    c = cache()
    assert on_service(Change(EventType.MODIFIED, None, Service.from_raw(SVC)), c).challenges == [CH_KEY]
    backend = Backend.from_raw(o.managed_backend(SVC))
    assert on_backend(Change(EventType.MODIFIED, None, backend), c).challenges == [CH_KEY]
    assert on_route(Change(EventType.MODIFIED, None, HTTPRoute.from_raw(ROUTE)), c).challenges == [CH_KEY]
    companion = HTTPRoute.from_raw(
        {"metadata": {"name": "x-acme", "namespace": o.NS, "uid": "u", "ownerReferences": [o.owner_ref(SVC)]}}
    )
    assert on_shadow(Change(EventType.MODIFIED, None, companion), c).challenges == [CH_KEY], "the Gateway's verdict"


def test_a_gateway_set_up_differently_wakes_every_solver_route() -> None:
    wake = on_gateway_config(Change(EventType.ADDED, None, None), cache())  # type: ignore[arg-type]
    assert wake.routes == [ROUTE_KEY]
    assert wake.shadows == [SVC_KEY]
    assert wake.challenges == [CH_KEY]


def test_an_update_that_leaves_the_view_as_it_was_wakes_nothing() -> None:
    """cert-manager rewrites a waiting Challenge's status ~250 times a second (its message counts down)."""
    churned = copy.deepcopy(CH)
    churned["metadata"]["resourceVersion"] = "2"
    churned["status"]["reason"] = "Waiting 4.996s before accepting"
    same = Change(EventType.MODIFIED, Challenge.from_raw(CH), Challenge.from_raw(churned))
    assert not matters(same)
    churned["status"]["state"] = "valid"
    assert matters(Change(EventType.MODIFIED, Challenge.from_raw(CH), Challenge.from_raw(churned)))
    assert matters(Change(EventType.ADDED, None, Challenge.from_raw(CH)))
    assert matters(Change(EventType.DELETED, Challenge.from_raw(CH), None))


def test_a_metadata_change_other_than_the_version_matters() -> None:
    relabelled = copy.deepcopy(CH)
    relabelled["metadata"]["resourceVersion"] = "2"
    relabelled["metadata"].setdefault("labels", {})["x"] = "y"
    relabelled["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    assert matters(Change(EventType.MODIFIED, Challenge.from_raw(CH), Challenge.from_raw(relabelled)))


def test_a_load_balancer_service_that_is_no_solver_wakes_only_its_backend() -> None:
    """Nothing but its own Backend is decided from it: at 2,000 such Services, the other loops' looks
    were 3 of every 4 reconciles after start-up. A port it takes still moves the solvers' allocation."""
    wake = on_service(added(Service.from_raw(APP)), cache())
    assert wake.backends == [(o.NS, APP["metadata"]["name"])]
    assert (wake.shadows, wake.routes, wake.challenges) == ([], [], [])
    assert sorted(wake.services) == sorted([SVC_KEY, OTHER_KEY]), "the solvers of its namespace: ports may move"
    unlabelled = copy.deepcopy(SVC)
    del unlabelled["metadata"]["labels"][cache().solver_label]
    wake = on_service(Change(EventType.MODIFIED, Service.from_raw(SVC), Service.from_raw(unlabelled)), cache())
    assert wake.shadows == [SVC_KEY], "a solver label removed: what was decided from it is looked at again"
