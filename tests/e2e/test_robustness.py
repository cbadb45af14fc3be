"""Issue 5 on the test bed: cert-manager's reverts, concurrent challenges in one project, forged objects."""

from __future__ import annotations

import anyio
import pytest

from testbed.gatewaycheck import RoutedToBackend, ingress_ip, solver_service
from testbed.harness import CertManager, NamespaceFactory, ProjectFactory, ReconcilerProcess, StartReconciler
from testbed.kube import BACKENDS, CHALLENGES, EVENTS, HTTPROUTES, SERVICES, Kube, wait_for
from tests.e2e.test_reconciler import (
    BIND_ON_EIP,
    DOMAIN_LABEL,
    SOLVER_LABEL,
    TOKEN_LABEL,
    WIRE_WITHIN,
    _service,
    assert_clean,
    fast_solver,
    outcomes_counted,
    warnings_for,
    wired,
    writes,
)

pytestmark = pytest.mark.anyio


async def test_patch_mode_repatches_each_revert_and_counts_the_flaps(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace, "--route-mode", "patch"])
    ch = await cert_manager.challenge(p.namespace, "revert.example.test", finalizer=False)
    await cert_manager.present(ch)
    await wait_for(lambda: wired(api, ch, "patch"), within=WIRE_WITHIN, what="wired")
    for _ in range(2):
        objects = await cert_manager.present(ch)  # cert-manager's revert before a self-check
        assert objects.route_reverted
        await wait_for(lambda: wired(api, ch, "patch"), within=5, what="re-patched after the revert")
    m = await rec.metrics_when(lambda m: m.total("acme_gateway_route_repatches_total") == 2, "re-patches counted")
    assert m.total("acme_gateway_route_reverts_total") == 2
    assert writes(m, kind="HTTPRoute", verb="patch", result="success") == 3
    assert writes(m, kind="HTTPRoute", verb="create") == 0
    assert writes(m, kind="Backend", verb="create") == 1
    assert_clean(m, rec)


async def test_shadow_mode_is_not_reverted(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, "steady.example.test", finalizer=False)
    await cert_manager.present(ch)
    await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired")
    for _ in range(3):
        objects = await cert_manager.present(ch)
        assert not objects.route_reverted, "cert-manager finds its route as it made it"
    assert await RoutedToBackend(api, propagation=0).routed(ch), "the companion route wins by precedence"
    m = await rec.metrics()
    assert m.total("acme_gateway_route_reverts_total") == 0
    assert writes(m, kind="HTTPRoute") == 1
    assert_clean(m, rec)


async def test_ten_concurrent_challenges_in_one_project_all_wire(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    # The project's own service already holds 8090 on the EIP: solvers must keep off it.
    own = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "annotations": {BIND_ON_EIP: "default-gw"}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 8090, "targetPort": 80}]},
    }
    await api.create(SERVICES, own, p.namespace)
    rec = await reconciler(args=["--namespaces", p.namespace, "--service-workers", "4"])
    challenges = [await cert_manager.challenge(p.namespace, f"n{i}.example.test", finalizer=False) for i in range(10)]
    async with anyio.create_task_group() as tg:
        for ch in challenges:
            tg.start_soon(cert_manager.present, ch)
    done = []
    for ch in challenges:
        done.append(await wait_for(lambda ch=ch: wired(api, ch), within=30, what="wired"))  # type: ignore[misc]
    ports = [svc["spec"]["ports"][0]["port"] for svc, _, _ in done]
    assert len(set(ports)) == 10, ports
    assert 8090 not in ports
    assert all(8089 <= port <= 8188 for port in ports)
    for svc, backend, _ in done:
        port = svc["spec"]["ports"][0]["port"]
        assert svc["spec"]["ports"][0]["targetPort"] == 8089
        assert ingress_ip(svc) == p.address, "kube-dc accepted every solver on the shared EIP"
        assert backend["spec"]["endpoints"] == [{"ip": {"address": p.address, "port": port}}]
    events = await api.list(EVENTS, p.namespace)
    assert not [e for e in events if e["reason"] == "PortInUse"], "the platform refused no solver"
    assert_clean(await rec.metrics(), rec)


async def test_a_certificate_with_three_names_issues(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    await cert_manager.start(fast_solver(api), namespaces=[p.namespace])
    names = ["example.test", "www.example.test", "api.example.test"]
    challenges = [await cert_manager.challenge(p.namespace, n) for n in names]

    async def all_valid() -> bool:
        states = [
            (await api.get(CHALLENGES, ch["metadata"]["name"], p.namespace)).get("status", {}).get("state")
            for ch in challenges
        ]
        return states == ["valid"] * 3

    await wait_for(all_valid, within=45, what="three challenges valid")
    m = await outcomes_counted(rec, p, 3)
    assert writes(m, kind="Backend", verb="create", result="success") == 3
    assert_clean(m, rec)


async def test_forged_and_foreign_solver_objects_are_refused(
    api: Kube,
    project: ProjectFactory,
    namespaces: NamespaceFactory,
    cert_manager: CertManager,
    reconciler: StartReconciler,
) -> None:
    p = await project("cloud")
    other = await namespaces("victim")
    rec = await reconciler(args=["--namespaces", p.namespace])

    # Mismatched label values: a Service owned by a real Challenge but labelled for another domain/token.
    ch1 = await cert_manager.challenge(p.namespace, "one.example.test", finalizer=False)
    objs1 = await cert_manager.present(ch1)
    owner = objs1.service["metadata"]["ownerReferences"][0]
    labels = {SOLVER_LABEL: "true", DOMAIN_LABEL: "1", TOKEN_LABEL: "2"}
    mislabelled = await api.create(SERVICES, _service("mislabelled", labels, owner=owner), p.namespace)
    # Cross-namespace backendRef on a real solver route (no cert-manager loop runs, so the edit stays).
    ch2 = await cert_manager.challenge(p.namespace, "two.example.test", finalizer=False)
    route2 = (await cert_manager.present(ch2)).route
    rules = route2["spec"]["rules"]
    rules[0]["backendRefs"][0]["namespace"] = other
    await api.patch(HTTPROUTES, route2["metadata"]["name"], {"spec": {"rules": rules}}, p.namespace)
    # A route hostname that differs from its Challenge's dnsName.
    ch3 = await cert_manager.challenge(p.namespace, "three.example.test", finalizer=False)
    route3 = (await cert_manager.present(ch3)).route
    await api.patch(HTTPROUTES, route3["metadata"]["name"], {"spec": {"hostnames": ["bank.example.test"]}}, p.namespace)

    expected = {
        "mislabelled": "ChallengeLabelMismatch",
        route2["metadata"]["name"]: "CrossNamespaceBackendRef",
        route3["metadata"]["name"]: "HostnameMismatch",
    }

    async def all_refused() -> bool:
        for name, reason in expected.items():
            if reason not in await warnings_for(api, p.namespace, name):
                return False
        return True

    await wait_for(all_refused, within=WIRE_WITHIN, what="Warning events for every forged object")
    # The honest challenge next to them is wired as usual.
    await wait_for(lambda: wired(api, ch1), within=WIRE_WITHIN, what="honest challenge wired")
    m = await rec.metrics()
    for reason in expected.values():
        assert m.total("acme_gateway_refusals_total", reason=reason) == 1, reason
    for ch in (ch2, ch3):  # nothing routes for the refused routes (a companion made before the edit goes)
        svc = await solver_service(api, ch)
        assert svc is not None
        name = f"{svc['metadata']['name']}-acme"

        async def companion_gone(name: str = name) -> bool:
            return await api.get_or_none(HTTPROUTES, name, p.namespace) is None

        await wait_for(companion_gone, within=WIRE_WITHIN, what=f"no companion route {name}")
    now = await api.get(SERVICES, "mislabelled", p.namespace)
    assert now["metadata"]["resourceVersion"] == mislabelled["metadata"]["resourceVersion"]
    assert await api.list(BACKENDS, other) == []
    assert_clean(m, rec)


async def test_only_the_leader_writes_and_a_standby_takes_over(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    args = ["--namespaces", p.namespace, "--leader-elect"]
    env = {
        "RECONCILER_LEADER_ELECTION_ID": f"lease-{p.name}",
        "RECONCILER_LEASE_DURATION": "3",
        "RECONCILER_RENEW_DEADLINE": "2",
        "RECONCILER_RETRY_PERIOD": "0.5",
    }
    first = await reconciler(args=args, env=env)  # both report ready: a rollout must not wait on the lease
    second = await reconciler(args=args, env=env)

    async def one_leader() -> tuple[ReconcilerProcess, ReconcilerProcess] | None:
        leaders = [r for r in (first, second) if (await r.metrics()).value("acme_gateway_leader") == 1]
        if len(leaders) != 1:
            return None
        return (leaders[0], second if leaders[0] is first else first)

    leader, standby = await wait_for(one_leader, within=WIRE_WITHIN, what="exactly one leader")
    ch1 = await cert_manager.challenge(p.namespace, "lead.example.test", finalizer=False)
    await cert_manager.present(ch1)
    await wait_for(lambda: wired(api, ch1), within=WIRE_WITHIN, what="wired by the leader")
    assert writes(await standby.metrics()) == 0, "the standby never writes"

    await leader.kill()  # no graceful release: the standby must wait out the lease
    ch2 = await cert_manager.challenge(p.namespace, "next.example.test", finalizer=False)
    await cert_manager.present(ch2)
    await wait_for(lambda: wired(api, ch2), within=WIRE_WITHIN, what="wired by the new leader")
    m = await standby.metrics()
    assert m.value("acme_gateway_leader") == 1
    assert writes(m, kind="Backend", verb="create", result="success") == 1, "only the new challenge's Backend"
    assert_clean(m, standby)


async def test_a_stopping_leader_hands_the_lease_over_at_once(
    project: ProjectFactory, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    args = ["--namespaces", p.namespace, "--leader-elect"]
    env = {
        "RECONCILER_LEADER_ELECTION_ID": f"lease-{p.name}",
        "RECONCILER_LEASE_DURATION": "15",  # far longer than the hand-over may take
        "RECONCILER_RENEW_DEADLINE": "10",
        "RECONCILER_RETRY_PERIOD": "5",  # a standby that only polled would take up to 6 s
    }
    first = await reconciler(args=args, env=env)
    await wait_for(lambda: _is_leader(first), within=WIRE_WITHIN, what="first leads")
    second = await reconciler(args=args, env=env)  # ready while standing by: its cache is warm
    assert "standby: caches warm" in second.log()
    assert await first.terminate() == 0, "graceful stop: in-flight writes finished, lease released"
    started = anyio.current_time()
    await wait_for(lambda: _is_leader(second), within=5, interval=0.05, what="second leads")
    assert anyio.current_time() - started < 2, "the standby follows the Lease: no wait for a poll or the term"


async def _is_leader(rec: ReconcilerProcess) -> bool:
    return (await rec.metrics()).value("acme_gateway_leader") == 1
