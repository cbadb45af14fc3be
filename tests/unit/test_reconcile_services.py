"""Solver Services in cloud networks become LoadBalancers on the project's EIP that ask for a Backend."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest

from reconciler.model import JSON, Key
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind, Patch
from reconciler.reconcile.services import reconcile_service
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

CH = o.challenge()
SVC = o.solver_service(CH)
KEY: Key = (o.NS, SVC["metadata"]["name"])
CLOUD = o.project()
PUBLIC = o.project(network="public")
FULL_PATCH: JSON = {
    "metadata": {
        "resourceVersion": "1",
        "annotations": {o.BIND_ANNOTATION: "default-gw", o.BACKEND_ANNOTATION: "true"},
    },
    "spec": {"type": "LoadBalancer"},
}


def annotated(svc: JSON, **annotations: str) -> JSON:
    out = copy.deepcopy(svc)
    out["metadata"]["annotations"].update(annotations)
    return out


def with_type(svc: JSON, type_: str) -> JSON:
    out = copy.deepcopy(svc)
    out["spec"]["type"] = type_
    return out


NET_CLOUD = {o.NETWORK_ANNOTATION: "cloud"}
NET_PUBLIC = {o.NETWORK_ANNOTATION: "public"}


@dataclass
class Case:
    id: str
    world: list[JSON]
    patch: JSON | None = None
    refusal: str | None = None
    skipped: str | None = None
    policy: Policy = field(default_factory=Policy)
    key: Key = KEY


CASES = [
    # the PRD
    Case("cloud-solver-becomes-load-balancer", [CH, SVC, CLOUD], patch=FULL_PATCH),
    Case("public-project-untouched", [CH, SVC, PUBLIC], skipped="public-network"),
    Case("already-patched-no-write", [CH, o.patched(SVC), CLOUD]),
    Case("already-patched-with-address-no-write", [CH, o.patched(SVC, [{"ip": "100.65.0.102"}]), CLOUD]),
    # the notes: NodePort (not ClusterIP), partial states, the per-Service override both ways
    Case("cluster-ip-solver-also-patched", [CH, with_type(SVC, "ClusterIP"), CLOUD], patch=FULL_PATCH),
    Case(
        "load-balancer-missing-annotations",
        [CH, with_type(SVC, "LoadBalancer"), CLOUD],
        patch={"metadata": FULL_PATCH["metadata"]},
    ),
    Case(
        "annotated-but-node-port",
        [CH, annotated(SVC, **{o.BIND_ANNOTATION: "default-gw", o.BACKEND_ANNOTATION: "true"}), CLOUD],
        patch={"metadata": {"resourceVersion": "1"}, "spec": {"type": "LoadBalancer"}},
    ),
    Case(
        "other-eip-rebound",
        [CH, o.patched(SVC, annotations={o.BIND_ANNOTATION: "tenant-eip"}), CLOUD],
        patch={"metadata": {"resourceVersion": "1", "annotations": {o.BIND_ANNOTATION: "default-gw"}}},
    ),
    Case(
        "backend-annotation-false-corrected",
        [CH, o.patched(SVC, annotations={o.BACKEND_ANNOTATION: "false"}), CLOUD],
        patch={"metadata": {"resourceVersion": "1", "annotations": {o.BACKEND_ANNOTATION: "true"}}},
    ),
    Case("override-cloud-in-public-project", [CH, annotated(SVC, **NET_CLOUD), PUBLIC], patch=FULL_PATCH),
    Case("override-public-in-cloud-project", [CH, annotated(SVC, **NET_PUBLIC), CLOUD], skipped="public-network"),
    Case("empty-override-means-project", [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: ""}), CLOUD], patch=FULL_PATCH),
    Case("project-namespace-by-convention", [CH, SVC, o.project(status_namespace=None)], patch=FULL_PATCH),
    Case(
        "project-status-namespace-elsewhere",
        [CH, SVC, o.project(status_namespace="shalb-other")],
        skipped="unknown-project",
    ),
    Case("prd-field-name-fallback", [CH, SVC, o.project(field="externalNetworkType")], patch=FULL_PATCH),
    Case("two-agreeing-projects", [CH, SVC, CLOUD, o.project(name="demo2", org_namespace="x")], patch=FULL_PATCH),
    Case("custom-eip", [CH, SVC, CLOUD], policy=Policy(eip_name="acme-eip"), patch=FULL_PATCH),
    # bad input and expected non-actions
    Case("unknown-project", [CH, SVC], skipped="unknown-project"),
    Case("unknown-project-even-with-override", [CH, annotated(SVC, **NET_CLOUD)], skipped="unknown-project"),
    Case("project-without-network-type", [CH, SVC, o.project(network=None)], skipped="unknown-project-network"),
    Case(
        "conflicting-projects",
        [CH, SVC, CLOUD, o.project(name="demo2", org_namespace="x", network="public")],
        refusal="ConflictingProjects",
    ),
    Case(
        "override-settles-conflicting-projects",
        [CH, annotated(SVC, **NET_CLOUD), CLOUD, o.project(name="demo2", org_namespace="x", network="public")],
        patch=FULL_PATCH,
    ),
    Case(
        "invalid-network-annotation",
        [CH, annotated(SVC, **{o.NETWORK_ANNOTATION: "Cloud"}), CLOUD],
        refusal="InvalidNetworkType",
    ),
    Case(
        "no-owner",
        [CH, {**SVC, "metadata": {**SVC["metadata"], "ownerReferences": []}}, CLOUD],
        refusal="NoChallengeOwner",
    ),
    Case(
        "forged-labels-on-plain-service",
        [CH, o.plain_service(labels=o.solver_labels(CH)), CLOUD],
        refusal="NoChallengeOwner",
        key=(o.NS, "my-app"),
    ),
    Case("challenge-missing-from-cache", [SVC, CLOUD], refusal="ChallengeNotFound"),
    Case("being-deleted", [CH, o.deleting(SVC), CLOUD], skipped="being-deleted"),
    Case(
        "plain-service-not-ours",
        [CH, o.plain_service(type_="LoadBalancer"), CLOUD],
        skipped="not-a-solver",
        key=(o.NS, "my-app"),
    ),
    # A ClusterIP Service without the solver label is dropped at the informer: never cached, nothing to decide.
    Case("plain-cluster-ip-service-not-even-cached", [CH, o.plain_service(), CLOUD], key=(o.NS, "my-app")),
    Case("missing-service", [CH, CLOUD]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reconcile_service(case: Case) -> None:
    decision = reconcile_service(case.key, o.cache_of(case.world, case.policy), case.policy)
    assert decision.skipped == case.skipped
    assert [r.reason for r in decision.refusals] == ([case.refusal] if case.refusal else [])
    for r in decision.refusals:
        assert (r.kind, r.namespace, r.name) == (Kind.SERVICE, *case.key)
    if case.patch is None:
        assert decision.writes == ()
        return
    (write,) = decision.writes
    assert isinstance(write, Patch)
    assert (write.kind, write.namespace, write.name, write.resource_version) == (Kind.SERVICE, *case.key, "1")
    expected = copy.deepcopy(case.patch)
    if "annotations" in expected["metadata"] and o.BIND_ANNOTATION in expected["metadata"]["annotations"]:
        expected["metadata"]["annotations"][o.BIND_ANNOTATION] = case.policy.eip_name
    assert write.body == expected


@pytest.mark.parametrize("case", [c for c in CASES if c.patch], ids=[c.id for c in CASES if c.patch])
def test_patch_applies_and_second_run_writes_nothing(case: Case) -> None:
    api = FakeAPI(case.world)
    api.apply_all(reconcile_service(case.key, o.cache_of(case.world, case.policy), case.policy).writes)
    svc = api.get("Service", *case.key)
    assert svc is not None
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == SVC["spec"]["ports"]  # port 8089 and nodePort kept
    assert svc["metadata"]["annotations"]["auth.istio.io/8089"] == "NONE"  # untrimmed annotations survive
    assert svc["metadata"]["annotations"][o.BACKEND_ANNOTATION] == "true"
    again = reconcile_service(case.key, o.cache_of(api.objects.values(), case.policy), case.policy)
    assert again.writes == ()
    assert again.refusals == ()
