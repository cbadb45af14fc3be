"""Domain claims (`reconcile/claims.py`, applied by the Service reconciler): first come, first served."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.model import JSON, Key
from reconciler.policy import Policy
from reconciler.reconcile.intents import Create, Kind, Patch
from reconciler.reconcile.services import reconcile_service
from reconciler.reconcile.shadows import reconcile_shadow
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

POLICY = Policy()
A = o.project("a", "org", status_namespace="org-a")
B = o.project("b", "org", status_namespace="org-b")
HOST = "shop.example.com"


def solver(project: JSON, host: str = HOST, name: str = "s1", token: str = "tok-1") -> tuple[JSON, JSON, Key]:
    ns = project["status"]["namespace"]
    ch = o.challenge(name=f"ch-{name}", namespace=ns, dns_name=host, token=token)
    svc = o.solver_service(ch, name=name)
    return ch, svc, (ns, name)


def route(namespace: str, hostnames: list[str], kind: str = "HTTPRoute", **labels: str) -> JSON:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {
            "name": f"web-{len(hostnames)}",
            "namespace": namespace,
            "uid": f"u-{namespace}",
            "labels": labels,
        },
        "spec": {"parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}], "hostnames": hostnames},
    }


def decide(world: list[JSON], key: Key) -> Any:
    return reconcile_service(key, o.cache_of(world, POLICY, owned_claims=False), POLICY)


B_CH, B_SVC, B_KEY = solver(B)
A_CH, A_SVC, A_KEY = solver(A)


def test_the_first_challenge_for_a_name_claims_it_before_anything_is_wired() -> None:
    decision = decide([B, B_CH, B_SVC], B_KEY)
    claim, patch = decision.writes
    assert isinstance(claim, Create)
    assert (claim.kind, claim.name) == (Kind.DOMAINCLAIM, HOST)
    assert claim.body["spec"] == {
        "hostname": HOST,
        "project": {"organization": "org", "name": "b"},
        "namespace": "org-b",
    }
    assert isinstance(patch, Patch)
    assert patch.kind is Kind.SERVICE, "the claim comes first: if it fails, nothing is wired"


def test_a_name_claimed_by_another_project_is_never_wired() -> None:
    world = [A, B, B_CH, B_SVC, o.domain_claim(HOST, A)]
    decision = decide(world, B_KEY)
    assert [w.kind for w in decision.writes] == [Kind.DOMAINCLAIM], "only the claim's record of the contest"
    (record,) = decision.writes
    assert isinstance(record, Patch)
    assert record.subresource == "status"
    assert record.changes["status"]["refusedChallenges"] == 1
    assert record.changes["status"]["recentContenders"] == [B_CH["metadata"]["uid"]]
    assert record.changes["status"]["conditions"][0]["type"] == "Contested"
    (refusal,) = decision.refusals
    assert refusal.reason == "DomainClaimed"
    assert (refusal.kind, refusal.name) == (Kind.SERVICE, "s1")
    assert [(s.kind, s.name) for s in refusal.also] == [(Kind.CHALLENGE, "ch-s1")]
    assert "org/a" not in refusal.message, "the owner is not disclosed"
    assert "org-a" not in refusal.message


def test_the_contest_is_recorded_once_per_challenge() -> None:
    api = FakeAPI([A, B, B_CH, B_SVC, o.domain_claim(HOST, A)])
    api.apply_all(decide(list(api.objects.values()), B_KEY).writes)
    again = decide(list(api.objects.values()), B_KEY)
    assert again.writes == ()
    assert [r.reason for r in again.refusals] == ["DomainClaimed"]


def test_no_companion_route_for_a_name_claimed_by_another_project() -> None:
    patched = o.patched(B_SVC, [{"ip": "100.65.0.9"}])
    world = [A, B, B_CH, patched, o.managed_backend(patched, "100.65.0.9"), o.solver_route(B_CH, "s1")]
    free = reconcile_shadow(B_KEY, o.cache_of([*world, o.domain_claim(HOST, B)], owned_claims=False), POLICY)
    assert [type(w) for w in free.writes] == [Create], "B's own claim: routed"
    taken = reconcile_shadow(B_KEY, o.cache_of([*world, o.domain_claim(HOST, A)], owned_claims=False), POLICY)
    assert taken.writes == ()
    assert taken.skipped == "domain-claimed"


def test_a_transfer_by_an_operator_lets_the_other_project_in() -> None:
    transferred = o.domain_claim(HOST, B)  # the operator edited spec.project from A to B
    decision = decide([A, B, B_CH, B_SVC, transferred], B_KEY)
    assert [w.kind for w in decision.writes] == [Kind.SERVICE]
    assert decision.refusals == ()


@pytest.mark.parametrize(
    ("claimed", "covers"),
    [
        ("*.example.com", True),  # one label down
        ("*.com", False),  # two labels down: a wildcard claim covers one label only
        ("other.example.com", False),
        ("SHOP.Example.com", True),  # names compare case-insensitively (normalised by the view)
    ],
)
def test_which_claims_cover_a_name(claimed: str, covers: bool) -> None:
    claim = o.domain_claim(claimed.lower(), A)
    decision = decide([A, B, B_CH, B_SVC, claim], B_KEY)
    assert bool(decision.refusals) is covers


def test_a_projects_own_exact_claim_beats_another_projects_wildcard() -> None:
    world = [A, B, B_CH, B_SVC, o.domain_claim("*.example.com", A), o.domain_claim(HOST, B)]
    assert decide(world, B_KEY).refusals == ()


@pytest.mark.parametrize(
    ("hostnames", "kind", "taken"),
    [
        ([HOST], "HTTPRoute", True),
        ([HOST], "TLSRoute", True),
        (["*.example.com"], "HTTPRoute", True),
        (["*.com"], "TLSRoute", True),  # a route's wildcard matches at any depth
        (["www.example.com"], "HTTPRoute", False),
    ],
)
def test_a_name_another_namespace_already_serves_is_taken(hostnames: list[str], kind: str, taken: bool) -> None:
    world = [A, B, B_CH, B_SVC, route("org-a", hostnames, kind)]
    decision = decide(world, B_KEY)
    assert bool(decision.refusals) is taken
    if taken:
        assert decision.writes == (), "no claim object to record on: nothing written"


def test_routes_that_do_not_serve_for_another_namespace_do_not_count() -> None:
    solver_route = route("org-a", [HOST], **{o.DOMAIN_LABEL: "1"})  # a challenge: claims decide those
    ours = route("org-a", [HOST], **{o.MANAGED_BY: o.MANAGER})  # a companion route of ours
    own = route("org-b", [HOST])  # the project's own route
    detached = route("org-a", [HOST])
    detached["spec"]["parentRefs"] = []
    for world_route in (solver_route, ours, own, detached):
        decision = decide([A, B, B_CH, B_SVC, world_route], B_KEY)
        assert decision.refusals == (), world_route
        assert [w.kind for w in decision.writes] == [Kind.DOMAINCLAIM, Kind.SERVICE]


def test_a_platform_namespace_without_a_project_still_holds_its_names() -> None:
    """A hostname the platform serves from its own namespace is not there for a tenant to certify."""
    decision = decide([B, B_CH, B_SVC, route("envoy-gateway-system", [HOST])], B_KEY)
    assert [r.reason for r in decision.refusals] == ["DomainClaimed"]


def test_a_claim_of_the_same_project_is_owned_after_a_second_challenge() -> None:
    second_ch, second_svc, second_key = solver(B, name="s2", token="tok-2")
    api = FakeAPI([B, B_CH, B_SVC, second_ch, second_svc])
    api.apply_all(decide(list(api.objects.values()), B_KEY).writes)
    decision = decide(list(api.objects.values()), second_key)
    assert [w.kind for w in decision.writes] == [Kind.SERVICE], "the name is already the project's"


def test_a_wildcard_claim_is_named_so_that_one_object_exists_per_name() -> None:
    claim = o.domain_claim("*.example.com", A)
    assert claim["metadata"]["name"] == "wildcard.example.com"
    bad = copy.deepcopy(claim)
    assert bad["spec"]["hostname"] == "*.example.com"
