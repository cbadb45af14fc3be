"""Which objects count as cert-manager's solver objects (notes: only the controller reference to an existing
Challenge, with matching labels, tells the real ones from a tenant's look-alikes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconciler.model import JSON, Challenge, HTTPRoute, Meta, Service
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind, Refusal
from reconciler.reconcile.ownership import checksum_label, solver_challenge
from tests.unit import objects as o

POLICY = Policy()
CH = o.challenge()
OTHER_CH = o.challenge(name="other-1-0", dns_name="other.example.com", token="tok-other")
FOREIGN_CH = o.challenge(namespace="acme-other")


def _set_owner(ref: JSON) -> Callable[[JSON], None]:
    def mutate(obj: JSON) -> None:
        obj["metadata"]["ownerReferences"] = [ref]

    return mutate


def _labels(**labels: str) -> Callable[[JSON], None]:
    def mutate(obj: JSON) -> None:
        obj["metadata"]["labels"].update(labels)

    return mutate


def _drop_label(label: str) -> Callable[[JSON], None]:
    def mutate(obj: JSON) -> None:
        obj["metadata"]["labels"].pop(label)

    return mutate


def _no_owner(obj: JSON) -> None:
    obj["metadata"].pop("ownerReferences")


def _unchanged(obj: JSON) -> None:
    return None


CASES: list[tuple[str, Callable[[JSON], None], list[JSON], str | None]] = [
    # (case, mutation of the genuine object, Challenges in the cache, expected: "challenge" | reason | None)
    ("genuine", _unchanged, [CH], "challenge"),
    ("genuine-among-several", _unchanged, [OTHER_CH, CH], "challenge"),
    ("genuine-final-challenge", _unchanged, [o.challenge(state="valid")], "challenge"),
    ("no-owner", _no_owner, [CH], "NoChallengeOwner"),
    ("owner-not-controller", _set_owner(o.owner_ref(CH, controller=False)), [CH], "NoChallengeOwner"),
    (
        "controller-is-a-deployment",
        _set_owner({"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u", "controller": True}),
        [CH],
        "NoChallengeOwner",
    ),
    (
        "challenge-kind-in-another-group",
        _set_owner({**o.owner_ref(CH), "apiVersion": "acme.example.com/v1"}),
        [CH],
        "NoChallengeOwner",
    ),
    ("challenge-missing-from-cache", _unchanged, [], "ChallengeNotFound"),
    ("uid-mismatch", _set_owner({**o.owner_ref(CH), "uid": "forged"}), [CH], "ChallengeNotFound"),
    ("name-mismatch", _set_owner({**o.owner_ref(CH), "name": "renamed"}), [CH], "ChallengeNotFound"),
    ("challenge-in-another-namespace", _set_owner(o.owner_ref(FOREIGN_CH)), [FOREIGN_CH], "ChallengeNotFound"),
    ("owner-of-another-challenge", _set_owner(o.owner_ref(OTHER_CH)), [CH, OTHER_CH], "ChallengeLabelMismatch"),
    ("domain-label-forged", _labels(**{o.DOMAIN_LABEL: "12345"}), [CH], "ChallengeLabelMismatch"),
    ("token-label-missing", _drop_label(o.TOKEN_LABEL), [CH], "ChallengeLabelMismatch"),
]


@pytest.mark.parametrize(("case", "mutate", "challenges", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("kind", [Kind.SERVICE, Kind.HTTPROUTE])
def test_solver_challenge(
    case: str, mutate: Callable[[JSON], None], challenges: list[JSON], expected: str, kind: Kind
) -> None:
    raw = o.solver_service(CH) if kind is Kind.SERVICE else o.solver_route(CH)
    mutate(raw)
    cache = o.cache_of(challenges)
    meta = Meta.from_raw(raw, POLICY.annotation_keys())
    result = solver_challenge(meta, cache, POLICY, kind)
    if expected == "challenge":
        assert not isinstance(result, Refusal)
        assert result is not None
        assert result.meta.uid == raw["metadata"]["ownerReferences"][0]["uid"]
    else:
        assert isinstance(result, Refusal)
        assert (result.kind, result.reason) == (kind, expected)
        assert (result.namespace, result.name, result.uid) == (meta.namespace, meta.name, meta.uid)
        assert result.message


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (Kind.SERVICE, o.plain_service()),
        (Kind.SERVICE, o.plain_service(labels={o.SOLVER_LABEL: "false"})),
        (Kind.SERVICE, o.plain_service(labels={o.DOMAIN_LABEL: "1"})),  # only routes are picked by domain
        (Kind.HTTPROUTE, {**o.solver_route(CH), "metadata": {"name": "r", "namespace": o.NS, "labels": {}}}),
        (
            Kind.HTTPROUTE,
            {**o.solver_route(CH), "metadata": {"name": "r", "namespace": o.NS, "labels": {o.SOLVER_LABEL: "true"}}},
        ),
        (Kind.BACKEND, o.managed_backend(o.solver_service(CH))),
    ],
    ids=[
        "plain",
        "solver-false",
        "service-with-domain-label",
        "route-unlabelled",
        "route-solver-label-only",
        "backend",
    ],
)
def test_objects_without_solver_markers_are_not_our_business(kind: Kind, raw: JSON) -> None:
    meta = Meta.from_raw(raw)
    assert solver_challenge(meta, o.cache_of([CH]), POLICY, kind) is None


def test_markers_follow_the_policy() -> None:
    policy = Policy(solver_label="example.com/solver", domain_label="example.com/domain")
    svc = Service.from_raw(o.solver_service(CH))
    route = HTTPRoute.from_raw(o.solver_route(CH))
    assert solver_challenge(svc.meta, o.cache_of([CH]), policy, Kind.SERVICE) is None
    assert solver_challenge(route.meta, o.cache_of([CH]), policy, Kind.HTTPROUTE) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Wikipedia", "300286872"), ("", "1")],  # 0x11E60398, the textbook example
)
def test_checksum_label_is_adler32_in_decimal(value: str, expected: str) -> None:
    assert checksum_label(value) == expected


def test_leftover_of_a_deleted_challenge_is_not_taken_for_a_forgery() -> None:
    """Between the Order deleting a Challenge and the garbage collector removing its route, the route
    points at a Challenge that is gone: that is routine, not a forgery, and gets no Warning."""
    ch = o.challenge()
    route = o.solver_route(ch)
    cache = o.cache_of([route], POLICY)  # the Challenge itself is no longer in the cache
    meta = cache.route(route["metadata"]["namespace"], route["metadata"]["name"])
    assert meta is not None
    refused = solver_challenge(meta.meta, cache, POLICY, Kind.HTTPROUTE)
    assert isinstance(refused, Refusal)
    assert refused.reason == "ChallengeNotFound"
    cache.challenges.upsert(Challenge.from_raw(ch))  # the informer saw it, then its deletion
    cache.challenges.delete((ch["metadata"]["namespace"], ch["metadata"]["name"]))
    assert solver_challenge(meta.meta, cache, POLICY, Kind.HTTPROUTE) is None
