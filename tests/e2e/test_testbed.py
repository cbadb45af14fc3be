"""Smoke tests of the test bed itself: if these fail, no e2e result about the reconciler means anything."""

from __future__ import annotations

import zlib

import anyio
import pytest

from testbed.certmanager import (
    DEFAULT_PARENT_REFS,
    FINALIZER,
    SolverConfig,
    set_state,
)
from testbed.controlplane import RECONCILER_GROUPS, RECONCILER_USER, ControlPlane
from testbed.harness import CertManager, NamespaceFactory, ProjectFactory, StartReconciler
from testbed.kube import (
    CHALLENGES,
    CONFIGMAPS,
    CRDS,
    EVENTS,
    HTTPROUTES,
    NAMESPACES,
    PODS,
    PROJECTS,
    SERVICES,
    ApiError,
    Kube,
    Obj,
    wait_for,
)
from testbed.kubedc import BIND_ON_DEFAULT_GW_EIP, BIND_ON_EIP, REASON_PORT_IN_USE

pytestmark = pytest.mark.anyio


def lb_service(namespace: str, name: str, port: int, annotations: dict[str, str]) -> Obj:
    """A LoadBalancer Service as a tenant would write it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": port, "targetPort": port}]},
    }


def ingress_ips(svc: Obj | None) -> list[str]:
    """Addresses in status.loadBalancer.ingress."""
    ingress = ((svc or {}).get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ingress]


async def test_apiserver_ready_and_identities(control_plane: ControlPlane, api: Kube) -> None:
    assert await api.get_text("/readyz") == (200, "ok")
    assert (await api.whoami())["groups"] == ["system:masters", "system:authenticated"]
    async with Kube.from_kubeconfig(control_plane.reconciler_kubeconfig) as sa:
        who = await sa.whoami()
        assert who["username"] == RECONCILER_USER
        assert set(who["groups"]) == set(RECONCILER_GROUPS)
        # RBAC is really enforced: the ServiceAccount identity has no grants yet.
        with pytest.raises(ApiError) as err:
            await sa.list(CRDS)
        assert err.value.status == 403


async def test_all_crds_established_and_served(control_plane: ControlPlane, api: Kube) -> None:
    assert len(control_plane.crd_names) == 15, "the 14 upstream CRDs and our DomainClaim"
    for name in control_plane.crd_names:
        crd = await api.get(CRDS, name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", name
    assert isinstance(await api.list(HTTPROUTES), list)  # served (other tests may have made some)


async def test_project_is_valid_and_schema_is_enforced(
    api: Kube, project: ProjectFactory, namespaces: NamespaceFactory
) -> None:
    p = await project("cloud")
    obj = await api.get(PROJECTS, p.name, p.org_namespace)
    assert obj["spec"]["egressNetworkType"] == "cloud"
    assert obj["status"]["namespace"] == p.namespace == f"{p.org_namespace}-{p.name}"
    assert await api.get_or_none(NAMESPACES, p.namespace)

    org = await namespaces("org")
    bad = {
        "apiVersion": "kube-dc.com/v1",
        "kind": "Project",
        "metadata": {"name": "bad", "namespace": org},
        "spec": {"cidrBlock": "10.0.0.0/24", "egressNetworkType": "private"},
    }
    with pytest.raises(ApiError) as err:
        await api.create(PROJECTS, bad)
    assert err.value.status == 422
    # CEL immutability rule from the upstream CRD.
    with pytest.raises(ApiError) as err:
        await api.patch(PROJECTS, p.name, {"spec": {"egressNetworkType": "public"}}, p.org_namespace)
    assert "immutable" in err.value.message


async def test_kubedc_assigns_address_and_refuses_duplicate_port(api: Kube, project: ProjectFactory) -> None:
    p = await project("cloud")
    ns = p.namespace
    await api.create(SERVICES, lb_service(ns, "first", 8089, {BIND_ON_DEFAULT_GW_EIP: "true"}))
    first = await wait_for(lambda: _with_ip(api, ns, "first"), what="first service to get the project address")
    assert ingress_ips(first) == [p.address]

    await anyio.sleep(1.1)  # creationTimestamp has 1 s resolution: make the order unambiguous
    await api.create(SERVICES, lb_service(ns, "second", 8089, {BIND_ON_EIP: "default-gw"}))
    await api.create(SERVICES, lb_service(ns, "other-port", 8090, {BIND_ON_EIP: "default-gw"}))
    await api.create(SERVICES, lb_service(ns, "unannotated", 8091, {}))

    async def port_in_use_event() -> Obj | None:
        events = await api.list(EVENTS, ns, field_selector="involvedObject.name=second")
        return next((e for e in events if e["reason"] == REASON_PORT_IN_USE), None)

    event = await wait_for(port_in_use_event, what="PortInUse event on the second service")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Service"
    assert "8089/TCP" in event["message"]
    other = await wait_for(lambda: _with_ip(api, ns, "other-port"), what="other port bound")
    assert ingress_ips(other) == [p.address]
    assert ingress_ips(await api.get(SERVICES, "second", ns)) == []
    assert ingress_ips(await api.get(SERVICES, "unannotated", ns)) == []

    # The port frees up when the first service goes: the refused one is bound then.
    await api.delete(SERVICES, "first", ns)
    second = await wait_for(lambda: _with_ip(api, ns, "second"), what="second bound after first deleted")
    assert ingress_ips(second) == [p.address]


async def _with_ip(api: Kube, namespace: str, name: str) -> Obj | None:
    svc = await api.get_or_none(SERVICES, name, namespace)
    return svc if ingress_ips(svc) else None


async def test_cert_manager_present_creates_exact_objects_and_reverts_route(
    api: Kube, namespaces: NamespaceFactory, cert_manager: CertManager
) -> None:
    ns = await namespaces("acme")
    ch = await cert_manager.challenge(ns, "app.example.test", finalizer=False)
    objects = await cert_manager.present(ch)
    labels = {
        "acme.cert-manager.io/http-domain": str(zlib.adler32(b"app.example.test")),
        "acme.cert-manager.io/http-token": str(zlib.adler32(ch["spec"]["token"].encode())),
        "acme.cert-manager.io/http01-solver": "true",
    }
    owner = {
        "apiVersion": "acme.cert-manager.io/v1",
        "kind": "Challenge",
        "name": ch["metadata"]["name"],
        "uid": ch["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for obj in (objects.pod, objects.service, objects.route):
        assert obj["metadata"]["name"].startswith("cm-acme-http-solver-")
        assert obj["metadata"]["labels"] == labels
        assert obj["metadata"]["ownerReferences"] == [owner]

    svc = objects.service
    assert svc["metadata"]["annotations"] == {"auth.istio.io/8089": "NONE"}
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"] == labels
    [port] = svc["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", 8089, 8089)

    [container] = objects.pod["spec"]["containers"]
    assert container["name"] == "acmesolver"
    assert container["args"] == [
        "--listen-port=8089",
        "--domain=app.example.test",
        f"--token={ch['spec']['token']}",
        f"--key={ch['spec']['key']}",
    ]

    route_spec = {
        "parentRefs": [dict(p) for p in DEFAULT_PARENT_REFS],
        "hostnames": ["app.example.test"],
        "rules": [
            {
                "matches": [
                    {
                        "path": {
                            "type": "Exact",
                            "value": f"/.well-known/acme-challenge/{ch['spec']['token']}",
                        }
                    }
                ],
                "backendRefs": [
                    {
                        "group": "",
                        "kind": "Service",
                        "name": svc["metadata"]["name"],
                        "namespace": ns,
                        "port": 8089,
                        "weight": 1,
                    }
                ],
            }
        ],
    }
    assert objects.route["spec"] == route_spec

    # Idempotent: the API server's defaulting leaves the generated spec alone, so no update happens.
    again = await cert_manager.present(ch)
    assert not again.route_reverted
    assert again.route["metadata"]["resourceVersion"] == objects.route["metadata"]["resourceVersion"]

    # The revert: another controller's edit of the route (spec or labels) is put back by a full update.
    route_name = objects.route["metadata"]["name"]
    backend = {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "x-backend", "port": 8089}
    patch = [{"op": "replace", "path": "/spec/rules/0/backendRefs", "value": [backend]}]
    await api.patch(HTTPROUTES, route_name, patch, ns, type="json")
    await api.patch(HTTPROUTES, route_name, {"metadata": {"labels": {"extra": "x"}}}, ns)
    reverted = await cert_manager.present(ch)
    assert reverted.route_reverted
    assert reverted.route["spec"] == route_spec
    assert reverted.route["metadata"]["labels"] == labels

    # The Service is never reverted: a type change sticks.
    await api.patch(SERVICES, svc["metadata"]["name"], {"spec": {"type": "LoadBalancer"}}, ns)
    after = await cert_manager.present(ch)
    assert after.service["spec"]["type"] == "LoadBalancer"
    assert len(await api.list(SERVICES, ns)) == 1


async def test_solver_loop_lifecycle_cleanup_and_garbage_collection(
    api: Kube, namespaces: NamespaceFactory, cert_manager: CertManager
) -> None:
    ns = await namespaces("acme")
    reachable = anyio.Event()

    async def self_check(ch: Obj) -> bool:
        return reachable.is_set()

    config = SolverConfig(self_check=self_check, required_passes=2, pass_interval=0.05, retry_period=0.3)
    loop = await cert_manager.start(config, namespaces=[ns])
    ch = await cert_manager.challenge(ns, "loop.example.test")
    name = ch["metadata"]["name"]
    assert ch["metadata"]["finalizers"] == [FINALIZER]

    async def status(field: str, value: object) -> Obj | None:
        fresh = await api.get(CHALLENGES, name, ns)
        return fresh if fresh.get("status", {}).get(field) == value else None

    await wait_for(lambda: status("presented", True), what="challenge presented")
    fresh = await api.get(CHALLENGES, name, ns)
    assert fresh["status"]["state"] == "pending"
    assert fresh["status"]["processing"] is True
    [route] = await api.list(HTTPROUTES, ns)

    # While the self-check fails, every retry Presents again and so reverts an edited route.
    await api.patch(HTTPROUTES, route["metadata"]["name"], {"spec": {"hostnames": ["other.test"]}}, ns)

    async def route_reverted() -> bool:
        current = await api.get(HTTPROUTES, route["metadata"]["name"], ns)
        return bool(current["spec"]["hostnames"] == ["loop.example.test"])

    await wait_for(route_reverted, within=5, what="route reverted by a retry")

    async def revert_counted() -> bool:  # counted once present() returns, just after the PUT
        return loop.runs[(ns, name)].reverts >= 1

    await wait_for(revert_counted, within=5, what="revert counted")

    reachable.set()
    await wait_for(lambda: status("processing", False), what="challenge finished")
    fresh = await api.get(CHALLENGES, name, ns)
    assert fresh["status"]["state"] == "valid"
    assert fresh["status"]["presented"] is False
    # CleanUp removed Pods and Services, not the HTTPRoute.
    assert await api.list(PODS, ns) == []
    assert await api.list(SERVICES, ns) == []
    assert len(await api.list(HTTPROUTES, ns)) == 1

    # Deleting the Challenge: the loop drops its finalizer, then the garbage collector removes the route.
    await api.delete(CHALLENGES, name, ns)
    await wait_for(lambda: _gone(api, ns, name), within=10, what="challenge deleted (finalizer removed)")

    async def routes_gone() -> bool:
        return await api.list(HTTPROUTES, ns) == []

    await wait_for(routes_gone, within=30, what="garbage collector to delete the HTTPRoute")


async def _gone(api: Kube, namespace: str, name: str) -> bool:
    return await api.get_or_none(CHALLENGES, name, namespace) is None


async def test_solver_loop_marks_failures_and_cleans_up(
    api: Kube, namespaces: NamespaceFactory, cert_manager: CertManager
) -> None:
    ns = await namespaces("acme")

    async def never(ch: Obj) -> bool:
        return False

    await cert_manager.start(
        SolverConfig(self_check=never, required_passes=1, pass_interval=0.05, retry_period=0.2),
        namespaces=[ns],
    )
    ch = await cert_manager.challenge(ns, "fail.example.test")
    name = ch["metadata"]["name"]

    async def presented() -> bool:
        fresh = await api.get(CHALLENGES, name, ns)
        return bool(fresh.get("status", {}).get("presented")) and len(await api.list(SERVICES, ns)) == 1

    await wait_for(presented, what="challenge presented")
    await set_state(api, ns, name, "invalid", "failed from a test")

    async def cleaned() -> bool:
        fresh = await api.get(CHALLENGES, name, ns)
        return fresh["status"].get("processing") is False and await api.list(SERVICES, ns) == []

    await wait_for(cleaned, what="cleanup after an explicit failure")
    assert (await api.get(CHALLENGES, name, ns))["status"]["state"] == "invalid"


async def test_garbage_collector_cascades(api: Kube, namespaces: NamespaceFactory) -> None:
    ns = await namespaces("gc")
    owner = await api.create(
        CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": ns}}
    )
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    await api.create(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dependent", "namespace": ns, "ownerReferences": [ref]},
        },
    )
    await api.delete(CONFIGMAPS, "owner", ns)

    async def dependent_gone() -> bool:
        return await api.get_or_none(CONFIGMAPS, "dependent", ns) is None

    await wait_for(dependent_gone, within=30, what="garbage collector to delete the dependent")


async def test_reconciler_fixture_starts_serves_and_restarts(reconciler: StartReconciler) -> None:
    proc = await reconciler()
    assert (await proc.get("/healthz")).status_code == 200
    metrics = await proc.metrics()
    assert metrics.samples, "no metrics exposed"
    await proc.restart(crash=True)
    assert proc.starts == 2
    assert (await proc.get("/readyz")).status_code == 200
