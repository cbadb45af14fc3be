"""What the tenant is told on its Challenge (`reconcile/diagnosis.py`): the story hop by hop, the stuck
hop named, the probe asked for once routed, and the step `/debug/challenges` shows."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.cache import ClusterCache
from reconciler.model import JSON, ProbeResult
from reconciler.policy import Policy, RouteMode
from reconciler.reconcile.diagnosis import diagnose, progress
from reconciler.reconcile.intents import Decision
from tests.unit import objects as o

CH = o.challenge()
KEY = (o.NS, CH["metadata"]["name"])
SVC0 = o.solver_service(CH)
SVC = o.patched(SVC0, [{"ip": "100.65.0.102"}])
SVC_NAME = SVC["metadata"]["name"]
BACKEND = o.managed_backend(SVC)
ROUTE = o.solver_route(CH)
CLOUD = o.project()
GATEWAY: JSON = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "eg", "namespace": "envoy-gateway-system", "uid": "ug", "resourceVersion": "1"},
    "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
    "status": {"addresses": [{"type": "IPAddress", "value": "127.0.0.10"}]},
}
POLICY = Policy()


def companion() -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": f"{SVC_NAME}-acme",
            "namespace": o.NS,
            "uid": "uid-companion",
            "resourceVersion": "1",
            "labels": {o.MANAGED_BY: o.MANAGER},
            "ownerReferences": [o.owner_ref(SVC)],
        },
        "spec": {
            "parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}],
            "rules": [
                {
                    "backendRefs": [
                        {
                            "group": "gateway.envoyproxy.io",
                            "kind": "Backend",
                            "name": f"{SVC_NAME}-backend",
                            "port": 8089,
                        }
                    ]
                }
            ],
        },
    }


def with_status(obj: JSON, status: dict[str, Any]) -> JSON:
    out = copy.deepcopy(obj)
    out["status"] = status
    return out


def cache(*objs: JSON, now: float = 100.0) -> ClusterCache:
    c = o.cache_of([CH, CLOUD, *objs])
    c.clock = lambda: now
    return c


def reasons(decision: Decision) -> list[tuple[str, str]]:
    return [(n.type, n.reason) for n in decision.notices]


def test_a_wired_challenge_tells_its_story_and_asks_for_a_probe() -> None:
    decision = diagnose(KEY, cache(SVC, BACKEND, ROUTE, companion(), GATEWAY), POLICY)
    assert reasons(decision) == [("Normal", "SolverExposed"), ("Normal", "BackendReady"), ("Normal", "Routed")]
    exposed, backend, routed = (n.message for n in decision.notices)
    assert exposed == f"solver Service {SVC_NAME} exposed on EIP default-gw port 8089"
    assert backend == f"Backend {SVC_NAME}-backend at 100.65.0.102:8089"
    assert "Gateway envoy-gateway-system/eg" in routed
    assert all(n.subjects[0].kind == "Challenge" for n in decision.notices), "told on the Challenge"
    assert decision.probe is not None
    assert decision.probe.address == "127.0.0.10:80"
    assert decision.probe.host == CH["spec"]["dnsName"]
    assert decision.probe.path == f"/.well-known/acme-challenge/{CH['spec']['token']}"
    assert decision.probe.expected == CH["spec"]["key"]
    assert decision.writes == (), "it only tells and looks"


def test_the_probes_answer_ends_the_story_or_names_the_hop() -> None:
    c = cache(SVC, BACKEND, ROUTE, companion(), GATEWAY)
    uid = CH["metadata"]["uid"]
    c.probes[uid] = ProbeResult(ok=True, result="ok", detail="HTTP 200", at=90, route_uid="uid-companion")
    served = diagnose(KEY, c, POLICY)
    assert reasons(served)[-1] == ("Normal", "GatewayServes")
    assert served.probe is None
    assert progress(c.challenge(*KEY), c, POLICY).step == "validation"  # type: ignore[arg-type]

    c.probes[uid] = ProbeResult(
        ok=False, result="bad_status", detail="HTTP 503", at=97.5, route_uid="uid-companion", attempts=4
    )
    failing = diagnose(KEY, c, POLICY)
    warning = failing.notices[-1]
    assert (warning.type, warning.reason, warning.repeat) == ("Warning", "GatewayProbeFailed", True)
    assert "HTTP 503" in warning.message
    assert failing.probe is None, "backing off"
    assert failing.recheck_after == pytest.approx(4.0 - 2.5)  # 0.5 * 2^(4-1) after the last try
    assert progress(c.challenge(*KEY), c, POLICY).step == "probe"  # type: ignore[arg-type]


def test_the_first_failed_probes_of_a_new_route_are_no_warning() -> None:
    """Envoy serves a new route only after its xDS update: a healthy challenge's first probes fail too, and
    a Warning for each of them would tell every tenant that something is stuck."""
    c = cache(SVC, BACKEND, ROUTE, companion(), GATEWAY)
    for attempts in (1, 2, 3):
        c.probes[CH["metadata"]["uid"]] = ProbeResult(
            ok=False, result="bad_status", detail="HTTP 503", at=99.9, route_uid="uid-companion", attempts=attempts
        )
        early = diagnose(KEY, c, POLICY)
        assert "Warning" not in [n.type for n in early.notices], attempts
        assert early.recheck_after is not None, "probed again after the backoff"
        assert progress(c.challenge(*KEY), c, POLICY).step == "probe"  # type: ignore[arg-type]


def test_a_new_route_is_probed_afresh() -> None:
    c = cache(SVC, BACKEND, ROUTE, companion(), GATEWAY)
    c.probes[CH["metadata"]["uid"]] = ProbeResult(ok=True, result="ok", detail="", at=1, route_uid="an-older-route")
    assert diagnose(KEY, c, POLICY).probe is not None


def test_no_address_within_the_time_limit_is_a_warning_citing_the_platform() -> None:
    exposed_only = o.patched(SVC0)
    c = cache(exposed_only, now=100.0)
    c.exposures[exposed_only["metadata"]["uid"]] = 90.0
    early = diagnose(KEY, c, Policy(address_timeout=30))
    assert reasons(early) == [("Normal", "SolverExposed")]
    assert early.recheck_after == pytest.approx(20.0), "look again when the limit passes"
    late = diagnose(KEY, c, Policy(address_timeout=5))
    warning = late.notices[-1]
    assert (warning.type, warning.reason) == ("Warning", "NoAddress")
    assert warning.cite is not None
    assert warning.cite.name == SVC_NAME, "the platform's own Events on the Service go into the message"
    assert progress(c.challenge(*KEY), c, POLICY).step == "address"  # type: ignore[arg-type]


def test_a_backend_envoy_gateway_does_not_accept_is_named() -> None:
    rejected = with_status(
        BACKEND,
        {
            "conditions": [
                {"type": "Accepted", "status": "False", "reason": "Invalid", "message": "address is loopback"}
            ]
        },
    )
    decision = diagnose(KEY, cache(SVC, rejected, ROUTE, GATEWAY), POLICY)
    warning = decision.notices[-1]
    assert (warning.type, warning.reason) == ("Warning", "BackendNotAccepted")
    assert "Accepted=False Invalid: address is loopback" in warning.message


def test_a_route_the_gateway_does_not_accept_is_named_and_not_probed() -> None:
    status = {
        "parents": [
            {
                "parentRef": {"name": "eg", "namespace": "envoy-gateway-system"},
                "conditions": [
                    {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "message": "no Backend"}
                ],
            }
        ]
    }
    decision = diagnose(KEY, cache(SVC, BACKEND, ROUTE, with_status(companion(), status), GATEWAY), POLICY)
    warning = decision.notices[-1]
    assert (warning.type, warning.reason) == ("Warning", "RouteNotAccepted")
    assert "envoy-gateway-system/eg" in warning.message
    assert decision.probe is None


def test_the_step_a_challenge_waits_on() -> None:
    assert progress(o.cache_of([CH, CLOUD]).challenge(*KEY), o.cache_of([CH, CLOUD]), POLICY).step == "solver"  # type: ignore[arg-type]
    for world, step in (
        ([SVC0], "exposure"),
        ([SVC], "backend"),
        ([SVC, BACKEND, ROUTE], "route"),
        ([SVC, BACKEND, ROUTE, companion(), GATEWAY], "probe"),
    ):
        c = cache(*world)
        record = progress(c.challenge(*KEY), c, POLICY)  # type: ignore[arg-type]
        assert record.step == step, world
    record = progress(
        cache(SVC, BACKEND, ROUTE, companion()).challenge(*KEY), cache(SVC, BACKEND, ROUTE, companion()), POLICY
    )  # type: ignore[arg-type]
    assert (record.service, record.eip_port, record.backend, record.route) == (
        SVC_NAME,
        8089,
        f"{SVC_NAME}-backend",
        f"{SVC_NAME}-acme",
    )
    assert record.project == "shalb/demo"
    assert record.network == "cloud"


def test_nothing_is_told_outside_cloud_projects_or_without_probing() -> None:
    public = o.cache_of([CH, o.project(network="public"), SVC, BACKEND, ROUTE, companion(), GATEWAY])
    assert diagnose(KEY, public, POLICY) == Decision()
    quiet = diagnose(KEY, cache(SVC, BACKEND, ROUTE, companion(), GATEWAY), Policy(probe=False))
    assert quiet.probe is None


def test_route_mode_auto_reads_the_gateways_envoy_proxy() -> None:
    proxy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": {"name": "ordered", "namespace": "envoy-gateway-system", "uid": "up", "resourceVersion": "1"},
        "spec": {"preserveRouteOrder": True},
    }
    gateway = copy.deepcopy(GATEWAY)
    gateway["spec"]["infrastructure"] = {
        "parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": "ordered"}
    }
    c = cache(SVC, BACKEND, ROUTE, gateway, proxy)
    assert progress(c.challenge(*KEY), c, Policy(route_mode=RouteMode.AUTO)).route_mode == "patch"  # type: ignore[arg-type]
    plain = cache(SVC, BACKEND, ROUTE, GATEWAY, proxy)
    assert progress(plain.challenge(*KEY), plain, Policy(route_mode=RouteMode.AUTO)).route_mode == "shadow"  # type: ignore[arg-type]
