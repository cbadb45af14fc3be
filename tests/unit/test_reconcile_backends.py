"""`<service>-backend`: created, corrected and removed for Services that ask; never someone else's."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.model import JSON, Key
from reconciler.names import backend_name, service_of_backend
from reconciler.policy import BackendMode, Policy
from reconciler.reconcile.backends import endpoint_address, parse_route_port, reconcile_backend
from reconciler.reconcile.intents import Create, Delete, Kind, Patch
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

CH = o.challenge()
SVC0 = o.solver_service(CH)
NAME = SVC0["metadata"]["name"]
KEY: Key = (o.NS, NAME)
ADDR = "100.65.0.102"
SVC = o.patched(SVC0, [{"ip": ADDR}])
CLOUD = o.project()
PUBLIC = o.project(network="public")
MANAGED = o.managed_backend(SVC)
ACME = Policy(backend_mode=BackendMode.ACME)
NONE = Policy(backend_mode=BackendMode.NONE)
APP = o.plain_service(
    type_="LoadBalancer",
    annotations={o.BACKEND_ANNOTATION: "true"},
    ports=[443, 80],
    ingress=[{"ip": "100.65.0.50"}],
)
APP_KEY: Key = (o.NS, "my-app")


def annotated(svc: JSON, **annotations: str) -> JSON:
    out = copy.deepcopy(svc)
    out["metadata"]["annotations"].update(annotations)
    return out


def edited(obj: JSON, path: str, value: Any) -> JSON:
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = out
    for part in parents:
        target = target[part]
    target[last] = value
    return out


def recreated(svc: JSON) -> JSON:
    """The same Service name with a new uid (deleted and created again)."""
    return edited(svc, "metadata.uid", "uid-recreated")


@dataclass
class Case:
    id: str
    world: list[JSON]
    create: tuple[str, int] | None = None  # (address, port) of the Backend created
    patch: JSON | None = None
    delete: bool = False
    refusal: str | None = None
    skipped: str | None = None
    policy: Policy = field(default_factory=Policy)
    key: Key = KEY


CASES = [
    # creation
    Case("solver-with-address", [CH, SVC, CLOUD], create=(ADDR, 8089)),
    Case("first-ingress-wins", [CH, o.patched(SVC0, [{"ip": ADDR}, {"ip": "100.65.0.9"}]), CLOUD], create=(ADDR, 8089)),
    Case("ipv6-address", [CH, o.patched(SVC0, [{"ip": "fd00:65::2"}]), CLOUD], create=("fd00:65:0:0:0:0:0:2", 8089)),
    Case(
        "route-port-annotation", [CH, annotated(SVC, **{o.ROUTE_PORT_ANNOTATION: "18089"}), CLOUD], create=(ADDR, 18089)
    ),
    Case(
        "route-port-need-not-be-a-service-port",
        [CH, annotated(SVC, **{o.ROUTE_PORT_ANNOTATION: "1"}), CLOUD],
        create=(ADDR, 1),
    ),
    Case(
        "empty-route-port-means-first-port",
        [CH, annotated(SVC, **{o.ROUTE_PORT_ANNOTATION: ""}), CLOUD],
        create=(ADDR, 8089),
    ),
    Case("mode-all-any-service", [APP, CLOUD], create=("100.65.0.50", 443), key=APP_KEY),
    Case("mode-acme-solver", [CH, SVC, CLOUD], create=(ADDR, 8089), policy=ACME),
    Case(
        "override-cloud-in-public-project",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "cloud"}), PUBLIC],
        create=(ADDR, 8089),
    ),
    # waiting and bad input: no Backend write at all
    Case("no-address-yet", [CH, o.patched(SVC0), CLOUD], skipped="waiting-for-address"),
    Case("missing-status", [CH, edited(o.patched(SVC0), "status", {}), CLOUD], skipped="waiting-for-address"),
    Case(
        "hostname-instead-of-ip", [CH, o.patched(SVC0, [{"hostname": "lb.example.com"}]), CLOUD], refusal="NonIPAddress"
    ),
    Case("ipv6-zone", [CH, o.patched(SVC0, [{"ip": "fe80::1%eth0"}]), CLOUD], refusal="NonIPAddress"),
    Case("ipv4-leading-zero", [CH, o.patched(SVC0, [{"ip": "100.065.0.1"}]), CLOUD], refusal="NonIPAddress"),
    *[
        Case(
            f"route-port-{v!r}", [CH, annotated(SVC, **{o.ROUTE_PORT_ANNOTATION: v}), CLOUD], refusal="InvalidRoutePort"
        )
        for v in ["http", "0", "65536", "-80", " 80", "8o89", "80.0", "٨٠"]
    ],
    Case(
        "invalid-route-port-leaves-existing-backend",
        [CH, annotated(SVC, **{o.ROUTE_PORT_ANNOTATION: "http"}), CLOUD, o.managed_backend(SVC, port=1)],
        refusal="InvalidRoutePort",
    ),
    Case("no-ports", [CH, edited(SVC, "spec.ports", []), CLOUD], skipped="no-service-port"),
    Case("public-project", [CH, SVC, PUBLIC], skipped="public-network"),
    Case("override-public", [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "public"}), CLOUD], skipped="public-network"),
    Case("unknown-project", [CH, SVC], skipped="unknown-project"),
    Case(
        "invalid-network-annotation",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "x"}), CLOUD],
        refusal="InvalidNetworkType",
    ),
    Case(
        "conflicting-projects",
        [CH, SVC, CLOUD, o.project(name="d2", org_namespace="x", network="public")],
        refusal="ConflictingProjects",
    ),
    # not asking
    Case("node-port-solver", [CH, SVC0, CLOUD], skipped="backend-not-requested"),
    Case(
        "annotation-false",
        [CH, annotated(SVC, **{o.BACKEND_ANNOTATION: "false"}), CLOUD],
        skipped="backend-not-requested",
    ),
    Case("service-gone", [CH, CLOUD], skipped="service-gone"),
    Case("service-being-deleted", [CH, o.deleting(SVC), CLOUD], skipped="service-being-deleted"),
    Case("mode-none", [CH, SVC, CLOUD], skipped="backend-mode-none", policy=NONE),
    Case("mode-acme-plain-service", [APP, CLOUD], skipped="not-a-solver", policy=ACME, key=APP_KEY),
    Case(
        "mode-acme-look-alike",
        [CH, edited(SVC, "metadata.ownerReferences", []), CLOUD],
        skipped="not-a-solver",
        policy=ACME,
    ),
    Case("mode-acme-challenge-gone", [SVC, CLOUD], skipped="not-a-solver", policy=ACME),
    # existing managed Backend
    Case("up-to-date", [CH, SVC, CLOUD, MANAGED]),
    Case(
        "up-to-date-ipv6-spelled-differently",
        [CH, o.patched(SVC0, [{"ip": "fd00:65::2"}]), CLOUD, o.managed_backend(SVC, "fd00:65:0::2")],
    ),
    Case(
        "address-changed",
        [CH, SVC, CLOUD, o.managed_backend(SVC, address="100.65.0.7")],
        patch={"metadata": {"resourceVersion": "1"}, "spec": {"endpoints": o.backend_endpoints(ADDR, 8089)}},
    ),
    Case(
        "port-changed",
        [CH, annotated(SVC, **{o.ROUTE_PORT_ANNOTATION: "8090"}), CLOUD, MANAGED],
        patch={"metadata": {"resourceVersion": "1"}, "spec": {"endpoints": o.backend_endpoints(ADDR, 8090)}},
    ),
    Case(
        "extra-endpoint-removed",
        [CH, SVC, CLOUD, edited(MANAGED, "spec.endpoints", o.backend_endpoints(ADDR, 8089) * 2)],
        patch={"metadata": {"resourceVersion": "1"}, "spec": {"endpoints": o.backend_endpoints(ADDR, 8089)}},
    ),
    Case(
        "stale-owner-uid",
        [CH, recreated(SVC), CLOUD, MANAGED],
        patch={"metadata": {"resourceVersion": "1", "ownerReferences": [{**o.owner_ref(recreated(SVC))}]}},
    ),
    Case("stops-asking", [CH, SVC0, CLOUD, MANAGED], delete=True),
    Case("service-gone-deletes", [CH, CLOUD, MANAGED], delete=True),
    Case("service-being-deleted-deletes", [CH, o.deleting(SVC), CLOUD, MANAGED], delete=True),
    Case("mode-none-deletes-ours", [CH, SVC, CLOUD, MANAGED], delete=True, policy=NONE),
    Case("service-gone-public-project", [CH, PUBLIC, MANAGED], skipped="public-network"),
    Case("service-gone-unknown-project", [CH, MANAGED], skipped="unknown-project"),
    Case("stops-asking-unknown-project", [CH, SVC0, MANAGED], skipped="unknown-project"),
    Case(
        "backend-being-deleted",
        [CH, SVC, CLOUD, o.deleting(o.managed_backend(SVC, "100.65.0.7"))],
        skipped="backend-being-deleted",
    ),
    # never someone else's Backend
    Case("platform-backend", [CH, SVC, CLOUD, o.platform_backend(SVC, "100.65.0.7")], skipped="backend-not-managed"),
    Case("platform-backend-service-gone", [CH, CLOUD, o.platform_backend(SVC)], skipped="backend-not-managed"),
    Case(
        "our-label-other-controller",
        [CH, SVC, CLOUD, edited(MANAGED, "metadata.ownerReferences", [o.owner_ref(APP)])],
        skipped="backend-not-managed",
    ),
    Case(
        "our-label-no-controller",
        [CH, SVC0, CLOUD, edited(MANAGED, "metadata.ownerReferences", [o.owner_ref(SVC, controller=False)])],
        skipped="backend-not-managed",
    ),
    Case(
        "tenant-backend-without-owner",
        [CH, SVC0, CLOUD, edited(MANAGED, "metadata.ownerReferences", [])],
        skipped="backend-not-managed",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reconcile_backend(case: Case) -> None:
    policy = case.policy
    decision = reconcile_backend(case.key, o.cache_of(case.world, policy), policy)
    assert decision.skipped == case.skipped
    assert [r.reason for r in decision.refusals] == ([case.refusal] if case.refusal else [])
    for r in decision.refusals:
        assert (r.kind, r.namespace, r.name) == (Kind.SERVICE, *case.key)
    name = backend_name(case.key[1])
    if case.create:
        (write,) = decision.writes
        assert isinstance(write, Create)
        svc = next(x for x in case.world if x["kind"] == "Service")
        address, port = case.create
        assert write.kind is Kind.BACKEND
        assert write.namespace == o.NS
        assert write.body == {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": {
                "name": name,
                "namespace": o.NS,
                "labels": {o.MANAGED_BY: o.MANAGER},
                "ownerReferences": [o.owner_ref(svc)],
            },
            "spec": {"endpoints": o.backend_endpoints(address, port)},
        }
    elif case.patch:
        (write,) = decision.writes
        assert isinstance(write, Patch)
        assert (write.kind, write.namespace, write.name, write.resource_version) == (Kind.BACKEND, o.NS, name, "1")
        assert write.body == case.patch
    elif case.delete:
        (write,) = decision.writes
        assert isinstance(write, Delete)
        backend = next(x for x in case.world if x["kind"] == "Backend")
        assert (write.kind, write.namespace, write.name) == (Kind.BACKEND, o.NS, name)
        assert (write.uid, write.resource_version) == (backend["metadata"]["uid"], "1")
    else:
        assert decision.writes == ()


WRITING = [c for c in CASES if c.create or c.patch or c.delete]


@pytest.mark.parametrize("case", WRITING, ids=[c.id for c in WRITING])
def test_writes_apply_and_second_run_writes_nothing(case: Case) -> None:
    api = FakeAPI(case.world)
    api.apply_all(reconcile_backend(case.key, o.cache_of(case.world, case.policy), case.policy).writes)
    again = reconcile_backend(case.key, o.cache_of(api.objects.values(), case.policy), case.policy)
    assert again.writes == ()
    assert (api.get("Backend", o.NS, backend_name(case.key[1])) is None) == case.delete


def test_backend_names_and_their_inverse_agree() -> None:
    assert backend_name("cm-acme-http-solver-x7k2p") == "cm-acme-http-solver-x7k2p-backend"
    assert service_of_backend(backend_name("cm-acme-http-solver-x7k2p")) == "cm-acme-http-solver-x7k2p"
    assert service_of_backend("my-app") is None
    assert service_of_backend("-backend") is None, "no Service has an empty name"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        ("8089", 8089),
        ("65535", 65535),
        ("08089", 8089),
        ("0", None),
        ("65536", None),
        ("", None),
        ("9" * 200_000, None),  # int() of it raises ValueError: every reconcile of the Service would fail
        ("0" * 10 + "8089", 8089),
    ],
)
def test_parse_route_port(value: str, expected: int | None) -> None:
    assert parse_route_port(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100.65.0.102", "100.65.0.102"),
        ("2001:db8::1:2:3", "2001:db8:0:0:0:1:2:3"),  # the CRD's pattern rejects the compressed spelling
        ("::", "0:0:0:0:0:0:0:0"),
        ("::ffff:100.65.0.1", "0:0:0:0:0:ffff:6441:1"),
        ("FD00::A", "fd00:0:0:0:0:0:0:a"),
        ("lb.example.com", None),
        ("100.65.0.256", None),
        ("fe80::1%eth0", None),
    ],
)
def test_endpoint_address(text: str, expected: str | None) -> None:
    assert endpoint_address(text) == expected
