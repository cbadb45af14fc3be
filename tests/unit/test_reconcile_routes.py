"""Route mode `patch`: the solver route's Service reference is rewritten to the solver's Backend."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from reconciler.model import JSON, Key
from reconciler.policy import Policy, RouteMode
from reconciler.reconcile.intents import Kind, Patch
from reconciler.reconcile.routes import reconcile_route
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

POLICY = Policy(route_mode=RouteMode.PATCH)
CH = o.challenge()
SVC = o.patched(o.solver_service(CH), [{"ip": "100.65.0.102"}])
NAME = SVC["metadata"]["name"]
BACKEND_NAME = f"{NAME}-backend"
BACKEND = o.managed_backend(SVC)
ROUTE = o.solver_route(CH)
KEY: Key = (o.NS, ROUTE["metadata"]["name"])
CLOUD = o.project()
PUBLIC = o.project(network="public")
OTHER_CH = o.challenge(name="other-1-0", dns_name="other.example.com", token="tok-other")
OTHER_SVC = o.patched(o.solver_service(OTHER_CH, name="cm-acme-http-solver-other"), [{"ip": "100.65.0.103"}])
APP = o.plain_service(type_="LoadBalancer", annotations={o.BACKEND_ANNOTATION: "true"}, ingress=[{"ip": "100.65.0.50"}])


def backend_ref(name: str = BACKEND_NAME, port: int | None = 8089, weight: int | None = 1) -> JSON:
    ref: JSON = {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name}
    if port is not None:
        ref["port"] = port
    if weight is not None:
        ref["weight"] = weight
    return ref


def service_ref(name: str = NAME, namespace: str | None = o.NS, port: int = 8089, weight: int | None = 1) -> JSON:
    ref: JSON = {"group": "", "kind": "Service", "name": name, "port": port}
    if namespace is not None:
        ref["namespace"] = namespace
    if weight is not None:
        ref["weight"] = weight
    return ref


def with_refs(*rule_refs: list[JSON], route: JSON = ROUTE) -> JSON:
    """`route` with one rule per list of references (the first keeps cert-manager's match)."""
    out = copy.deepcopy(route)
    first = out["spec"]["rules"][0]
    out["spec"]["rules"] = [
        {
            **(first if i == 0 else {"matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}"}}]}),
            "backendRefs": refs,
        }
        for i, refs in enumerate(rule_refs)
    ]
    return out


def annotated(svc: JSON, **annotations: str) -> JSON:
    out = copy.deepcopy(svc)
    out["metadata"]["annotations"].update(annotations)
    return out


@dataclass
class Case:
    id: str
    world: list[JSON]
    rules: list[list[JSON]] | None = None  # backendRefs per rule after the patch; None = no write
    routed: bool = False
    refusal: str | None = None
    skipped: str | None = None
    key: Key = KEY


CASES = [
    # the PRD
    Case("cloud-solver-routed-to-backend", [CH, SVC, CLOUD, BACKEND, ROUTE], rules=[[backend_ref()]], routed=True),
    Case("backend-missing-waits", [CH, SVC, CLOUD, ROUTE], skipped="waiting-for-backend"),
    Case("already-routed", [CH, SVC, CLOUD, BACKEND, o.backend_route(ROUTE, BACKEND_NAME)], routed=True),
    Case("public-project-untouched", [CH, SVC, PUBLIC, BACKEND, ROUTE], skipped="public-network"),
    # the platform's own Backend, ports, weights, namespaces
    Case(
        "platform-backend-not-routed-to",  # backend mode all: only the Backend we made is routed to
        [CH, SVC, CLOUD, o.platform_backend(SVC), ROUTE],
        refusal="UntrustedBackend",
        skipped="untrusted-backend",
    ),
    Case(
        "platform-backend-route-restored-to-the-service",  # left on a Backend that is not (any more) ours
        [CH, SVC, CLOUD, o.platform_backend(SVC), o.backend_route(ROUTE, BACKEND_NAME)],
        refusal="UntrustedBackend",
        rules=[[{"group": "", "kind": "Service", "name": SVC["metadata"]["name"], "port": 8089, "weight": 1}]],
    ),
    Case(
        "backend-port-wins",
        [CH, SVC, CLOUD, o.managed_backend(SVC, port=18089), ROUTE],
        rules=[[backend_ref(port=18089)]],
        routed=True,
    ),
    Case(
        "backend-ref-with-stale-port",
        [CH, SVC, CLOUD, o.managed_backend(SVC, port=18089), o.backend_route(ROUTE, BACKEND_NAME, port=8089)],
        rules=[[backend_ref(port=18089)]],
        routed=True,
    ),
    Case(
        "backend-without-port-keeps-ref-port",
        [CH, SVC, CLOUD, {**BACKEND, "spec": {"endpoints": [{"unix": {"path": "/run/solver.sock"}}]}}, ROUTE],
        rules=[[backend_ref()]],
        routed=True,
    ),
    Case(
        "no-weight-stays-unset",
        [CH, SVC, CLOUD, BACKEND, with_refs([service_ref(weight=None, namespace=None)])],
        rules=[[backend_ref(weight=None)]],
        routed=True,
    ),
    Case(
        "weight-zero-kept",
        [CH, SVC, CLOUD, BACKEND, with_refs([service_ref(weight=0)])],
        rules=[[backend_ref(weight=0)]],
        routed=True,
    ),
    Case(
        "backend-ref-in-own-namespace-is-fine",
        [CH, SVC, CLOUD, BACKEND, with_refs([{**backend_ref(), "namespace": o.NS}])],
        routed=True,
    ),
    Case(
        "only-solver-refs-rewritten",
        [
            CH,
            SVC,
            APP,
            CLOUD,
            BACKEND,
            o.platform_backend(APP),
            with_refs([service_ref()], [service_ref("my-app", port=443)]),
        ],
        rules=[[backend_ref()], [service_ref("my-app", port=443)]],
        routed=True,
    ),
    Case(
        "two-solver-refs-one-waiting",
        [
            CH,
            SVC,
            o.solver_service(CH, name="cm-acme-http-solver-b"),
            CLOUD,
            BACKEND,
            with_refs([service_ref(), service_ref("cm-acme-http-solver-b")]),
        ],
        rules=[[backend_ref(), service_ref("cm-acme-http-solver-b")]],
    ),
    Case(
        "override-cloud-in-public-project",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "cloud"}), PUBLIC, BACKEND, ROUTE],
        rules=[[backend_ref()]],
        routed=True,
    ),
    Case(
        "override-public-in-cloud-project",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "public"}), CLOUD, BACKEND, ROUTE],
        skipped="public-network",
    ),
    Case(
        "invalid-network-annotation-left",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "x"}), CLOUD, BACKEND, ROUTE],
        skipped="invalid-network",
    ),
    Case(
        "project-by-convention",
        [CH, SVC, o.project(status_namespace=None), BACKEND, ROUTE],
        rules=[[backend_ref()]],
        routed=True,
    ),
    Case("unknown-project", [CH, SVC, BACKEND, ROUTE], skipped="unknown-project"),
    # references that are not this Challenge's solver
    Case(
        "ref-to-plain-service",
        [CH, APP, CLOUD, o.platform_backend(APP), with_refs([service_ref("my-app", port=443)])],
        skipped="no-solver-refs",
    ),
    Case(
        "ref-to-other-challenges-solver",
        [
            CH,
            OTHER_CH,
            OTHER_SVC,
            CLOUD,
            o.managed_backend(OTHER_SVC),
            with_refs([service_ref(OTHER_SVC["metadata"]["name"])]),
        ],
        skipped="no-solver-refs",
    ),
    Case("ref-to-missing-service", [CH, CLOUD, BACKEND, ROUTE], skipped="no-solver-refs"),
    Case("ref-to-deleting-service", [CH, o.deleting(SVC), CLOUD, BACKEND, ROUTE], skipped="no-solver-refs"),
    Case("backend-being-deleted", [CH, SVC, CLOUD, o.deleting(BACKEND), ROUTE], skipped="waiting-for-backend"),
    Case("routed-backend-gone", [CH, SVC, CLOUD, o.backend_route(ROUTE, BACKEND_NAME)], skipped="waiting-for-backend"),
    # bad input
    Case(
        "cross-namespace-backend-ref",
        [CH, SVC, CLOUD, BACKEND, with_refs([service_ref()], [service_ref("api", namespace="kube-system")])],
        refusal="CrossNamespaceBackendRef",
    ),
    Case(
        "no-owner",
        [CH, SVC, CLOUD, BACKEND, {**ROUTE, "metadata": {**ROUTE["metadata"], "ownerReferences": []}}],
        refusal="NoChallengeOwner",
    ),
    Case("challenge-missing", [SVC, CLOUD, BACKEND, ROUTE], refusal="ChallengeNotFound"),
    Case(
        "owner-not-a-challenge",
        [CH, SVC, CLOUD, BACKEND, {**ROUTE, "metadata": {**ROUTE["metadata"], "ownerReferences": [o.owner_ref(APP)]}}],
        refusal="NoChallengeOwner",
    ),
    Case(
        "not-a-solver-route",
        [CH, SVC, CLOUD, BACKEND, {**ROUTE, "metadata": {**ROUTE["metadata"], "labels": {}}}],
        skipped="not-a-solver",
    ),
    Case("being-deleted", [CH, SVC, CLOUD, BACKEND, o.deleting(ROUTE)], skipped="being-deleted"),
    Case("missing-route", [CH, SVC, CLOUD, BACKEND]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reconcile_route(case: Case) -> None:
    world = o.cache_of(case.world, POLICY)
    decision = reconcile_route(case.key, world, POLICY)
    assert decision.skipped == case.skipped
    assert [r.reason for r in decision.refusals] == ([case.refusal] if case.refusal else [])
    for r in decision.refusals:
        # a bad route is refused on the route; a Backend that is not ours, on the solver Service
        on = (
            (Kind.SERVICE, o.NS, SVC["metadata"]["name"])
            if r.reason == "UntrustedBackend"
            else (Kind.HTTPROUTE, *case.key)
        )
        assert (r.kind, r.namespace, r.name) == on
    assert (decision.routed is not None) is case.routed
    if case.rules is None:
        assert decision.writes == ()
        return
    (write,) = decision.writes
    assert isinstance(write, Patch)
    assert (write.kind, write.namespace, write.name, write.resource_version) == (Kind.HTTPROUTE, *case.key, "1")
    route = next(x for x in case.world if x["kind"] == "HTTPRoute")
    expected_rules = [
        {**rule, "backendRefs": refs} for rule, refs in zip(route["spec"]["rules"], case.rules, strict=True)
    ]
    assert write.body == {"metadata": {"resourceVersion": "1"}, "spec": {"rules": expected_rules}}


WRITING = [c for c in CASES if c.rules is not None]


@pytest.mark.parametrize("case", WRITING, ids=[c.id for c in WRITING])
def test_patch_applies_and_second_run_writes_nothing(case: Case) -> None:
    api = FakeAPI(case.world)
    api.apply_all(reconcile_route(case.key, o.cache_of(case.world, POLICY), POLICY).writes)
    route = api.get("HTTPRoute", *case.key)
    assert route is not None
    assert route["spec"]["parentRefs"] == ROUTE["spec"]["parentRefs"]
    assert route["spec"]["hostnames"] == ROUTE["spec"]["hostnames"]
    assert route["spec"]["rules"][0]["matches"] == ROUTE["spec"]["rules"][0]["matches"]
    again = reconcile_route(case.key, o.cache_of(api.objects.values(), POLICY), POLICY)
    assert again.writes == ()
    assert (again.routed is not None) is case.routed


def test_cert_manager_revert_is_rewritten_again() -> None:
    """cert-manager restores its route before each self-check; the next reconcile rewrites it again."""
    api = FakeAPI([CH, SVC, CLOUD, BACKEND, ROUTE])
    for _ in range(3):
        decision = reconcile_route(KEY, o.cache_of(api.objects.values(), POLICY), POLICY)
        api.apply_all(decision.writes)
        assert api.objects[("HTTPRoute", *KEY)]["spec"]["rules"][0]["backendRefs"] == [backend_ref()]
        reverted = copy.deepcopy(api.objects[("HTTPRoute", *KEY)])
        reverted["spec"] = copy.deepcopy(ROUTE["spec"])
        reverted["metadata"]["resourceVersion"] = str(int(reverted["metadata"]["resourceVersion"]) + 1)
        api.objects[("HTTPRoute", *KEY)] = reverted
