"""Issue 9 on the real API server, as a hostile tenant would try it: one test per hole found in the landed
version, domain claims both ways, the claims' RBAC, fair concurrency, and zero writes where we have no
business. The reconciler runs as its ServiceAccount under the shipped RBAC."""

from __future__ import annotations

import secrets
import zlib
from typing import Any

import anyio
import pytest

from testbed.certmanager import SolverConfig
from testbed.gatewaycheck import RoutedToBackend, solver_service
from testbed.harness import CertManager, Metrics, ProjectFactory, StartReconciler
from testbed.kube import (
    BACKENDS,
    CHALLENGES,
    CLUSTERROLEBINDINGS,
    DOMAINCLAIMS,
    EVENTS,
    HTTPROUTES,
    PROJECTS,
    ROLEBINDINGS,
    SERVICES,
    ApiError,
    Kube,
    Obj,
    wait_for,
)
from testbed.kubedc import ensure_namespace
from tests.e2e.test_reconciler import (
    DOMAIN_LABEL,
    MANAGED_BY,
    SOLVER_LABEL,
    TOKEN_LABEL,
    WIRE_WITHIN,
    assert_clean,
    warnings_for,
    wired,
    writes,
)

pytestmark = pytest.mark.anyio

FINAL = ("valid", "invalid", "errored", "expired")
QUIET = 3.0
"""Seconds we watch for a write that must not happen (the reconciler wires in ~0.1 s)."""
ROUTE_PORT = "service.nlb.kube-dc.com/route-port"


def host(label: str) -> str:
    """A name no other test uses (claims are cluster-scoped and outlive a test's namespaces)."""
    return f"{label}-{secrets.token_hex(4)}.example.test"


async def companion(api: Kube, ch: Obj) -> Obj | None:
    svc = await solver_service(api, ch)
    if svc is None:
        return None
    return await api.get_or_none(HTTPROUTES, f"{svc['metadata']['name']}-acme", ch["metadata"]["namespace"])


async def warned(api: Kube, namespace: str, name: str, reason: str) -> bool:
    return reason in await warnings_for(api, namespace, name)


async def our_events(api: Kube, namespace: str) -> list[Obj]:
    return [
        e
        for e in await api.list(EVENTS, namespace)
        if e.get("source", {}).get("component") == "acme-gateway-reconciler"
    ]


def refusals(m: Metrics, reason: str) -> float:
    return m.total("acme_gateway_refusals_total", reason=reason)


# --- hole 1: a Backend we did not make is never routed to ------------------------------------------------


async def test_a_tenants_own_backend_of_the_solvers_name_is_never_routed_to(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    ch = await cert_manager.challenge(p.namespace, host("rogue"), finalizer=False)
    objects = await cert_manager.present(ch)
    svc_name = objects.service["metadata"]["name"]
    rogue = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": f"{svc_name}-backend"},  # no managed-by label, the tenant's own
        "spec": {"endpoints": [{"ip": {"address": "127.66.99.99", "port": 443}}]},
    }
    await api.create(BACKENDS, rogue, p.namespace)
    rec = await reconciler(args=["--namespaces", p.namespace])

    await wait_for(lambda: warned(api, p.namespace, svc_name, "UntrustedBackend"), within=WIRE_WITHIN, what="refused")
    await wait_for(
        lambda: warned(api, p.namespace, ch["metadata"]["name"], "UntrustedBackend"),
        within=WIRE_WITHIN,
        what="shown on the Challenge too",
    )
    await anyio.sleep(QUIET)
    assert await companion(api, ch) is None, "no route to a Backend we did not make"
    after = await api.get(BACKENDS, f"{svc_name}-backend", p.namespace)
    assert after["spec"]["endpoints"] == rogue["spec"]["endpoints"], "and it is never edited"
    m = await rec.metrics()
    assert refusals(m, "UntrustedBackend") == 1
    assert writes(m, kind="HTTPRoute") == 0
    assert writes(m, kind="Backend") == 0
    assert_clean(m, rec)


async def test_a_backend_swapped_under_a_wired_solver_loses_its_route(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    """The tenant deletes our Backend and puts its own in place: the companion must go at once."""
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, host("swap"), finalizer=False)
    await cert_manager.present(ch)
    svc, backend, _ = await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired")
    # The tenant (namespace admin) takes our Backend over: its own label, an address of its choosing.
    takeover = {
        "metadata": {"labels": {MANAGED_BY: "tenant"}},
        "spec": {"endpoints": [{"ip": {"address": "127.66.9.9", "port": 22}}]},
    }
    await api.patch(BACKENDS, backend["metadata"]["name"], takeover, p.namespace)
    await wait_for(lambda: _gone(api, ch), within=WIRE_WITHIN, what="companion route removed")
    await wait_for(
        lambda: warned(api, p.namespace, svc["metadata"]["name"], "UntrustedBackend"), within=WIRE_WITHIN, what="warned"
    )
    assert_clean(await rec.metrics(), rec)


async def _gone(api: Kube, ch: Obj) -> bool:
    return await companion(api, ch) is None


# --- hole 2: a deleted Project gets no writes -------------------------------------------------------------


async def test_a_deleted_project_gets_no_writes_and_its_solver_is_left_as_it_is(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, host("orphan"), finalizer=False)
    await cert_manager.present(ch)
    svc, backend, route = await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired")
    before = await rec.metrics()

    await api.delete(PROJECTS, p.name, p.org_namespace)
    # Wake every loop for the solver: the Challenge and the Service change, as cert-manager's work would.
    await api.patch(CHALLENGES, ch["metadata"]["name"], {"metadata": {"labels": {"touched": "1"}}}, p.namespace)
    await api.patch(SERVICES, svc["metadata"]["name"], {"metadata": {"labels": {"touched": "1"}}}, p.namespace)
    await anyio.sleep(QUIET)

    after = await rec.metrics()
    assert writes(after) == writes(before), "not one write in a namespace no Project owns"
    now = await api.get(HTTPROUTES, route["metadata"]["name"], p.namespace)
    assert now["metadata"]["resourceVersion"] == route["metadata"]["resourceVersion"], "left as it is"
    kept = await api.get(BACKENDS, backend["metadata"]["name"], p.namespace)
    assert kept["metadata"]["resourceVersion"] == backend["metadata"]["resourceVersion"]
    assert_clean(after, rec)


# --- hole 3: domain claims ----------------------------------------------------------------------------------


async def claim(api: Kube, name: str) -> Obj | None:
    return await api.get_or_none(DOMAINCLAIMS, name)


async def test_a_name_is_claimed_first_come_and_another_project_is_never_wired_for_it(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    a, b = await project("cloud"), await project("cloud")
    rec = await reconciler(args=["--namespaces", f"{a.namespace},{b.namespace}"])
    name = host("shop")
    ch_a = await cert_manager.challenge(a.namespace, name, finalizer=False)
    await cert_manager.present(ch_a)
    await wait_for(lambda: wired(api, ch_a), within=WIRE_WITHIN, what="A wired")
    owned = await claim(api, name)
    assert owned is not None
    assert owned["spec"] == {
        "hostname": name,
        "project": {"organization": a.org_namespace, "name": a.name},
        "namespace": a.namespace,
    }

    ch_b = await cert_manager.challenge(b.namespace, name, finalizer=False)
    objects_b = await cert_manager.present(ch_b)
    svc_b = objects_b.service["metadata"]["name"]
    await wait_for(
        lambda: warned(api, b.namespace, ch_b["metadata"]["name"], "DomainClaimed"),
        within=WIRE_WITHIN,
        what="B refused",
    )
    await wait_for(lambda: warned(api, b.namespace, svc_b, "DomainClaimed"), within=WIRE_WITHIN, what="warned")
    await anyio.sleep(QUIET)
    b_svc = await api.get(SERVICES, svc_b, b.namespace)
    assert b_svc["metadata"]["resourceVersion"] == objects_b.service["metadata"]["resourceVersion"], "never exposed"
    assert await api.list(BACKENDS, b.namespace) == []
    assert await companion(api, ch_b) is None
    recorded = await claim(api, name)
    assert recorded is not None
    assert recorded["status"]["refusedChallenges"] == 1
    assert [c["type"] for c in recorded["status"]["conditions"]] == ["Contested"]
    events = [e["message"] for e in await our_events(api, b.namespace)]
    assert not any(a.namespace in msg or a.name in msg for msg in events), "the owner is not disclosed to B"
    m = await rec.metrics()
    assert refusals(m, "DomainClaimed") == 1
    assert writes(m, kind="DomainClaim", verb="create", result="success") == 1

    # An operator transfers the claim: B gets in.
    transfer = {"spec": {"project": {"organization": b.org_namespace, "name": b.name}, "namespace": b.namespace}}
    await api.patch(DOMAINCLAIMS, name, transfer)
    await wait_for(lambda: wired(api, ch_b), within=WIRE_WITHIN, what="B wired after the transfer")
    await wait_for(lambda: _gone(api, ch_a), within=WIRE_WITHIN, what="A's companion removed: no longer A's name")
    assert_clean(await rec.metrics(), rec)


async def test_a_name_another_namespace_serves_counts_as_claimed(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    a, b = await project("cloud"), await project("cloud")
    name = host("served")
    served = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {
            "parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}],
            "hostnames": [name],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    }
    await api.create(HTTPROUTES, served, a.namespace)
    rec = await reconciler(args=["--namespaces", b.namespace])
    ch_b = await cert_manager.challenge(b.namespace, name, finalizer=False)
    await cert_manager.present(ch_b)
    await wait_for(
        lambda: warned(api, b.namespace, ch_b["metadata"]["name"], "DomainClaimed"), within=WIRE_WITHIN, what="refused"
    )
    await anyio.sleep(QUIET)
    assert await api.list(BACKENDS, b.namespace) == []
    assert await claim(api, name) is None, "no claim is made for a name someone else serves"
    # A stops serving it: the name is free again and B gets it.
    await api.delete(HTTPROUTES, "web", a.namespace)
    await wait_for(lambda: wired(api, ch_b), within=WIRE_WITHIN, what="B wired once the name is free")
    assert_clean(await rec.metrics(), rec)


async def test_tenants_cannot_write_claims_and_operators_can(api: Kube, project: ProjectFactory) -> None:
    """With the shipped RBAC: a tenant is a namespace admin of its project (as kube-dc binds them); the
    operator role is bound explicitly. The real RBAC of the API server decides."""
    p = await project("cloud")
    tenant, operator = f"tenant-{secrets.token_hex(3)}", f"operator-{secrets.token_hex(3)}"
    await api.create(
        ROLEBINDINGS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "tenant-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": tenant}],
        },
        p.namespace,
    )
    await api.create(
        CLUSTERROLEBINDINGS,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": operator},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "acme-gateway-reconciler:domainclaims-admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": operator}],
        },
    )
    name = host("rbac")
    body = {
        "apiVersion": "acme-gateway.kube-dc.com/v1alpha1",
        "kind": "DomainClaim",
        "metadata": {"name": name},
        "spec": {
            "hostname": name,
            "project": {"organization": p.org_namespace, "name": p.name},
            "namespace": p.namespace,
        },
    }
    async with api.impersonating(tenant) as as_tenant:
        for attempt in (
            as_tenant.create(DOMAINCLAIMS, body),
            as_tenant.list(DOMAINCLAIMS),
        ):
            with pytest.raises(ApiError) as denied:
                await attempt
            assert denied.value.status == 403
    async with api.impersonating(operator) as as_operator:
        await as_operator.create(DOMAINCLAIMS, body)
        await as_operator.patch(DOMAINCLAIMS, name, {"spec": {"namespace": "elsewhere"}})
        await as_operator.delete(DOMAINCLAIMS, name)
    async with api.impersonating(tenant) as as_tenant:
        await api.create(DOMAINCLAIMS, body)
        for attempt in (
            as_tenant.patch(DOMAINCLAIMS, name, {"spec": {"namespace": p.namespace}}),
            as_tenant.delete(DOMAINCLAIMS, name),
        ):
            with pytest.raises(ApiError) as denied:
                await attempt
            assert denied.value.status == 403
    await api.delete(DOMAINCLAIMS, name)


async def test_a_claim_must_be_named_after_its_hostname(api: Kube) -> None:
    body = {
        "apiVersion": "acme-gateway.kube-dc.com/v1alpha1",
        "kind": "DomainClaim",
        "metadata": {"name": "innocent.example.test"},
        "spec": {"hostname": "victim.example.test", "project": {"organization": "o", "name": "p"}, "namespace": "o-p"},
    }
    with pytest.raises(ApiError) as invalid:
        await api.create(DOMAINCLAIMS, body)
    assert invalid.value.status == 422, "one claim object per name: the CRD's rule"


# --- hole 4: bounded tenant input ----------------------------------------------------------------------------


async def test_a_200_kb_annotation_gives_bounded_log_lines_and_events(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, host("huge"), finalizer=False)
    objects = await cert_manager.present(ch)
    name = objects.service["metadata"]["name"]
    huge = "9" * 200_000
    await api.patch(SERVICES, name, {"metadata": {"annotations": {ROUTE_PORT: huge}}}, p.namespace)
    await wait_for(lambda: warned(api, p.namespace, name, "InvalidRoutePort"), within=WIRE_WITHIN, what="refused")
    longest = max(len(line) for line in rec.log().splitlines())
    assert longest < 4096, f"a log line of {longest} characters"
    messages = [e["message"] for e in await our_events(api, p.namespace)]
    assert messages
    assert max(len(m) for m in messages) <= 1024
    assert_clean(await rec.metrics(), rec)


# --- holes 5 and 6: solvers that can never work are refused up front --------------------------------------


def adler(value: str) -> str:
    return str(zlib.adler32(value.encode()))


async def raw_solver(api: Kube, namespace: str, challenge: dict[str, Any], spec: dict[str, Any]) -> tuple[Obj, Obj]:
    """A Challenge as given and a solver Service owned by it, shaped as cert-manager makes them."""
    ch = await api.create(CHALLENGES, challenge, namespace)
    labels = {
        SOLVER_LABEL: "true",
        DOMAIN_LABEL: adler(challenge["spec"]["dnsName"]),
        TOKEN_LABEL: adler(challenge["spec"]["token"]),
    }
    owner = {
        "apiVersion": "acme.cert-manager.io/v1",
        "kind": "Challenge",
        "name": ch["metadata"]["name"],
        "uid": ch["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"generateName": "cm-acme-http-solver-", "labels": labels, "ownerReferences": [owner]},
        "spec": spec,
    }
    return ch, await api.create(SERVICES, svc, namespace)


def challenge_body(dns_name: str, token: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "acme.cert-manager.io/v1",
        "kind": "Challenge",
        "metadata": {"generateName": "bad-"},
        "spec": {
            "authorizationURL": "https://acme.test/authz/1",
            "url": "https://acme.test/chall/1",
            "dnsName": dns_name,
            "token": token,
            "key": key,
            "type": "HTTP-01",
            "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            "solver": {
                "http01": {"gatewayHTTPRoute": {"parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}]}}
            },
        },
    }


SOLVER_PORTS = {"type": "NodePort", "ports": [{"name": "http", "port": 8089, "targetPort": 8089}]}


@pytest.mark.parametrize(
    ("challenge", "spec", "reason"),
    [
        (challenge_body("", "", ""), SOLVER_PORTS, "InvalidChallenge"),  # hole 6
        (
            challenge_body("headless.example.test", "tok-h", "tok-h.k"),
            {"clusterIP": "None"},
            "UnusableSolverService",
        ),  # hole 5
    ],
    ids=["empty-challenge", "headless-no-ports"],
)
async def test_a_solver_that_can_never_work_is_refused_once_and_never_patched(
    api: Kube,
    project: ProjectFactory,
    reconciler: StartReconciler,
    challenge: dict[str, Any],
    spec: dict[str, Any],
    reason: str,
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch, svc = await raw_solver(api, p.namespace, challenge, spec)
    name = svc["metadata"]["name"]
    await wait_for(lambda: warned(api, p.namespace, name, reason), within=WIRE_WITHIN, what="refused")
    await wait_for(
        lambda: warned(api, p.namespace, ch["metadata"]["name"], reason),
        within=WIRE_WITHIN,
        what="shown on the Challenge",
    )
    # Every change of a Service in the namespace wakes the solvers: no retry loop may follow.
    for i in range(4):
        other = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"other-{i}"},
            "spec": {"ports": [{"port": 80}]},
        }
        await api.create(SERVICES, other, p.namespace)
    await anyio.sleep(QUIET)
    after = await api.get(SERVICES, name, p.namespace)
    assert after["metadata"]["resourceVersion"] == svc["metadata"]["resourceVersion"], "no write"
    ours = [e for e in await our_events(api, p.namespace) if e["reason"] == reason]
    assert len(ours) == 2, "one Event on the Service and one on the Challenge"
    m = await rec.metrics()
    assert refusals(m, reason) == 1
    assert writes(m) == 0
    assert_clean(m, rec)


# --- hole 7: one delete per object, a 404 counted as not_found ----------------------------------------------


async def test_a_companion_is_deleted_once_and_a_404_is_not_a_success(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, host("once"), finalizer=False)
    await cert_manager.present(ch)
    svc, _, route = await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired")
    await api.delete(SERVICES, svc["metadata"]["name"], p.namespace)  # cert-manager's clean-up
    await wait_for(
        lambda: _absent(api, HTTPROUTES, route["metadata"]["name"], p.namespace),
        within=WIRE_WITHIN,
        what="companion gone",
    )
    await anyio.sleep(1.0)
    m = await rec.metrics()
    deletes = m.total("acme_gateway_writes_total", kind="HTTPRoute", verb="delete")
    assert deletes <= 1, "one delete per object, whoever wins against the garbage collector"
    assert deletes == writes(m, kind="HTTPRoute", verb="delete", result="success") + writes(
        m, kind="HTTPRoute", verb="delete", result="not_found"
    )
    assert_clean(m, rec)


async def _absent(api: Kube, resource: Any, name: str, namespace: str) -> bool:
    return await api.get_or_none(resource, name, namespace) is None


# --- fair concurrency -------------------------------------------------------------------------------------------


async def test_twenty_five_challenges_with_a_limit_of_ten_never_exceed_it_and_all_finish(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    args = ["--namespaces", p.namespace, "--max-challenges-per-project", "10", "--service-workers", "4"]
    rec = await reconciler(args=args)
    history: list[tuple[int, str, str, bool]] = []  # (resourceVersion, kind, name, exposed|final)
    owner: dict[str, str] = {}  # solver Service -> its Challenge
    waiting_seen = 0.0

    async def record(resource: Any, kind: str, since: str) -> None:
        async for event in api.watch(resource, p.namespace, resource_version=since):
            if event.type == "BOOKMARK":
                continue
            obj = event.object
            rv, name = int(obj["metadata"]["resourceVersion"]), obj["metadata"]["name"]
            if kind == "Service":
                refs = obj["metadata"].get("ownerReferences") or [{}]
                owner[name] = refs[0].get("name", "")
                history.append((rv, kind, name, event.type != "DELETED" and obj["spec"]["type"] == "LoadBalancer"))
            else:
                final = event.type == "DELETED" or obj.get("status", {}).get("state") in FINAL
                history.append((rv, kind, name, final))

    # All 25 exist before cert-manager's solver loop starts, so their solvers arrive together (as in a
    # renewal storm) and the limit is met in practice, whatever the machine's speed. The watches start
    # from a resourceVersion taken before anything was made, so they miss nothing.
    since = (await api.list_raw(CHALLENGES, p.namespace))["metadata"]["resourceVersion"]
    challenges = [await cert_manager.challenge(p.namespace, host(f"c{i}")) for i in range(25)]
    names = {ch["metadata"]["name"] for ch in challenges}
    # Each challenge stays under way a few seconds once routed (3 passes 1 s apart), as validation takes.
    slow = SolverConfig(
        self_check=RoutedToBackend(api), required_passes=3, pass_interval=1.0, retry_period=1.0, give_up_after=120
    )
    await cert_manager.start(slow, namespaces=[p.namespace])  # outside our task group
    async with anyio.create_task_group() as tg:
        tg.start_soon(record, SERVICES, "Service", since)
        tg.start_soon(record, CHALLENGES, "Challenge", since)

        async def all_valid() -> bool:
            nonlocal waiting_seen
            waiting_seen = max(waiting_seen, (await rec.metrics()).total("acme_gateway_challenges_waiting"))
            states = {
                c["metadata"]["name"]: c.get("status", {}).get("state") for c in await api.list(CHALLENGES, p.namespace)
            }
            return all(states.get(n) == "valid" for n in names)

        await wait_for(all_valid, within=240, interval=0.2, what="all 25 challenges valid")
        await anyio.sleep(0.5)  # the last watch events
        tg.cancel_scope.cancel()

    # Replay both streams in etcd's own order (resourceVersions are one global sequence): how many
    # solvers were exposed while their Challenge was still under way, at any instant.
    exposed: dict[str, bool] = {}
    final: dict[str, bool] = {}
    most = 0
    for _, kind, name, flag in sorted(history):
        (exposed if kind == "Service" else final)[name] = flag
        now = sum(1 for svc, on in exposed.items() if on and svc in owner and not final.get(owner[svc], False))
        most = max(most, now)
    assert most <= 10, f"{most} solvers exposed at once"
    assert most == 10, "the limit was reached in practice, not avoided by slowness"
    assert waiting_seen > 0, "the waiting gauge showed the held-back challenges"
    assert len([e for e in await our_events(api, p.namespace) if e["reason"] == "ConcurrencyLimitReached"]) >= 1
    assert_clean(await rec.metrics(), rec)


# --- zero writes where we have no business -------------------------------------------------------------------


async def test_a_public_project_and_a_namespace_without_a_project_get_nothing_at_all(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler, namespaces: Any
) -> None:
    public = await project("public")
    bare = await namespaces("noproject")
    await ensure_namespace(api, bare)
    objects = []
    for ns in (public.namespace, bare):
        ch = await cert_manager.challenge(ns, host("none"), finalizer=False)
        objects.append((ns, ch, await cert_manager.present(ch)))
        forged = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "forged", "labels": {SOLVER_LABEL: "true", DOMAIN_LABEL: "1", TOKEN_LABEL: "1"}},
            "spec": {"ports": [{"port": 8089}]},
        }
        await api.create(SERVICES, forged, ns)
    rec = await reconciler(args=["--namespaces", f"{public.namespace},{bare}"])
    await anyio.sleep(QUIET)
    m = await rec.metrics()
    assert writes(m) == 0
    for ns, ch, solver in objects:
        svc = await api.get(SERVICES, solver.service["metadata"]["name"], ns)
        assert svc["metadata"]["resourceVersion"] == solver.service["metadata"]["resourceVersion"]
        assert await our_events(api, ns) == [], f"not even a refusal Event in {ns}"
        assert await api.list(BACKENDS, ns) == []
        assert await claim(api, ch["spec"]["dnsName"]) is None
    assert m.total("acme_gateway_refusals_total") == 0
    assert_clean(m, rec)
