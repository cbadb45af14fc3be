"""The reconciler, as `python -m reconciler run`, against the real API server with the upstream CRDs.

It runs as the ServiceAccount identity bound only by `manifests/rbac.yaml`, so every test here is also
an RBAC test, and every write it makes is validated by the real CRD schemas: a rejected write shows up as
`acme_gateway_writes_total{result="rejected"}` and fails `assert_clean`.

The gateway itself is not running here (the full-stack suite has it): `testbed.gatewaycheck` is the
self-check stand-in.
"""

from __future__ import annotations

import zlib
from typing import Any

import anyio
import pytest

from testbed.certmanager import SolverConfig, set_state
from testbed.gatewaycheck import RoutedToBackend, backend_refs, ingress_ip, solver_route, solver_service
from testbed.harness import (
    CertManager,
    Metrics,
    NamespaceFactory,
    Project,
    ProjectFactory,
    ReconcilerProcess,
    StartReconciler,
    forget_namespace,
)
from testbed.kube import BACKENDS, CHALLENGES, EVENTS, HTTPROUTES, SERVICES, Kube, Obj, wait_for
from testbed.kubedc import KubeDC, create_project, ensure_namespace, project_namespace

pytestmark = pytest.mark.anyio

SOLVER_LABEL = "acme.cert-manager.io/http01-solver"
DOMAIN_LABEL = "acme.cert-manager.io/http-domain"
TOKEN_LABEL = "acme.cert-manager.io/http-token"
BIND_ON_EIP = "service.nlb.kube-dc.com/bind-on-eip"
CREATE_BACKEND = "service.nlb.kube-dc.com/create-gateway-backend"
MANAGED_BY = "app.kubernetes.io/managed-by"
BACKEND_GROUP = "gateway.envoyproxy.io"
WIRE_WITHIN = 20.0


# --- helpers -------------------------------------------------------------------------------------------


def fast_solver(api: Kube) -> SolverConfig:
    """cert-manager's loop with its revert-before-check, on a compressed clock."""
    return SolverConfig(
        self_check=RoutedToBackend(api), required_passes=2, pass_interval=0.2, retry_period=1.0, give_up_after=60
    )


async def outcomes_counted(rec: ReconcilerProcess, p: Project, n: int, outcome: str = "success") -> Metrics:
    """Metrics once the reconciler has counted `n` challenge outcomes of this kind for project `p`."""
    label = f"{p.org_namespace}/{p.name}"
    return await rec.metrics_when(
        lambda m: m.total("acme_gateway_challenge_outcomes_total", project=label, outcome=outcome) == n,
        f"{n} {outcome} outcome(s) counted for {label}",
    )


def writes(m: Metrics, **labels: str) -> float:
    return m.total("acme_gateway_writes_total", **labels)


def assert_clean(m: Metrics, rec: ReconcilerProcess) -> None:
    """No write rejected by the API server (CRD schemas, CEL, RBAC), no reconcile crashed, and no RBAC
    denial at all (403s from namespaces other tests are deleting are not RBAC's)."""
    assert writes(m, result="rejected") == 0
    assert m.total("acme_gateway_reconcile_errors_total") == 0
    assert 'User \\"system:serviceaccount' not in rec.log()
    assert 'User "system:serviceaccount' not in rec.log()


async def wired(api: Kube, ch: Obj, mode: str = "shadow") -> tuple[Obj, Obj, Obj] | None:
    """(Service, Backend, the route that reaches the Backend) once the whole chain is in place: the
    companion route in shadow mode, cert-manager's own route in patch mode."""
    svc = await solver_service(api, ch)
    route = await solver_route(api, ch)
    ns = ch["metadata"]["namespace"]
    # The Service as read here must already have its address: read before the Backend, an older
    # snapshot could pair "no address yet" with a Backend made a moment later.
    if svc is None or route is None or svc["spec"]["type"] != "LoadBalancer" or not ingress_ip(svc):
        return None
    backend = await api.get_or_none(BACKENDS, f"{svc['metadata']['name']}-backend", ns)
    if backend is None:
        return None
    if mode == "shadow":
        route = await api.get_or_none(HTTPROUTES, f"{svc['metadata']['name']}-acme", ns)
        if route is None:
            return None
    if any(r.get("kind") != "Backend" for r in backend_refs(route)):
        return None
    return svc, backend, route


async def warnings_for(api: Kube, namespace: str, name: str) -> set[str]:
    events = await api.list(EVENTS, namespace)
    return {
        e["reason"]
        for e in events
        if e["involvedObject"]["name"] == name
        and e["type"] == "Warning"
        and e.get("source", {}).get("component") == "acme-gateway-reconciler"
    }


# --- tests ---------------------------------------------------------------------------------------------


async def test_cloud_project_challenge_is_wired_end_to_end(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    await cert_manager.start(fast_solver(api), namespaces=[p.namespace])
    ch = await cert_manager.challenge(p.namespace, "app.example.test")

    svc, backend, route = await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="solver wired")
    name = svc["metadata"]["name"]
    annotations = svc["metadata"]["annotations"]
    assert annotations[BIND_ON_EIP] == "default-gw"
    assert annotations[CREATE_BACKEND] == "true"
    assert svc["spec"]["ports"][0]["port"] == 8089
    assert svc["spec"]["ports"][0]["targetPort"] == 8089
    assert ingress_ip(svc) == p.address

    assert backend["spec"]["endpoints"] == [{"ip": {"address": p.address, "port": 8089}}]
    assert backend["metadata"]["labels"][MANAGED_BY] == "acme-gateway-reconciler"
    assert backend["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": name,
            "uid": svc["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert backend_refs(route) == [
        {"group": BACKEND_GROUP, "kind": "Backend", "name": f"{name}-backend", "port": 8089, "weight": 1}
    ]
    assert route["metadata"]["name"] == f"{name}-acme"
    assert route["metadata"]["labels"] == {MANAGED_BY: "acme-gateway-reconciler"}
    assert route["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert route["spec"]["rules"][0]["matches"] == [
        {"path": {"type": "Exact", "value": f"/.well-known/acme-challenge/{ch['spec']['token']}"}, "method": "GET"}
    ]
    cert_managers = await solver_route(api, ch)
    assert cert_managers is not None
    assert backend_refs(cert_managers)[0]["kind"] == "Service", "cert-manager's route is never edited"

    async def valid() -> bool:
        fresh = await api.get(CHALLENGES, ch["metadata"]["name"], p.namespace)
        return fresh.get("status", {}).get("state") == "valid"

    await wait_for(valid, within=30, what="challenge valid")
    m = await outcomes_counted(rec, p, 1)
    assert writes(m, kind="Service", verb="patch", result="success") == 1
    assert writes(m, kind="Backend", verb="create", result="success") == 1
    assert writes(m, kind="HTTPRoute", verb="create", result="success") == 1
    assert writes(m, kind="HTTPRoute", verb="patch") == 0
    assert m.total("acme_gateway_route_reverts_total") == 0, "nothing of ours for cert-manager to revert"
    assert m.total("acme_gateway_route_wiring_seconds_count") == 1
    assert m.total("acme_gateway_challenge_outcomes_total", outcome="failure") == 0

    # cert-manager's CleanUp deletes the solver Service; the Backend must not outlive it.
    await wait_for(lambda: _gone(api, SERVICES, name, p.namespace), within=WIRE_WITHIN, what="solver Service gone")
    await wait_for(
        lambda: _gone(api, BACKENDS, f"{name}-backend", p.namespace), within=WIRE_WITHIN, what="Backend gone"
    )
    await wait_for(
        lambda: _gone(api, HTTPROUTES, f"{name}-acme", p.namespace), within=WIRE_WITHIN, what="companion route gone"
    )
    assert_clean(await rec.metrics(), rec)


async def _gone(api: Kube, resource: Any, name: str, namespace: str) -> bool:
    return await api.get_or_none(resource, name, namespace) is None


async def test_failed_challenge_counts_as_failure_once(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, "broken.example.test", finalizer=False)
    await set_state(api, p.namespace, ch["metadata"]["name"], "invalid", "self check never passed")
    await set_state(api, p.namespace, ch["metadata"]["name"], "invalid", "touched again")
    label = f"{p.org_namespace}/{p.name}"
    await rec.metrics_when(
        lambda m: (
            m.value("acme_gateway_challenge_outcomes_total", project=label, outcome="failure", state="invalid") == 1
        ),
        "failure counted",
    )
    # A restarted reconciler finds the challenge already final and does not count it again.
    await rec.restart()
    m = await rec.metrics()
    assert m.total("acme_gateway_challenge_outcomes_total") == 0


async def test_public_unknown_and_look_alike_objects_are_left_alone(
    api: Kube,
    project: ProjectFactory,
    namespaces: NamespaceFactory,
    cert_manager: CertManager,
    reconciler: StartReconciler,
) -> None:
    public = await project("public")
    cloud = await project("cloud")
    unknown_ns = await namespaces("noproject")
    # Scoped, so writes other tests' leftovers cause cannot blur the count below.
    rec = await reconciler(args=["--namespaces", f"{public.namespace},{cloud.namespace},{unknown_ns}"])

    public_ch = await cert_manager.challenge(public.namespace, "pub.example.test", finalizer=False)
    unknown_ch = await cert_manager.challenge(unknown_ns, "unknown.example.test", finalizer=False)
    public_objs = await cert_manager.present(public_ch)
    unknown_objs = await cert_manager.present(unknown_ch)

    # Look-alikes in a cloud project: the solver labels without a Challenge owner, and an owner
    # reference to a Challenge that does not exist.
    labels = {SOLVER_LABEL: "true", DOMAIN_LABEL: str(zlib.adler32(b"x.test")), TOKEN_LABEL: "1"}
    forged = await api.create(SERVICES, _service("forged", labels), cloud.namespace)
    ghost_owner = {
        "apiVersion": "acme.cert-manager.io/v1",
        "kind": "Challenge",
        "name": "ghost",
        "uid": "00000000-0000-0000-0000-000000000001",
        "controller": True,
    }
    ghost = await api.create(SERVICES, _service("ghost", labels, owner=ghost_owner), cloud.namespace)
    forged_route = await api.create(HTTPROUTES, _route("forged-route", labels, "forged"), cloud.namespace)

    # A real challenge in the cloud project proves the reconciler saw and processed the events.
    real = await cert_manager.challenge(cloud.namespace, "real.example.test", finalizer=False)
    await cert_manager.present(real)
    await wait_for(lambda: wired(api, real), within=WIRE_WITHIN, what="control challenge wired")

    async def refused() -> bool:
        forged_ok = "NoChallengeOwner" in await warnings_for(api, cloud.namespace, "forged")
        route_ok = "NoChallengeOwner" in await warnings_for(api, cloud.namespace, "forged-route")
        # The garbage collector deletes a Service whose owner does not exist, and may do so before a
        # worker gets to it: then there is nothing left to refuse, which is as good.
        ghost_ok = "ChallengeNotFound" in await warnings_for(api, cloud.namespace, "ghost") or (
            await api.get_or_none(SERVICES, "ghost", cloud.namespace) is None
        )
        return forged_ok and route_ok and ghost_ok

    await wait_for(refused, within=WIRE_WITHIN, what="Warning events on look-alikes")

    for before in (public_objs.service, unknown_objs.service, forged):
        after = await api.get(SERVICES, before["metadata"]["name"], before["metadata"]["namespace"])
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "untouched"
    # The garbage collector deletes a Service whose owner does not exist; until then it stays untouched.
    ghost_now = await api.get_or_none(SERVICES, "ghost", cloud.namespace)
    assert ghost_now is None or ghost_now["metadata"]["resourceVersion"] == ghost["metadata"]["resourceVersion"]
    for before in (public_objs.route, unknown_objs.route, forged_route):
        after = await api.get(HTTPROUTES, before["metadata"]["name"], before["metadata"]["namespace"])
        assert after["spec"] == before["spec"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "untouched"
    for ns in (public.namespace, unknown_ns):
        assert await api.list(BACKENDS, ns) == []

    m = await rec.metrics()
    # Exactly the control challenge's claim of its name and its three writes; none for the other objects.
    assert writes(m, result="success") == 4
    assert writes(m, kind="DomainClaim", verb="create", result="success") == 1
    assert writes(m, kind="Service", verb="patch", result="success") == 1
    assert writes(m, kind="Backend", verb="create", result="success") == 1
    assert writes(m, kind="HTTPRoute", verb="create", result="success") == 1
    assert m.total("acme_gateway_refusals_total", reason="NoChallengeOwner") == 2  # forged Service and route
    assert m.total("acme_gateway_refusals_total", reason="ChallengeNotFound") <= 1  # 0 if the GC was first
    assert_clean(m, rec)


def _service(name: str, labels: dict[str, str], owner: Obj | None = None) -> Obj:
    meta: Obj = {"name": name, "labels": labels}
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 8089, "targetPort": 8089}]},
    }


def _route(name: str, labels: dict[str, str], service: str) -> Obj:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}],
            "hostnames": ["x.test"],
            "rules": [
                {
                    "matches": [{"path": {"type": "Exact", "value": "/.well-known/acme-challenge/x"}}],
                    "backendRefs": [{"name": service, "port": 8089}],
                }
            ],
        },
    }


async def test_deleting_the_solver_service_garbage_collects_the_backend(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler()
    ch = await cert_manager.challenge(p.namespace, "gc.example.test", finalizer=False)
    await cert_manager.present(ch)
    svc, backend, _ = await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired")
    await rec.kill()  # the garbage collector alone must clean up, through the owner reference
    await api.delete(SERVICES, svc["metadata"]["name"], p.namespace)
    await wait_for(
        lambda: _gone(api, BACKENDS, backend["metadata"]["name"], p.namespace),
        within=60,
        what="Backend garbage-collected",
    )


async def test_a_project_appearing_requeues_its_namespace(
    api: Kube, kubedc: KubeDC, namespaces: NamespaceFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    org = await namespaces("org")
    name = "late"
    ns = project_namespace(org, name)
    await ensure_namespace(api, ns)
    try:
        rec = await reconciler(args=["--resync-period", "0"])  # only the Project's event can trigger it
        ch = await cert_manager.challenge(ns, "late.example.test", finalizer=False)
        await cert_manager.present(ch)
        await anyio.sleep(1.0)
        svc = await solver_service(api, ch)
        assert svc is not None
        assert svc["spec"]["type"] == "NodePort", "no Project yet: unknown, untouched"

        kubedc.assign(ns, "127.65.200.1")
        await create_project(api, org, name, "cloud")
        await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired after the Project appeared")
        assert_clean(await rec.metrics(), rec)
    finally:
        await forget_namespace(api, ns)


async def test_killed_mid_flow_converges_without_duplicates(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, "crash.example.test", finalizer=False)
    await cert_manager.present(ch)

    async def patched() -> Obj | None:
        svc = await solver_service(api, ch)
        return svc if svc and svc["spec"]["type"] == "LoadBalancer" else None

    await wait_for(patched, within=WIRE_WITHIN, what="Service patched")
    await rec.restart(crash=True)  # SIGKILL: no drain, whatever was in flight is lost
    _, backend, _ = await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired after restart")
    assert [b["metadata"]["name"] for b in await api.list(BACKENDS, p.namespace)] == [backend["metadata"]["name"]]

    # A third start on the converged world writes nothing at all.
    await rec.restart()
    await anyio.sleep(1.5)
    m = await rec.metrics()
    assert writes(m) == 0
    assert_clean(m, rec)
    assert len(await api.list(BACKENDS, p.namespace)) == 1
