"""The start-up checks against scripted discovery and access-review answers: one line per problem, with
its cause and fix, exit code 1; and the wait for an API server that does not answer yet."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s_client

from reconciler import access
from reconciler.kube import preflight
from reconciler.kube.client import ApiError, KubeClient, Limits
from reconciler.kube.diagnosis import SERVICE_ACCOUNT_USER, ExitCode, StartupError, not_served
from reconciler.kube.preflight import Requirement
from reconciler.kube.resources import (
    BACKENDS,
    CHALLENGES,
    DOMAINCLAIMS,
    ENVOYPROXIES,
    LEASES,
    SERVICES,
    TLSROUTES,
    Resource,
)
from reconciler.metrics import Metrics
from reconciler.model import JSON
from reconciler.policy import Policy
from testbed.ports import free_loopback_ports

pytestmark = pytest.mark.anyio

HOST = "https://127.0.0.1:6443"
EVERYTHING = access.for_policy(Policy())


def discovery(*resources: Resource) -> dict[str, JSON]:
    """Discovery documents serving exactly `resources`."""
    docs: dict[str, JSON] = {}
    for r in resources:
        path = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
        docs.setdefault(path, {"kind": "APIResourceList", "resources": []})["resources"].append({"name": r.plural})
        if r.group:
            group = docs.setdefault(f"/apis/{r.group}", {"kind": "APIGroup", "versions": []})
            if {"version": r.version} not in group["versions"]:
                group["versions"].append({"version": r.version})
    return docs


ALL_SERVED = discovery(LEASES, *{req.resource for req in EVERYTHING})


@dataclass
class FakeApi:
    """Discovery by path, access reviews by a rule, /version by a script of answers."""

    paths: dict[str, JSON] = field(default_factory=lambda: dict(ALL_SERVED))
    allowed: Any = lambda attributes: True
    user: str | None = SERVICE_ACCOUNT_USER
    version: list[Exception | JSON] = field(default_factory=lambda: [{"gitVersion": "v1.36.3"}])
    reviews: list[dict[str, str]] = field(default_factory=list)
    host: str = HOST

    async def get_path(self, path: str, *, timeout: float = 30.0, attempts: int | None = None) -> JSON:
        if path == "/version":
            answer = self.version.pop(0) if len(self.version) > 1 else self.version[0]
            if isinstance(answer, Exception):
                raise answer
            return answer
        if path not in self.paths:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self.paths[path]

    async def create(self, resource: Resource, namespace: str | None, body: Mapping[str, Any]) -> JSON:
        if resource == preflight.SELF_REVIEWS:
            if self.user is None:
                raise ApiError(404, "NotFound", "no such API")
            return {"status": {"userInfo": {"username": self.user}}}
        assert resource == preflight.ACCESS_REVIEWS
        attributes = dict(body["spec"]["resourceAttributes"])
        self.reviews.append(attributes)
        return {"status": {"allowed": bool(self.allowed(attributes))}}


async def failure(api: FakeApi, requirements: tuple[Requirement, ...] = EVERYTHING, wait: float = 1) -> list[str]:
    with pytest.raises(StartupError) as caught:
        await preflight.run(api, requirements, wait)
    assert caught.value.exit_code is ExitCode.CLUSTER
    for line in caught.value.lines:
        assert "\n" not in line
    return list(caught.value.lines)


async def test_everything_in_place_passes_and_says_who_we_are() -> None:
    api = FakeApi()
    report = await preflight.run(api, EVERYTHING, 1)
    assert report == preflight.Report("v1.36.3", SERVICE_ACCOUNT_USER)
    asked = {(a["verb"], a["resource"], a.get("subresource")) for a in api.reviews}
    assert ("create", "domainclaims", None) in asked
    assert ("patch", "domainclaims", "status") in asked
    assert ("update", "services", "finalizers") in asked
    assert not any(a["resource"] == "leases" for a in api.reviews), "no election, no Lease"


@pytest.mark.parametrize(
    ("missing", "line"),
    [
        (
            BACKENDS,
            "CRD for backends.gateway.envoyproxy.io/v1alpha1 is not installed: install Envoy Gateway's CRDs "
            "(the Backend API, gateway.envoyproxy.io_backends.yaml)",
        ),
        (
            DOMAINCLAIMS,
            "CRD for domainclaims.acme-gateway.kube-dc.com/v1alpha1 is not installed: "
            "apply manifests/crds/ (kubectl apply -k manifests/)",
        ),
        (
            CHALLENGES,
            "CRD for challenges.acme.cert-manager.io/v1 is not installed: install cert-manager (its CRDs, "
            "with installCRDs=true for the Helm chart)",
        ),
    ],
)
async def test_a_missing_crd_is_one_line(missing: Resource, line: str) -> None:
    served = discovery(*{req.resource for req in EVERYTHING} - {missing})
    assert await failure(FakeApi(paths=served)) == [line]


async def test_the_missing_httproute_and_project_crds() -> None:
    from reconciler.kube.resources import HTTPROUTES, PROJECTS

    served = discovery(*{req.resource for req in EVERYTHING} - {HTTPROUTES, PROJECTS, TLSROUTES})
    assert await failure(FakeApi(paths=served)) == [
        "CRD for projects.kube-dc.com/v1 is not installed: install kube-dc (the reconciler only serves kube-dc clouds)",
        "CRD for httproutes.gateway.networking.k8s.io/v1 is not installed: install the Gateway API CRDs "
        "(standard channel)",
    ]


def test_install_hints_by_resource_then_group() -> None:
    envoy_proxies = Resource("gateway.envoyproxy.io", "v1alpha1", "envoyproxies", "EnvoyProxy")
    assert not_served(envoy_proxies) == (
        "CRD for envoyproxies.gateway.envoyproxy.io/v1alpha1 is not installed: install Envoy Gateway's CRDs"
    )
    assert not_served(Resource("example.com", "v1", "widgets", "Widget")) == (
        "CRD for widgets.example.com/v1 is not installed: install the CRD that serves Widget (example.com/v1)"
    )


async def test_a_crd_serving_other_versions_names_them() -> None:
    served = discovery(*({req.resource for req in EVERYTHING} - {BACKENDS, ENVOYPROXIES}))
    served["/apis/gateway.envoyproxy.io"] = {"versions": [{"version": "v1beta1"}]}
    served["/apis/gateway.envoyproxy.io/v1beta1"] = {"resources": [{"name": "backends"}]}
    assert await failure(FakeApi(paths=served)) == [
        "CRD for backends.gateway.envoyproxy.io does not serve v1alpha1 (served: v1beta1): install Envoy "
        "Gateway's CRDs (the Backend API, gateway.envoyproxy.io_backends.yaml) in a version that serves "
        "gateway.envoyproxy.io/v1alpha1"
    ]


async def test_an_optional_resource_may_be_absent() -> None:
    served = discovery(*({req.resource for req in EVERYTHING} - {TLSROUTES}))
    await preflight.run(FakeApi(paths=served), EVERYTHING, 1)


async def test_one_missing_verb_is_one_line() -> None:
    def allowed(a: Mapping[str, str]) -> bool:
        return not (a["resource"] == "domainclaims" and a["verb"] == "create" and not a.get("subresource"))

    assert await failure(FakeApi(allowed=allowed)) == [
        f"not allowed to create domainclaims.acme-gateway.kube-dc.com (as {SERVICE_ACCOUNT_USER}): "
        "apply manifests/rbac.yaml (ClusterRole acme-gateway-reconciler and its ClusterRoleBinding)"
    ]


async def test_missing_verbs_are_grouped_per_resource_and_namespace() -> None:
    requirements = access.for_policy(Policy(), namespaces=["team-a", "team-b"])

    def allowed(a: Mapping[str, str]) -> bool:
        return not (a["resource"] == "services" and a.get("namespace") == "team-b" and not a.get("subresource"))

    assert await failure(FakeApi(allowed=allowed), requirements) == [
        f"not allowed to list, watch, patch, get services in namespace team-b (as {SERVICE_ACCOUNT_USER}): "
        "apply manifests/rbac.yaml (ClusterRole acme-gateway-reconciler and its ClusterRoleBinding)"
    ]


async def test_an_identity_without_any_permission_is_one_line() -> None:
    user = "system:serviceaccount:default:nobody"
    lines = await failure(FakeApi(allowed=lambda a: False, user=user))
    checks = sum(len(r.verbs) * len(r.namespaces) for r in EVERYTHING)
    assert lines == [
        f"{user} has none of the {checks} permissions the reconciler needs (e.g. list projects.kube-dc.com): "
        f"bind ClusterRole acme-gateway-reconciler (manifests/rbac.yaml) to {user}: the manifest binds it to "
        "ServiceAccount acme-gateway-reconciler/acme-gateway-reconciler"
    ]


async def test_without_any_permission_and_electing_the_lease_is_named_too() -> None:
    requirements = access.for_policy(Policy(), leader_election_namespace="acme-gateway-reconciler")
    [line] = await failure(FakeApi(allowed=lambda a: False), requirements)
    assert line.startswith(f"{SERVICE_ACCOUNT_USER} has none of the ")
    assert line.endswith(
        "apply manifests/rbac.yaml (ClusterRole acme-gateway-reconciler and its ClusterRoleBinding); and apply "
        "manifests/rbac.yaml (Role acme-gateway-reconciler-leader-election and its RoleBinding)"
    )


async def test_the_lease_in_another_namespace() -> None:
    requirements = access.for_policy(Policy(), leader_election_namespace="ops")
    api = FakeApi(allowed=lambda a: a["resource"] != "leases")
    assert await failure(api, requirements) == [
        "not allowed to get, create, update, list, watch leases.coordination.k8s.io in namespace ops "
        f"(as {SERVICE_ACCOUNT_USER}): grant get, create, update, list, watch on leases.coordination.k8s.io in "
        f"namespace ops to {SERVICE_ACCOUNT_USER} "
        "(manifests/rbac.yaml has Role acme-gateway-reconciler-leader-election for namespace "
        "acme-gateway-reconciler only)"
    ]
    assert {a.get("namespace") for a in api.reviews if a["resource"] == "leases"} == {"ops"}


async def test_unknown_user_gets_the_manifest_fix() -> None:
    def allowed(a: Mapping[str, str]) -> bool:
        return a["resource"] != "backends"

    assert await failure(FakeApi(allowed=allowed, user=None)) == [
        "not allowed to list, watch, create, patch, delete backends.gateway.envoyproxy.io: apply "
        "manifests/rbac.yaml (ClusterRole acme-gateway-reconciler and its ClusterRoleBinding)"
    ]


async def test_crds_and_permissions_are_reported_together() -> None:
    served = discovery(*({req.resource for req in EVERYTHING} - {BACKENDS}))

    def allowed(a: Mapping[str, str]) -> bool:
        return a["resource"] != "events"

    lines = await failure(FakeApi(paths=served, allowed=allowed))
    assert [line.split(": ")[0] for line in lines] == [
        "CRD for backends.gateway.envoyproxy.io/v1alpha1 is not installed",
        f"not allowed to create, get, list, patch events (as {SERVICE_ACCOUNT_USER})",
    ]


# --- reaching the API server -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_a_slow_api_server_is_waited_for() -> None:
    refused = aiohttp.ClientOSError(111, "Connection refused")
    api = FakeApi(version=[refused, ApiError(503, "ServiceUnavailable", "starting"), {"gitVersion": "v1.36.3"}])
    clock = Clock()
    assert await preflight.reach(api, 30, clock, clock.sleep) == {"gitVersion": "v1.36.3"}
    assert clock.sleeps == [0.5, 1.0]


async def test_an_api_server_that_never_answers_gives_up_after_the_wait() -> None:
    api = FakeApi(version=[TimeoutError()])
    clock = Clock()
    with pytest.raises(StartupError) as caught:
        await preflight.reach(api, 10, clock, clock.sleep)
    assert caught.value.exit_code is ExitCode.CLUSTER
    assert caught.value.lines == (
        f"the API server at {HOST} did not answer within 10 s (6 attempts, last: no answer (timed out)): check "
        "that it is running and that this is its address (kubeconfig server, or raise RECONCILER_STARTUP_TIMEOUT "
        "for a slow start)",
    )
    assert sum(clock.sleeps) == 10
    assert max(clock.sleeps) <= preflight.RETRY_CAP


async def test_nothing_listening_is_connection_refused_within_the_wait() -> None:
    (port,) = free_loopback_ports(1)
    client = KubeClient(k8s_client.Configuration(host=f"http://127.0.0.1:{port}"), Metrics(), Limits())
    try:
        with pytest.raises(StartupError) as caught:
            await preflight.run(client, EVERYTHING, 1.0)
    finally:
        await client.close()
    [line] = caught.value.lines
    assert line.startswith(f"the API server at http://127.0.0.1:{port} did not answer within 1 s (")
    assert "last: connection refused)" in line


async def test_rejected_credentials_are_not_retried() -> None:
    api = FakeApi(version=[ApiError(401, "Unauthorized", "Unauthorized")])
    assert await failure(api) == [
        f"the API server at {HOST} rejected our credentials (401 Unauthorized): the token or client certificate "
        "in the kubeconfig (or the ServiceAccount token) is invalid or expired: renew it"
    ]


async def test_a_server_that_is_no_api_server() -> None:
    api = FakeApi(version=[ApiError(404, "Not Found", "404 page not found")])
    assert await failure(api) == [
        f"the API server at {HOST} answered GET /version with 404 Not Found: is the kubeconfig's server address "
        "a Kubernetes API server?"
    ]


async def test_an_untrusted_certificate_is_not_retried() -> None:
    api = FakeApi(version=[ssl.SSLCertVerificationError("certificate verify failed: unable to get local issuer")])
    [line] = await failure(api, wait=30)
    assert line.startswith(f"the API server at {HOST} has a certificate the configured CA does not trust (")
    assert line.endswith("fix the kubeconfig's certificate-authority(-data) or its server address")


async def test_a_built_in_resource_not_served() -> None:
    requirements = access.for_policy(Policy(), leader_election_namespace="acme-gateway-reconciler")
    served = discovery(*{req.resource for req in EVERYTHING})
    assert await failure(FakeApi(paths=served), requirements) == [
        "leases.coordination.k8s.io/v1 is not served by the API server: is this a Kubernetes API server?"
    ]


async def test_a_failing_review_is_one_line() -> None:
    api = FakeApi(allowed=lambda a: (_ for _ in ()).throw(ApiError(500, "InternalError", "etcd is down")))
    assert await failure(api) == [f"start-up checks failed at the API server {HOST}: 500 InternalError: etcd is down"]


def test_requirements_carry_the_lease_only_when_electing() -> None:
    assert not any(r.resource == LEASES for r in EVERYTHING)
    electing = access.for_policy(Policy(), leader_election_namespace="ns")
    [lease] = [r for r in electing if r.resource == LEASES]
    assert lease == Requirement(LEASES, ("get", "create", "update", "list", "watch"), ("ns",), lease=True)
    assert next(r for r in EVERYTHING if r.resource == SERVICES).namespaces == (None,)
