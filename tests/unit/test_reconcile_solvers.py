"""Which solvers are acted on (`reconcile/solvers.py`): tenant cloud namespaces only, and only solvers that
can work; the rest are refused up front, once, with no write."""

from __future__ import annotations

import copy

import pytest

from reconciler.model import JSON
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind
from reconciler.reconcile.routes import reconcile_route
from reconciler.reconcile.services import reconcile_service
from reconciler.reconcile.shadows import reconcile_shadow
from reconciler.reconcile.solvers import valid_dns_name
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

CH = o.challenge()
SVC = o.solver_service(CH)
KEY = (o.NS, SVC["metadata"]["name"])
CLOUD = o.project()


def with_spec(obj: JSON, **spec: object) -> JSON:
    out = copy.deepcopy(obj)
    out["spec"].update(spec)
    return out


@pytest.mark.parametrize(
    ("challenge", "service", "reason"),
    [
        (with_spec(CH, dnsName="", token="", key=""), SVC, "InvalidChallenge"),
        (with_spec(CH, key=""), SVC, "InvalidChallenge"),
        (with_spec(CH, token="a/../b"), SVC, "InvalidChallenge"),
        (with_spec(CH, dnsName="*.example.com"), SVC, "InvalidChallenge"),
        (with_spec(CH, dnsName="bad_name.example.com"), SVC, "InvalidChallenge"),
        (with_spec(CH, type="DNS-01"), SVC, "InvalidChallenge"),
        (CH, with_spec(SVC, clusterIP="None"), "UnusableSolverService"),
        (CH, with_spec(SVC, ports=[]), "UnusableSolverService"),
        (CH, with_spec(SVC, ports=[{"name": "http", "port": 8089, "targetPort": 9999}]), "UnusableSolverService"),
    ],
)
def test_solvers_that_can_never_work_are_refused_up_front(challenge: JSON, service: JSON, reason: str) -> None:
    service = copy.deepcopy(service)
    service["metadata"]["labels"] = o.solver_labels(challenge)
    api = FakeAPI([CLOUD, challenge, service])
    decision = reconcile_service(KEY, o.cache_of(api.objects.values()), Policy())
    assert decision.writes == ()
    (refusal,) = decision.refusals
    assert refusal.reason == reason
    assert [s.kind for s in refusal.also] == [Kind.CHALLENGE], "shown where the tenant looks: the Challenge too"
    shadow = reconcile_shadow(KEY, o.cache_of(api.objects.values()), Policy())
    assert shadow.writes == ()


@pytest.mark.parametrize("project", [o.project(network="public"), None], ids=["public", "no-project"])
def test_outside_cloud_tenants_not_even_a_look_alike_is_told_anything(project: JSON | None) -> None:
    lookalike = o.plain_service(labels=o.solver_labels(CH))  # solver labels, no Challenge owner
    forged_route = o.solver_route(CH)
    forged_route["metadata"]["ownerReferences"] = []
    world = [w for w in (project, CH, lookalike, forged_route) if w is not None]
    cache = o.cache_of(world)
    decision = reconcile_service((o.NS, "my-app"), cache, Policy())
    assert (decision.writes, decision.refusals, decision.notices) == ((), (), ())
    route = reconcile_route((o.NS, forged_route["metadata"]["name"]), cache, Policy())
    assert (route.writes, route.refusals) == ((), ())


def test_in_a_cloud_project_a_look_alike_is_refused() -> None:
    lookalike = o.plain_service(labels=o.solver_labels(CH))
    decision = reconcile_service((o.NS, "my-app"), o.cache_of([CLOUD, CH, lookalike]), Policy())
    assert [r.reason for r in decision.refusals] == ["NoChallengeOwner"]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.com", True),
        ("Example.COM.", True),
        ("a-b.example.com", True),
        ("-a.example.com", False),
        ("a..example.com", False),
        ("*.example.com", False),
        ("x" * 64 + ".com", False),
        ("", False),
    ],
)
def test_dns_names(name: str, valid: bool) -> None:
    assert valid_dns_name(name) is valid
