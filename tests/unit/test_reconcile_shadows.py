"""Route mode `shadow`: a companion HTTPRoute `<service>-acme` per cloud solver, preferred by the gateway.

cert-manager reverts its own route before every self-check (see the notes), so the companion carries the
same parentRefs and hostname, an Exact challenge path plus `method: GET` (one header match more, so Envoy
Gateway orders it first), and the solver's Backend. cert-manager's route is never written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.model import JSON, Key
from reconciler.policy import BackendMode, Policy, RouteMode
from reconciler.reconcile.intents import Create, Decision, Delete, Kind, Patch
from reconciler.reconcile.shadows import reconcile_shadow
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

CH = o.challenge()
TOKEN = CH["spec"]["token"]
SVC = o.patched(o.solver_service(CH), [{"ip": "100.65.0.102"}])
SVC_NAME = SVC["metadata"]["name"]
KEY: Key = (o.NS, SVC_NAME)
SHADOW = f"{SVC_NAME}-acme"
BACKEND_NAME = f"{SVC_NAME}-backend"
BACKEND = o.managed_backend(SVC)
ROUTE = o.solver_route(CH)
ROUTE_NAME = ROUTE["metadata"]["name"]
CLOUD = o.project()
PUBLIC = o.project(network="public")
PATCH_MODE = Policy(route_mode=RouteMode.PATCH)
SHADOW_UID = "uid-shadow-1"
SHADOW_RV = "7"
OTHER_PARENTS = [{"name": "eg-internal", "namespace": "envoy-gateway-system", "sectionName": "http"}]


def companion(
    port: int | None = 8089,
    parent_refs: list[JSON] | None = None,
    hostnames: list[str] | None = None,
    token: str = TOKEN,
    svc: JSON = SVC,
) -> JSON:
    """The companion route exactly as it should be created, written out from the brief, not the module."""
    ref: JSON = {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": BACKEND_NAME, "weight": 1}
    if port is not None:
        ref["port"] = port
    spec: JSON = {
        "parentRefs": copy.deepcopy(parent_refs if parent_refs is not None else ROUTE["spec"]["parentRefs"]),
        "rules": [
            {
                "matches": [
                    {"path": {"type": "Exact", "value": f"/.well-known/acme-challenge/{token}"}, "method": "GET"}
                ],
                "backendRefs": [ref],
            }
        ],
    }
    names = [CH["spec"]["dnsName"]] if hostnames is None else hostnames
    if names:
        spec["hostnames"] = names
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": SHADOW,
            "namespace": o.NS,
            "labels": {o.MANAGED_BY: o.MANAGER},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": svc["metadata"]["name"],
                    "uid": svc["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def stored(body: JSON) -> JSON:
    """`body` as the API server holds it after the create."""
    out = copy.deepcopy(body)
    out["metadata"].update(uid=SHADOW_UID, resourceVersion=SHADOW_RV, creationTimestamp=o.TIMESTAMP)
    return out


def edit(obj: JSON, **changes: Any) -> JSON:
    """A copy with `path.to.key=value` style changes (dots become `__`)."""
    out = copy.deepcopy(obj)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = out
        for part in path:
            node = node[part]
        node[last] = value
    return out


def backend_on(port: int) -> JSON:
    return o.managed_backend(SVC, port=port)


def annotated(svc: JSON, **annotations: str) -> JSON:
    out = copy.deepcopy(svc)
    out["metadata"]["annotations"].update(annotations)
    return out


def owned_by(obj: JSON, *owners: JSON) -> JSON:
    return edit(obj, metadata__ownerReferences=list(owners))


EXISTING = stored(companion())
READY = [CH, SVC, CLOUD, BACKEND, ROUTE]
IP_CH = o.challenge(name="ip-1-0", dns_name="203.0.113.7", token="tok-ip")
IP_SVC = o.patched(o.solver_service(IP_CH), [{"ip": "100.65.0.102"}])
IP_ROUTE = o.solver_route(IP_CH)
del IP_ROUTE["spec"]["hostnames"]  # cert-manager omits hostnames for an IP address
OTHER_CH = o.challenge(name="other-1-0", dns_name="other.example.com", token="tok-other")
OTHER_SVC = o.patched(o.solver_service(OTHER_CH, name="cm-acme-http-solver-other"), [{"ip": "100.65.0.103"}])
FOREIGN_REF = {"group": "", "kind": "Service", "name": "api", "namespace": "kube-system", "port": 443, "weight": 1}
ROUTE_CROSS_NS = edit(
    ROUTE,
    spec__rules=[
        {**ROUTE["spec"]["rules"][0], "backendRefs": [*ROUTE["spec"]["rules"][0]["backendRefs"], FOREIGN_REF]}
    ],
)
ROUTE_WRONG_HOST = edit(ROUTE, spec__hostnames=["evil.example.net"])


@dataclass
class Case:
    id: str
    world: list[JSON]
    create: JSON | None = None
    patch: JSON | None = None  # the merge patch body
    delete: bool = False
    refusal: str | None = None
    skipped: str | None = None
    policy: Policy = field(default_factory=Policy)
    key: Key = KEY


def rules(port: int | None) -> list[JSON]:
    rules_: list[JSON] = companion(port)["spec"]["rules"]
    return rules_


CASES = [
    # creation
    Case("creates-companion", READY, create=companion()),
    Case("port-follows-backend", [CH, SVC, CLOUD, backend_on(8090), ROUTE], create=companion(8090)),
    Case(
        "platform-backend-not-routed-to",  # backend mode all: only the Backend we made is routed to
        [CH, SVC, CLOUD, o.platform_backend(SVC, port=8091), ROUTE],
        refusal="UntrustedBackend",
        skipped="untrusted-backend",
    ),
    Case(
        "platform-backend-used-in-mode-none",  # the platform's, pointing at this Service's address and port
        [CH, SVC, CLOUD, o.platform_backend(SVC, port=8089), ROUTE],
        create=companion(8089),
        policy=Policy(backend_mode=BackendMode.NONE),
    ),
    Case(
        "platform-backend-elsewhere-in-mode-none",  # the platform's Backend pointing somewhere else
        [CH, SVC, CLOUD, o.platform_backend(SVC, address="100.65.0.7", port=8089), ROUTE],
        refusal="UntrustedBackend",
        skipped="untrusted-backend",
        policy=Policy(backend_mode=BackendMode.NONE),
    ),
    Case(
        "tenant-backend-without-label",  # a tenant's pre-made `<svc>-backend` owned by the solver Service
        [CH, SVC, CLOUD, edit(BACKEND, metadata__labels={}), ROUTE],
        refusal="UntrustedBackend",
        skipped="untrusted-backend",
    ),
    Case(
        "backend-of-a-former-service-of-that-name",  # ours by label, but for another Service's uid
        [CH, SVC, CLOUD, owned_by(BACKEND, {**o.owner_ref(SVC), "uid": "uid-of-a-deleted-service"}), ROUTE],
        refusal="UntrustedBackend",
        skipped="untrusted-backend",
    ),
    Case(
        "backend-without-port",
        [CH, SVC, CLOUD, edit(BACKEND, spec={"endpoints": [{"unix": {"path": "/run/solver.sock"}}]}), ROUTE],
        create=companion(None),
    ),
    Case(
        "parent-refs-copied",
        [CH, SVC, CLOUD, BACKEND, edit(ROUTE, spec__parentRefs=OTHER_PARENTS)],
        create=companion(parent_refs=OTHER_PARENTS),
    ),
    Case(
        "route-left-on-backend-by-patch-mode",
        [CH, SVC, CLOUD, BACKEND, o.backend_route(ROUTE, BACKEND_NAME)],
        create=companion(),
    ),
    Case(
        "ip-address-dns-name-no-hostnames",
        [IP_CH, IP_SVC, CLOUD, o.managed_backend(IP_SVC), IP_ROUTE],
        create=companion(hostnames=[], token="tok-ip", svc=IP_SVC),
    ),
    Case(
        "override-cloud-in-public-project",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "cloud"}), PUBLIC, BACKEND, ROUTE],
        create=companion(),
    ),
    # already right, or out of date
    Case("already-right", [*READY, EXISTING]),
    Case(
        "backend-port-changed",
        [CH, SVC, CLOUD, backend_on(8090), ROUTE, EXISTING],
        patch={"metadata": {"resourceVersion": SHADOW_RV}, "spec": {"rules": rules(8090)}},
    ),
    Case(
        "parent-refs-changed",
        [CH, SVC, CLOUD, BACKEND, edit(ROUTE, spec__parentRefs=OTHER_PARENTS), EXISTING],
        patch={"metadata": {"resourceVersion": SHADOW_RV}, "spec": {"parentRefs": OTHER_PARENTS}},
    ),
    Case(
        "hostnames-edited",
        [*READY, edit(EXISTING, spec__hostnames=["x.example.com"])],
        patch={"metadata": {"resourceVersion": SHADOW_RV}, "spec": {"hostnames": [CH["spec"]["dnsName"]]}},
    ),
    Case(
        "stray-hostnames-removed-for-ip",
        [
            IP_CH,
            IP_SVC,
            CLOUD,
            o.managed_backend(IP_SVC),
            IP_ROUTE,
            stored(companion(hostnames=["203.0.113.7"], token="tok-ip", svc=IP_SVC)),
        ],
        patch={"metadata": {"resourceVersion": SHADOW_RV}, "spec": {"hostnames": None}},
        key=(o.NS, IP_SVC["metadata"]["name"]),
    ),
    Case(
        "owner-uid-stale",
        [
            *READY,
            edit(EXISTING, metadata__ownerReferences=[{**EXISTING["metadata"]["ownerReferences"][0], "uid": "old"}]),
        ],
        patch={"metadata": {"resourceVersion": SHADOW_RV, "ownerReferences": EXISTING["metadata"]["ownerReferences"]}},
    ),
    Case("existing-being-deleted", [*READY, o.deleting(EXISTING)], skipped="being-deleted"),
    # no longer wanted: deleted with preconditions
    Case("service-gone", [CH, CLOUD, BACKEND, ROUTE, EXISTING], delete=True),
    Case("service-being-deleted", [CH, o.deleting(SVC), CLOUD, BACKEND, ROUTE, EXISTING], delete=True),
    Case("project-now-public", [CH, SVC, PUBLIC, BACKEND, ROUTE, EXISTING], delete=True),
    Case(
        "service-override-public",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "public"}), CLOUD, BACKEND, ROUTE, EXISTING],
        delete=True,
    ),
    # no Project owns the namespace (any more): nothing is written there, not even a clean-up
    Case("project-gone", [CH, SVC, BACKEND, ROUTE, EXISTING], skipped="unknown-project"),
    Case("backend-gone", [CH, SVC, CLOUD, ROUTE, EXISTING], delete=True),
    Case("backend-being-deleted", [CH, SVC, CLOUD, o.deleting(BACKEND), ROUTE, EXISTING], delete=True),
    Case(
        "backend-without-endpoints",
        [CH, SVC, CLOUD, edit(BACKEND, spec={"endpoints": []}), ROUTE, EXISTING],
        delete=True,
    ),
    Case("route-mode-patch", [*READY, EXISTING], delete=True, policy=PATCH_MODE),
    Case("cert-managers-route-gone", [CH, SVC, CLOUD, BACKEND, EXISTING], delete=True),
    Case("challenge-gone", [SVC, CLOUD, BACKEND, ROUTE, EXISTING], delete=True),
    Case(
        "route-hostname-now-wrong",
        [CH, SVC, CLOUD, BACKEND, ROUTE_WRONG_HOST, EXISTING],
        delete=True,
        refusal="HostnameMismatch",
    ),
    Case(
        "gone-and-being-deleted-already",
        [CH, CLOUD, BACKEND, ROUTE, o.deleting(EXISTING)],
        skipped="service-gone",
    ),
    # a route of that name that is not ours is never touched
    Case(
        "name-taken-other-owner",
        [*READY, owned_by(EXISTING, o.owner_ref(OTHER_SVC))],
        skipped="shadow-name-taken",
    ),
    Case("name-taken-no-owner", [*READY, owned_by(EXISTING)], skipped="shadow-name-taken"),
    Case(
        "name-taken-owned-by-challenge",
        [*READY, owned_by(EXISTING, o.owner_ref(CH))],
        skipped="shadow-name-taken",
    ),
    Case(
        "name-taken-not-controller",
        [*READY, owned_by(EXISTING, o.owner_ref(SVC, controller=False))],
        skipped="shadow-name-taken",
    ),
    Case(
        "name-taken-other-manager",
        [*READY, edit(EXISTING, metadata__labels={o.MANAGED_BY: "helm"})],
        skipped="shadow-name-taken",
    ),
    Case(
        "name-taken-and-service-gone",
        [CH, CLOUD, BACKEND, ROUTE, owned_by(EXISTING, o.owner_ref(OTHER_SVC))],
        skipped="shadow-name-taken",
    ),
    Case(
        "name-taken-no-label",  # a tenant's own route of that name, without our label
        [*READY, edit(EXISTING, metadata__labels={})],
        skipped="shadow-name-taken",
    ),
    Case(
        "name-taken-solver-labelled",  # a tenant's route of that name carrying the solver labels: seen
        [*READY, edit(EXISTING, metadata__labels=o.solver_labels(CH))],
        skipped="shadow-name-taken",
    ),
    # nothing to do
    Case("public-project", [CH, SVC, PUBLIC, BACKEND, ROUTE], skipped="not-cloud"),
    Case("unknown-project", [CH, SVC, BACKEND, ROUTE], skipped="unknown-project"),
    Case(
        "override-public-in-cloud-project",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "public"}), CLOUD, BACKEND, ROUTE],
        skipped="not-cloud",
    ),
    Case("waiting-for-backend", [CH, SVC, CLOUD, ROUTE], skipped="waiting-for-backend"),
    Case("waiting-for-route", [CH, SVC, CLOUD, BACKEND], skipped="waiting-for-route"),
    Case("route-mode-patch-nothing-to-delete", READY, skipped="route-mode-patch", policy=PATCH_MODE),
    Case("service-missing", [CH, CLOUD, BACKEND, ROUTE], skipped="service-gone"),
    # look-alike Services
    Case(
        "forged-labels-plain-service",
        [
            CH,
            o.plain_service(labels=o.solver_labels(CH), type_="LoadBalancer"),
            CLOUD,
            o.managed_backend(o.plain_service()),
            ROUTE,
        ],
        skipped="not-a-solver",
        key=(o.NS, "my-app"),
    ),
    Case("challenge-missing", [SVC, CLOUD, BACKEND, ROUTE], skipped="not-a-solver"),
    Case(
        "service-labels-of-another-challenge",
        [CH, OTHER_CH, owned_by(o.patched(o.solver_service(OTHER_CH)), o.owner_ref(CH)), CLOUD, BACKEND, ROUTE],
        skipped="not-a-solver",
    ),
    Case(
        "plain-service",
        [CH, o.plain_service(type_="LoadBalancer"), CLOUD],
        skipped="not-a-solver",
        key=(o.NS, "my-app"),
    ),
    # look-alike routes: never a source of a companion
    Case("route-without-owner", [CH, SVC, CLOUD, BACKEND, owned_by(ROUTE)], skipped="waiting-for-route"),
    Case(
        "route-of-another-challenge",
        [CH, OTHER_CH, SVC, CLOUD, BACKEND, owned_by(o.solver_route(OTHER_CH), o.owner_ref(OTHER_CH))],
        skipped="waiting-for-route",
    ),
    Case(
        "route-labels-of-another-challenge",
        [CH, OTHER_CH, SVC, CLOUD, BACKEND, owned_by(o.solver_route(OTHER_CH), o.owner_ref(CH))],
        skipped="waiting-for-route",
    ),
    Case(
        "route-to-another-service",
        [CH, SVC, CLOUD, BACKEND, o.solver_route(CH, service_name="cm-acme-http-solver-other")],
        skipped="waiting-for-route",
    ),
    Case("route-being-deleted", [CH, SVC, CLOUD, BACKEND, o.deleting(ROUTE)], skipped="waiting-for-route"),
    Case(
        "route-in-another-namespace",
        [CH, SVC, CLOUD, BACKEND, edit(ROUTE, metadata__namespace="shalb-other")],
        skipped="waiting-for-route",
    ),
    # invalid routes: refused, no companion
    Case(
        "hostname-mismatch",
        [CH, SVC, CLOUD, BACKEND, ROUTE_WRONG_HOST],
        refusal="HostnameMismatch",
        skipped="invalid-route",
    ),
    Case(
        "hostname-missing",
        [CH, SVC, CLOUD, BACKEND, edit(ROUTE, spec__hostnames=[])],
        refusal="HostnameMismatch",
        skipped="invalid-route",
    ),
    Case(
        "extra-hostname",
        [CH, SVC, CLOUD, BACKEND, edit(ROUTE, spec__hostnames=[CH["spec"]["dnsName"], "evil.example.net"])],
        refusal="HostnameMismatch",
        skipped="invalid-route",
    ),
    Case(
        "cross-namespace-backend-ref",
        [CH, SVC, CLOUD, BACKEND, ROUTE_CROSS_NS],
        refusal="CrossNamespaceBackendRef",
        skipped="invalid-route",
    ),
    Case(
        "cross-namespace-backend-ref-existing-deleted",
        [CH, SVC, CLOUD, BACKEND, ROUTE_CROSS_NS, EXISTING],
        refusal="CrossNamespaceBackendRef",
        delete=True,
    ),
]


def route_name_of(world: list[JSON]) -> str:
    """cert-manager's route in `world` (the one refusals are about)."""
    route = next(x for x in world if x["kind"] == "HTTPRoute" and o.MANAGED_BY not in x["metadata"].get("labels", {}))
    return str(route["metadata"]["name"])


def check_never_cert_managers(decision: Decision, world: list[JSON]) -> None:
    """No write ever names a route that is not a companion (cert-manager's, in particular)."""
    foreign = {
        x["metadata"]["name"]
        for x in world
        if x["kind"] == "HTTPRoute" and (x["metadata"].get("labels") or {}).get(o.MANAGED_BY) != o.MANAGER
    }
    for write in decision.writes:
        assert write.kind is Kind.HTTPROUTE
        assert write.name.endswith("-acme")
        assert write.name not in foreign, f"wrote a route that is not ours: {write}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reconcile_shadow(case: Case) -> None:
    decision = reconcile_shadow(case.key, o.cache_of(case.world, case.policy), case.policy)
    check_never_cert_managers(decision, case.world)
    assert decision.skipped == case.skipped
    assert [r.reason for r in decision.refusals] == ([case.refusal] if case.refusal else [])
    for r in decision.refusals:
        # a bad route is refused on the route; a Backend that is not ours, on the solver Service
        on = (
            (Kind.SERVICE, *case.key)
            if r.reason == "UntrustedBackend"
            else (Kind.HTTPROUTE, o.NS, route_name_of(case.world))
        )
        assert (r.kind, r.namespace, r.name) == on
    name = f"{case.key[1]}-acme"
    if case.create is not None:
        (write,) = decision.writes
        assert isinstance(write, Create)
        assert (write.kind, write.namespace, write.name) == (Kind.HTTPROUTE, o.NS, name)
        assert write.body == case.create
    elif case.patch is not None:
        (write,) = decision.writes
        assert isinstance(write, Patch)
        assert (write.kind, write.namespace, write.name, write.resource_version) == (
            Kind.HTTPROUTE,
            o.NS,
            name,
            SHADOW_RV,
        )
        assert write.body == case.patch
    elif case.delete:
        (write,) = decision.writes
        assert isinstance(write, Delete)
        assert (write.kind, write.namespace, write.name, write.uid, write.resource_version) == (
            Kind.HTTPROUTE,
            o.NS,
            name,
            SHADOW_UID,
            SHADOW_RV,
        )
    else:
        assert decision.writes == ()


WRITING = [c for c in CASES if c.create or c.patch or c.delete]


@pytest.mark.parametrize("case", WRITING, ids=[c.id for c in WRITING])
def test_write_applies_and_second_run_writes_nothing(case: Case) -> None:
    api = FakeAPI(case.world)
    before = {k: copy.deepcopy(v) for k, v in api.objects.items() if k[0] == "HTTPRoute" and not k[2].endswith("-acme")}
    api.apply_all(reconcile_shadow(case.key, o.cache_of(case.world, case.policy), case.policy).writes)
    name = f"{case.key[1]}-acme"
    if case.delete:
        assert api.get("HTTPRoute", o.NS, name) is None
    else:
        shadow = api.get("HTTPRoute", o.NS, name)
        assert shadow is not None
        if case.create is not None:
            assert {k: shadow[k] for k in ("apiVersion", "kind", "spec")} == {
                k: case.create[k] for k in ("apiVersion", "kind", "spec")
            }
            assert shadow["metadata"]["labels"] == case.create["metadata"]["labels"]
            assert shadow["metadata"]["ownerReferences"] == case.create["metadata"]["ownerReferences"]
    after = {k: v for k, v in api.objects.items() if k[0] == "HTTPRoute" and not k[2].endswith("-acme")}
    assert after == before, "cert-manager's route changed"
    again = reconcile_shadow(case.key, o.cache_of(api.objects.values(), case.policy), case.policy)
    assert again.writes == ()


def test_companion_carries_none_of_the_solver_labels() -> None:
    """cert-manager finds its routes by the solver labels and deletes the extras: the companion must not
    carry them, or cert-manager would delete it (or cert-manager's own route) as a duplicate."""
    (write,) = reconcile_shadow(KEY, o.cache_of(READY), Policy()).writes
    assert isinstance(write, Create)
    assert write.body["metadata"]["labels"] == {o.MANAGED_BY: o.MANAGER}
    assert not {o.SOLVER_LABEL, o.DOMAIN_LABEL, o.TOKEN_LABEL} & set(write.body["metadata"]["labels"])


def test_companion_wins_by_one_more_header_match() -> None:
    """Same hostname and the same Exact path as cert-manager's rule, plus `method: GET` (a header match)."""
    (write,) = reconcile_shadow(KEY, o.cache_of(READY), Policy()).writes
    assert isinstance(write, Create)
    [ours] = write.body["spec"]["rules"]
    [theirs] = ROUTE["spec"]["rules"]
    assert write.body["spec"]["hostnames"] == ROUTE["spec"]["hostnames"]
    assert [m["path"] for m in ours["matches"]] == [m["path"] for m in theirs["matches"]]
    assert [m.get("method") for m in ours["matches"]] == ["GET"]
    assert all("method" not in m for m in theirs["matches"])


def test_allocated_port_moves_the_companion() -> None:
    """The Backend follows the solver's EIP port (8089 -> 8090); the companion follows the Backend."""
    api = FakeAPI([*READY])
    api.apply_all(reconcile_shadow(KEY, o.cache_of(api.objects.values()), Policy()).writes)
    api.update(backend_on(8090))
    decision = reconcile_shadow(KEY, o.cache_of(api.objects.values()), Policy())
    (write,) = decision.writes
    assert isinstance(write, Patch)
    api.apply(write)
    shadow = api.get("HTTPRoute", o.NS, SHADOW)
    assert shadow is not None
    assert shadow["spec"]["rules"][0]["backendRefs"] == [
        {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": BACKEND_NAME, "weight": 1, "port": 8090}
    ]
    assert reconcile_shadow(KEY, o.cache_of(api.objects.values()), Policy()).writes == ()


def test_cert_manager_reverting_its_route_does_not_touch_the_companion() -> None:
    """cert-manager's Present() rewrites its route before every self-check; the companion stays."""
    api = FakeAPI([*READY])
    api.apply_all(reconcile_shadow(KEY, o.cache_of(api.objects.values()), Policy()).writes)
    shadow = copy.deepcopy(api.get("HTTPRoute", o.NS, SHADOW))
    for _ in range(3):
        api.update(ROUTE)  # cert-manager's full Update back to what it generates
        assert reconcile_shadow(KEY, o.cache_of(api.objects.values()), Policy()).writes == ()
    assert api.get("HTTPRoute", o.NS, SHADOW) == shadow
