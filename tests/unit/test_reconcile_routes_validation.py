"""What a solver route may ask of us (`validate_route`), and `reconcile_route` in both route modes.

A solver route is believed only when its backendRefs stay in its own namespace and its hostnames are
exactly the Challenge's dnsName (cert-manager omits hostnames when the name is an IP address, see the
notes). In route mode `shadow` cert-manager's route is never written; in mode `patch` an invalid route
is not rewritten.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from reconciler.model import JSON, Challenge, HTTPRoute, Key
from reconciler.policy import Policy, RouteMode
from reconciler.reconcile.intents import Kind, Patch
from reconciler.reconcile.reasons import Refused
from reconciler.reconcile.routes import reconcile_route
from reconciler.reconcile.solver_routes import validate_route
from tests.unit import objects as o

CROSS_NAMESPACE_BACKEND_REF = Refused.CROSS_NAMESPACE_BACKEND_REF
HOSTNAME_MISMATCH = Refused.HOSTNAME_MISMATCH

CH = o.challenge()
DNS = CH["spec"]["dnsName"]
SVC = o.patched(o.solver_service(CH), [{"ip": "100.65.0.102"}])
SVC_NAME = SVC["metadata"]["name"]
BACKEND_NAME = f"{SVC_NAME}-backend"
BACKEND = o.managed_backend(SVC)
ROUTE = o.solver_route(CH)
KEY: Key = (o.NS, ROUTE["metadata"]["name"])
CLOUD = o.project()
SHADOW = Policy()
PATCH = Policy(route_mode=RouteMode.PATCH)
MODES = [SHADOW, PATCH]

IP_CH = o.challenge(name="ip-1-0", dns_name="203.0.113.7", token="tok-ip")
IP6_CH = o.challenge(name="ip6-1-0", dns_name="2001:db8::7", token="tok-ip6")


def with_hostnames(route: JSON, hostnames: list[str] | None) -> JSON:
    out = copy.deepcopy(route)
    if hostnames is None:
        del out["spec"]["hostnames"]
    else:
        out["spec"]["hostnames"] = hostnames
    return out


def with_refs(route: JSON, *refs: JSON) -> JSON:
    out = copy.deepcopy(route)
    out["spec"]["rules"][0]["backendRefs"] = list(refs)
    return out


def svc_ref(name: str = SVC_NAME, namespace: str | None = o.NS) -> JSON:
    ref: JSON = {"group": "", "kind": "Service", "name": name, "port": 8089, "weight": 1}
    if namespace is not None:
        ref["namespace"] = namespace
    return ref


def backend_ref(name: str = BACKEND_NAME, namespace: str | None = None) -> JSON:
    ref: JSON = {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name, "port": 8089, "weight": 1}
    if namespace is not None:
        ref["namespace"] = namespace
    return ref


def ip_route(ch: JSON) -> JSON:
    return with_hostnames(o.solver_route(ch), None)


# -- validate_route ---------------------------------------------------------------------------------


@dataclass
class VCase:
    id: str
    route: JSON
    refusal: str | None = None
    challenge: JSON | None = None
    foreign: str | None = None  # the "ns/name" list the cross-namespace message must name


VCASES = [
    VCase("cert-managers-route", ROUTE),
    VCase("ref-without-namespace", with_refs(ROUTE, svc_ref(namespace=None))),
    VCase("backend-ref-own-namespace", with_refs(ROUTE, backend_ref(namespace=o.NS))),
    VCase("already-on-backend", o.backend_route(ROUTE, BACKEND_NAME)),
    VCase("no-backend-refs", with_refs(ROUTE)),
    VCase("ip-dns-name-without-hostnames", ip_route(IP_CH), challenge=IP_CH),
    VCase("ipv6-dns-name-without-hostnames", ip_route(IP6_CH), challenge=IP6_CH),
    VCase(
        "cross-namespace-service",
        with_refs(ROUTE, svc_ref(), svc_ref("api", "kube-system")),
        CROSS_NAMESPACE_BACKEND_REF,
        foreign="kube-system/api",
    ),
    VCase(
        "cross-namespace-backend",
        with_refs(ROUTE, backend_ref(namespace="shalb-other")),
        CROSS_NAMESPACE_BACKEND_REF,
        foreign=f"shalb-other/{BACKEND_NAME}",
    ),
    VCase(
        "cross-namespace-listed-sorted-once",
        with_refs(ROUTE, svc_ref("z", "b"), svc_ref("y", "a"), svc_ref("z", "b")),
        CROSS_NAMESPACE_BACKEND_REF,
        foreign="a/y, b/z",
    ),
    VCase(
        "cross-namespace-checked-before-hostname",
        with_hostnames(with_refs(ROUTE, svc_ref("api", "kube-system")), ["evil.example.net"]),
        CROSS_NAMESPACE_BACKEND_REF,
        foreign="kube-system/api",
    ),
    VCase(
        "cross-namespace-in-a-later-rule",
        {
            **ROUTE,
            "spec": {
                **ROUTE["spec"],
                "rules": [*ROUTE["spec"]["rules"], {"backendRefs": [svc_ref("api", "kube-system")]}],
            },
        },
        CROSS_NAMESPACE_BACKEND_REF,
        foreign="kube-system/api",
    ),
    VCase("other-hostname", with_hostnames(ROUTE, ["evil.example.net"]), HOSTNAME_MISMATCH),
    VCase("extra-hostname", with_hostnames(ROUTE, [DNS, "evil.example.net"]), HOSTNAME_MISMATCH),
    VCase("hostname-twice", with_hostnames(ROUTE, [DNS, DNS]), HOSTNAME_MISMATCH),
    VCase("wildcard-hostname", with_hostnames(ROUTE, ["*.example.com"]), HOSTNAME_MISMATCH),
    VCase("parent-domain-hostname", with_hostnames(ROUTE, ["example.com"]), HOSTNAME_MISMATCH),
    VCase("no-hostnames-for-a-name", with_hostnames(ROUTE, None), HOSTNAME_MISMATCH),
    VCase("empty-hostnames-for-a-name", with_hostnames(ROUTE, []), HOSTNAME_MISMATCH),
    VCase(
        "ip-dns-name-with-hostname",
        with_hostnames(o.solver_route(IP_CH), ["203.0.113.7"]),
        HOSTNAME_MISMATCH,
        challenge=IP_CH,
    ),
    VCase(
        "ip-dns-name-with-other-hostname",
        with_hostnames(o.solver_route(IP_CH), [DNS]),
        HOSTNAME_MISMATCH,
        challenge=IP_CH,
    ),
    VCase("route-of-an-ip-for-a-name", ip_route(IP_CH), HOSTNAME_MISMATCH, challenge=CH),
]


@pytest.mark.parametrize("case", VCASES, ids=[c.id for c in VCASES])
def test_validate_route(case: VCase) -> None:
    route = HTTPRoute.from_raw(case.route)
    challenge = Challenge.from_raw(case.challenge or CH)
    problem = validate_route(route, challenge)
    if case.refusal is None:
        assert problem is None
        return
    assert problem is not None
    md = case.route["metadata"]
    assert (problem.kind, problem.namespace, problem.name, problem.uid, problem.reason) == (
        Kind.HTTPROUTE,
        md["namespace"],
        md["name"],
        md["uid"],
        case.refusal,
    )
    if case.foreign is not None:
        assert problem.message == f"backendRefs to other namespaces: {case.foreign}"
    if case.refusal == HOSTNAME_MISMATCH:
        assert challenge.meta.name in problem.message


# -- reconcile_route in both modes ------------------------------------------------------------------


@dataclass
class Case:
    id: str
    world: list[JSON]
    refusal: str | None = None
    shadow_skip: str | None = "route-mode-shadow"  # what shadow mode says when it does not refuse
    patch_rewrites: bool = False  # whether patch mode rewrites the route
    key: Key = KEY


READY = [CH, SVC, CLOUD, BACKEND]
IP_SVC = o.patched(o.solver_service(IP_CH), [{"ip": "100.65.0.102"}])

CASES = [
    Case("valid", [*READY, ROUTE], patch_rewrites=True),
    Case("valid-already-routed", [*READY, o.backend_route(ROUTE, BACKEND_NAME)]),
    Case("valid-ip-route", [IP_CH, IP_SVC, CLOUD, o.managed_backend(IP_SVC), ip_route(IP_CH)], patch_rewrites=True),
    Case("valid-waiting-for-backend", [CH, SVC, CLOUD, ROUTE]),
    Case("valid-public-project", [CH, SVC, o.project(network="public"), BACKEND, ROUTE], shadow_skip="public-network"),
    Case("hostname-mismatch", [*READY, with_hostnames(ROUTE, ["evil.example.net"])], HOSTNAME_MISMATCH),
    Case("extra-hostname", [*READY, with_hostnames(ROUTE, [DNS, "evil.example.net"])], HOSTNAME_MISMATCH),
    Case("hostname-missing", [*READY, with_hostnames(ROUTE, None)], HOSTNAME_MISMATCH),
    Case(
        "hostname-mismatch-already-routed",
        [*READY, with_hostnames(o.backend_route(ROUTE, BACKEND_NAME), ["evil.example.net"])],
        HOSTNAME_MISMATCH,
    ),
    Case(
        "ip-route-with-hostname",
        [IP_CH, IP_SVC, CLOUD, o.managed_backend(IP_SVC), with_hostnames(o.solver_route(IP_CH), ["203.0.113.7"])],
        HOSTNAME_MISMATCH,
    ),
    Case(
        "cross-namespace-next-to-solver",
        [*READY, with_refs(ROUTE, svc_ref(), svc_ref("api", "kube-system"))],
        CROSS_NAMESPACE_BACKEND_REF,
    ),
    Case(
        "cross-namespace-solver-name",  # the solver's name, but in another namespace
        [*READY, with_refs(ROUTE, svc_ref(namespace="kube-system"))],
        CROSS_NAMESPACE_BACKEND_REF,
    ),
    Case(
        "cross-namespace-backend",
        [*READY, with_refs(ROUTE, backend_ref(namespace="kube-system"))],
        CROSS_NAMESPACE_BACKEND_REF,
    ),
    Case(
        "no-challenge-owner",
        [*READY, {**ROUTE, "metadata": {**ROUTE["metadata"], "ownerReferences": []}}],
        "NoChallengeOwner",
    ),
    Case("challenge-missing", [SVC, CLOUD, BACKEND, ROUTE], "ChallengeNotFound"),
    Case(
        "not-a-solver-route",
        [*READY, {**ROUTE, "metadata": {**ROUTE["metadata"], "labels": {}}}],
        shadow_skip="not-a-solver",
    ),
    Case("route-being-deleted", [*READY, o.deleting(ROUTE)], shadow_skip="being-deleted"),
    Case("route-missing", READY, shadow_skip=None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_shadow_mode_never_writes(case: Case) -> None:
    decision = reconcile_route(case.key, o.cache_of(case.world, SHADOW), SHADOW)
    assert decision.writes == ()
    assert [r.reason for r in decision.refusals] == ([case.refusal] if case.refusal else [])
    assert decision.skipped == (None if case.refusal else case.shadow_skip)
    assert decision.routed is None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_patch_mode(case: Case) -> None:
    decision = reconcile_route(case.key, o.cache_of(case.world, PATCH), PATCH)
    assert [r.reason for r in decision.refusals] == ([case.refusal] if case.refusal else [])
    if not case.patch_rewrites:
        assert decision.writes == ()
        return
    (write,) = decision.writes
    assert isinstance(write, Patch)
    assert (write.kind, write.namespace, write.name) == (Kind.HTTPROUTE, *case.key)
    for rule in write.body["spec"]["rules"]:
        assert all(ref["kind"] == "Backend" for ref in rule["backendRefs"])


@pytest.mark.parametrize("policy", MODES, ids=[p.route_mode.value for p in MODES])
@pytest.mark.parametrize("case", [c for c in CASES if c.refusal], ids=[c.id for c in CASES if c.refusal])
def test_refusals_are_the_same_in_both_modes(case: Case, policy: Policy) -> None:
    decision = reconcile_route(case.key, o.cache_of(case.world, policy), policy)
    assert decision.writes == ()
    (refusal,) = decision.refusals
    route = next(x for x in case.world if x["kind"] == "HTTPRoute")
    assert (refusal.kind, refusal.namespace, refusal.name, refusal.uid, refusal.reason) == (
        Kind.HTTPROUTE,
        *case.key,
        route["metadata"]["uid"],
        case.refusal,
    )
    assert decision.routed is None


def test_patch_mode_hostname_mismatch_stops_the_rewrite() -> None:
    """Everything a rewrite needs is there (cloud solver, Backend): only the hostname keeps it back."""
    good = reconcile_route(KEY, o.cache_of([*READY, ROUTE], PATCH), PATCH)
    assert len(good.writes) == 1
    bad_world = [*READY, with_hostnames(ROUTE, ["evil.example.net"])]
    bad = reconcile_route(KEY, o.cache_of(bad_world, PATCH), PATCH)
    assert bad.writes == ()
    assert [r.reason for r in bad.refusals] == [HOSTNAME_MISMATCH]
