"""Real certificates through the shared gateway, issued by the real cert-manager v1.21 controllers.

Each scenario creates Issuers and Certificates; cert-manager orders from Pebble, creates the solver Pod,
Service and HTTPRoute, self-checks through Envoy at its own cadence, and writes the Secret. The reconciler
runs as a process under its ServiceAccount. The only stand-ins on the request path are the solver servers
(``testbed.solvers``: the solver Pod, and kube-dc's EIP forwarding); DNS, Envoy, the routes and Backends,
Pebble's validation and cert-manager's self-check are real.

Every time to Ready has a reference measured at the same time: the same Certificate in a baseline project
whose solver Services the gateway reaches (as without kube-dc's isolation), with no reconciler involved.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from cryptography import x509

from testbed.certificates import secret_pems, subject_alt_names, verify_chain
from testbed.certmanager_log import MSG_ROUTE_REVERT, SelfChecks
from testbed.controlplane import SERVICE_CLUSTER_IP_RANGE
from testbed.events import events_about, first_seen, last_seen, source, story
from testbed.gateway import EG_NAMESPACE, ENVOY_PROXY_NAME, GATEWAY_NAME
from testbed.harness import Metrics, Project
from testbed.issuance import Issuance
from testbed.kube import (
    BACKENDS,
    CERTIFICATES,
    CHALLENGES,
    DOMAINCLAIMS,
    ENVOYPROXIES,
    EVENTS,
    HTTPROUTES,
    SECRETS,
    SERVICES,
    Kube,
    Obj,
    Resource,
    wait_for,
)
from testbed.solverobjects import LABEL_SOLVER

if TYPE_CHECKING:
    from tests.fullstack.conftest import Env, Timings

pytestmark = pytest.mark.anyio

SECRET = "app-tls"
PEBBLE_UA = "Pebble"
RECONCILER = "acme-gateway-reconciler"  # its Events' source
STORY = ("SolverExposed", "BackendReady", "Routed", "GatewayServes")  # one Normal Event per hop, in order
NEVER_WITHIN = 45.0  # seconds a refused or broken challenge is watched: four of cert-manager's retry periods


# --- helpers -------------------------------------------------------------------------------------------


def dns_name(p: Project, label: str = "app") -> str:
    """A name unique to the project (challtestsrv resolves every name to the gateway)."""
    return f"{label}.{p.namespace}.example.test"


async def issue_with_baseline(
    env: Env, cloud: Project, baseline: Project, labels: Sequence[str] = ("app",), **cert: Any
) -> tuple[Issuance, Issuance]:
    """The same Certificate in the cloud project and in the baseline project, created at once."""
    started = [
        await env.start(p, dns_names=[dns_name(p, label) for label in labels], **cert) for p in (cloud, baseline)
    ]
    c, b = await env.ready(*started)
    return c, b


def outcomes(m: Metrics, p: Project, outcome: str) -> float:
    """``acme_gateway_challenge_outcomes_total`` for one project and outcome."""
    return m.total("acme_gateway_challenge_outcomes_total", project=f"{p.org_namespace}/{p.name}", outcome=outcome)


def assert_no_rejected_writes(m: Metrics) -> None:
    """Every write the reconciler sent passed the real RBAC and CRD schemas."""
    assert m.total("acme_gateway_writes_total", result="rejected") == 0
    assert m.total("acme_gateway_reconcile_errors_total") == 0


def assert_writes_per_solver(m: Metrics, kind: str, verb: str, solvers: tuple[int, int]) -> None:
    """One such write per solver: exactly one per Challenge when cert-manager made one solver Service for
    each, else between one per Challenge and one per solver Service it made."""
    challenges, services = solvers
    n = m.total("acme_gateway_writes_total", kind=kind, verb=verb, result="success")
    if services == challenges:
        assert n == challenges, (kind, verb, n, solvers)
    else:
        assert challenges <= n <= services, (kind, verb, n, solvers)


def assert_no_lost_checks(*issued: Issuance) -> None:
    """No self-check round failed once the route had had a retry period to be wired and programmed."""
    for one in issued:
        for ch in one.challenges:
            assert ch.rounds.lost == 0, (one.namespace, ch)


async def assert_tls_secret(
    env: Env, namespace: str, dns_names: Sequence[str] = (), ips: Sequence[str] = ()
) -> x509.Certificate:
    """The Secret holds a chain to Pebble's root for exactly these names, and the matching key."""
    crt, key = secret_pems(await env.api.get(SECRETS, SECRET, namespace))
    leaf = verify_chain(crt, key, env.pebble.roots_pem().encode())
    assert subject_alt_names(leaf) == (sorted(dns_names), sorted(ips))
    return leaf


def pebble_hits(env: Env, host: str) -> set[tuple[str, int]]:
    """(address, port) where Pebble's validation requests for ``host`` reached a solver, all through Envoy."""
    hits = [h for h in env.solvers.hits_for(host) if PEBBLE_UA in h.headers.get("user-agent", "")]
    assert hits, f"Pebble never reached the solver for {host}"
    assert all(h.via_envoy and h.status == 200 for h in hits), hits
    return {(h.address, h.port) for h in hits}


def assert_validated_through_envoy(env: Env, p: Project, hosts: Sequence[str]) -> set[int]:
    """Pebble's validation reached each solver through Envoy: for a cloud project on the project's EIP
    address (the reconciler's Backend), for the baseline on the Service's ClusterIP. Returns the ports."""
    found: set[tuple[str, int]] = set()
    for host in hosts:
        found |= pebble_hits(env, host)
    if p.network_type == "cloud":
        assert {address for address, _ in found} == {p.address}
    else:
        cluster_ips = ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)
        assert all(ipaddress.ip_address(a) in cluster_ips and port == 8089 for a, port in found), found
    return {port for _, port in found}


async def solver_leftovers(api: Kube, namespace: str) -> dict[str, list[str]] | None:
    """What of the solver machinery is still in ``namespace``; None once nothing is."""
    left = {
        "backends": [b["metadata"]["name"] for b in await api.list(BACKENDS, namespace)],
        "httproutes": [r["metadata"]["name"] for r in await api.list(HTTPROUTES, namespace)],
        "solver services": [
            s["metadata"]["name"] for s in await api.list(SERVICES, namespace, label_selector={LABEL_SOLVER: "true"})
        ],
        "challenges": [c["metadata"]["name"] for c in await api.list(CHALLENGES, namespace)],
    }
    return left if any(left.values()) else None


def route_reverts(env: Env, namespace: str) -> int:
    """How often cert-manager rewrote one of its routes in ``namespace`` (its log)."""
    return sum(1 for ln in env.cm.lines(MSG_ROUTE_REVERT) if ln.fields.get("resource_namespace") == namespace)


async def first_challenge(env: Env, p: Project) -> tuple[str, str]:
    """(uid, name) of the first Challenge cert-manager made in the project."""

    async def made() -> tuple[str, str] | None:
        found = env.timeline.in_namespaces([p.namespace])
        return next(((uid, m.name) for uid, m in found.items()), None)

    found: tuple[str, str] = await wait_for(made, within=60, interval=0.2, what=f"a Challenge in {p.namespace}")
    return found


async def event_on(env: Env, namespace: str, uid: str, reason: str, within: float = 60) -> Obj:
    """The Event ``reason`` about the object ``uid``, once posted."""

    async def posted() -> Obj | None:
        return next((e for e in await events_about(env.api, namespace, uid) if e["reason"] == reason), None)

    found: Obj = await wait_for(posted, within=within, interval=0.5, what=f"a {reason} Event")
    return found


async def assert_never_ready(env: Env, p: Project, one: Issuance, seconds: float = NEVER_WITHIN) -> SelfChecks:
    """``seconds`` after the Certificate was created, cert-manager has self-checked in the project several
    times and no round passed; the Certificate is not Ready and has no Secret."""
    await anyio.sleep(max(0.0, one.started + seconds - time.time()))
    checks = env.cm.self_checks(p.namespace)
    assert checks.rounds >= 3, checks
    assert checks.rounds_passed == 0, checks
    cert = await env.api.get(CERTIFICATES, one.name, p.namespace)
    assert not any(c["type"] == "Ready" and c["status"] == "True" for c in cert["status"].get("conditions", []))
    assert await env.api.get_or_none(SECRETS, SECRET, p.namespace) is None
    return checks


@dataclass
class History:
    """Every version of every object of one kind in one namespace, from a watch."""

    versions: dict[str, list[Obj]] = field(default_factory=dict)  # uid -> versions seen, oldest first

    def by_name_prefix(self, prefix: str) -> list[list[Obj]]:
        return [v for v in self.versions.values() if v[0]["metadata"]["name"].startswith(prefix)]

    def names(self) -> list[str]:
        return [v[0]["metadata"]["name"] for v in self.versions.values()]


@contextlib.asynccontextmanager
async def history(api: Kube, res: Resource, namespace: str) -> AsyncIterator[History]:
    """Record ``res`` objects in ``namespace`` while the block runs (from a complete first list on)."""
    seen = History()
    synced = anyio.Event()

    async def watch() -> None:
        async for event in api.list_watch(res, namespace):
            if event.type == "SYNCED":
                synced.set()
            elif event.type in ("ADDED", "MODIFIED"):
                seen.versions.setdefault(event.object["metadata"]["uid"], []).append(event.object)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        with anyio.fail_after(10):
            await synced.wait()
        yield seen
        tg.cancel_scope.cancel()


# --- scenarios -------------------------------------------------------------------------------------------


async def test_without_the_reconciler_a_cloud_challenge_never_validates(env: Env, timings: Timings) -> None:
    checked, unchecked, baseline = await env.project(), await env.project(), await env.baseline()
    await env.issuer(checked)
    await env.issuer(unchecked, wait_instead_of_self_check=3)
    await env.issuer(baseline)

    # cert-manager as it is: in a cloud project its self-check through the gateway never passes (the
    # Service backendRef has no reachable endpoints), so it never asks Pebble; it retries forever. With
    # waitInsteadOfSelfCheck it asks Pebble after 3 s, and Pebble's validation through the gateway fails.
    # The baseline, reachable without the reconciler, issues meanwhile.
    started = [await env.start(p, dns_names=[dns_name(p)]) for p in (checked, unchecked, baseline)]
    (reference,) = await env.ready(started[2])

    def retried(namespace: str) -> Any:
        async def probe() -> Any:
            found = [c for (ns, _), c in env.cm.rounds().items() if ns == namespace]
            return found if found and any(r.start - c.rounds[0].start >= 5 for c in found for r in c.failed) else None

        return probe

    (checks,) = await wait_for(retried(checked.namespace), within=60, interval=0.5, what="a failed retry round")
    failures = {r.failure for r in checks.failed}
    assert failures <= {f"received HTTP status code was not StatusOK (200) ({code})" for code in (404, 503)}, failures
    assert "received HTTP status code was not StatusOK (200) (503)" in failures, "routed to the Service, no endpoint"
    assert not any(r.passed for r in checks.rounds)

    async def rejected() -> Any:
        found = [m for m in env.timeline.in_namespaces([unchecked.namespace]).values() if m.final is not None]
        return found or None

    (verdict,) = await wait_for(rejected, within=60, what="Pebble's verdict on the unchecked challenge")
    if verdict.state == "invalid":
        assert "503" in verdict.reason, verdict.reason
    else:
        # cert-manager's own race under load: its status write after accepting lost a conflict, it accepted
        # again, and Pebble, which had already validated (and failed) the challenge, refused the second one.
        assert verdict.state == "expired", verdict
        assert "status invalid" in verdict.reason, verdict
    print(f"Pebble's verdict: {verdict.reason}")

    for p in (checked, unchecked):
        cert = await env.api.get(CERTIFICATES, "app", p.namespace)
        assert not any(c["type"] == "Ready" and c["status"] == "True" for c in cert["status"].get("conditions", []))
        assert await env.api.get_or_none(SECRETS, SECRET, p.namespace) is None
        assert not env.solvers.hits_for(dns_name(p)), "nothing could reach a cloud solver"
    assert_validated_through_envoy(env, baseline, [dns_name(baseline)])
    timings["checked_rounds"] = len(checks.rounds)
    timings["unchecked_invalid_after"] = verdict.final - started[1].started if verdict.final else None
    timings.issued("baseline_alone", reference)


async def test_a_cloud_certificate_issues_through_the_shared_gateway(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline()

    cloud, base = await issue_with_baseline(env, p, baseline)
    timings.issued("certificate", cloud, base)
    await assert_tls_secret(env, p.namespace, [dns_name(p)])
    await assert_tls_secret(env, baseline.namespace, [dns_name(baseline)])
    assert assert_validated_through_envoy(env, p, [dns_name(p)]) == {8089}
    assert_validated_through_envoy(env, baseline, [dns_name(baseline)])
    assert_no_lost_checks(cloud, base)
    assert route_reverts(env, p.namespace) == 0, "route mode shadow never edits cert-manager's route"

    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    assert outcomes(m, p, "failure") == 0
    solvers = env.solvers_made(p)
    timings["challenges_and_solver_services"] = solvers
    for kind, verb in (("Service", "patch"), ("Backend", "create"), ("HTTPRoute", "create")):
        assert_writes_per_solver(m, kind, verb, solvers)
    assert m.total("acme_gateway_writes_total", kind="HTTPRoute", verb="patch") == 0
    assert m.total("acme_gateway_route_reverts_total") == 0
    assert_no_rejected_writes(m)


async def test_one_cluster_issuer_serves_every_project(env: Env, timings: Timings, cluster_issuer: str) -> None:
    p, baseline, rec = await env.cloud_and_baseline(issuers=False)

    cloud, base = await issue_with_baseline(env, p, baseline, issuer_kind="ClusterIssuer", issuer_name=cluster_issuer)
    timings.issued("certificate", cloud, base)
    await assert_tls_secret(env, p.namespace, [dns_name(p)])
    assert_validated_through_envoy(env, p, [dns_name(p)])
    assert_no_lost_checks(cloud, base)
    # The account key lives in cert-manager's cluster resource namespace, not in the tenant's.
    account = await env.api.get(SECRETS, "pebble-account", env.cm.cluster_resource_namespace)
    assert account["data"]["tls.key"]
    assert await env.api.get_or_none(SECRETS, "pebble-account", p.namespace) is None
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    assert_no_rejected_writes(m)


async def test_a_certificate_with_three_names_uses_three_ports_on_the_eip(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline()
    labels = ("app", "www", "api")

    cloud, base = await issue_with_baseline(env, p, baseline, labels)
    timings.issued("certificate", cloud, base)
    names = [dns_name(p, label) for label in labels]
    await assert_tls_secret(env, p.namespace, names)
    ports = assert_validated_through_envoy(env, p, names)
    challenges, services = env.solvers_made(p)
    # Three concurrent solvers, three distinct external ports on one EIP: the first three of the range, unless
    # cert-manager made a solver Service anew while another still held a port.
    assert len(ports) == 3, ports
    assert ports == {8089, 8090, 8091} or (services > challenges and ports <= set(range(8089, 8089 + services)))
    assert_validated_through_envoy(env, baseline, [dns_name(baseline, label) for label in labels])
    assert_no_lost_checks(cloud, base)
    assert len(cloud.challenges) == 3
    events = await env.api.list(EVENTS, p.namespace)
    assert not [e for e in events if e["reason"] == "PortInUse"], "kube-dc refused no solver"
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 3, "three successes counted")
    assert_writes_per_solver(m, "Backend", "create", env.solvers_made(p))
    assert_no_rejected_writes(m)


async def test_renewal_issues_a_new_certificate_the_same_way(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline()
    names = [dns_name(p), dns_name(p, "www")]

    cloud, base = await issue_with_baseline(env, p, baseline, ("app", "www"))
    leaf = await assert_tls_secret(env, p.namespace, names)

    # cert-manager's own manual trigger, as `cmctl renew` pulls it: the Issuing condition on the status.
    renewal, base_renewal = await env.ready(await env.renew(p), await env.renew(baseline))
    timings.issued("first", cloud, base)
    timings.issued("renewal", renewal, base_renewal)
    assert renewal.revision == 2
    renewed = await assert_tls_secret(env, p.namespace, names)
    assert renewed.serial_number != leaf.serial_number
    assert renewed.not_valid_before_utc >= leaf.not_valid_before_utc
    assert len(renewal.challenges) == 2, "fresh authorizations (Pebble reuses none)"
    assert {c.name for c in renewal.challenges}.isdisjoint({c.name for c in cloud.challenges})
    assert all(c.state == "valid" for c in renewal.challenges)
    assert_no_lost_checks(cloud, base, renewal, base_renewal)

    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 4, "two orders x two names counted")
    assert outcomes(m, p, "failure") == 0
    assert_no_rejected_writes(m)


async def test_two_cloud_projects_and_a_public_one_at_once(env: Env, timings: Timings) -> None:
    cloud_a, cloud_b, public = await env.project(), await env.project(), await env.project("public")
    baseline = await env.baseline()
    rec = await env.reconciler([cloud_a.namespace, cloud_b.namespace, public.namespace])
    for p in (cloud_a, cloud_b, public, baseline):
        await env.issuer(p)

    async with (
        history(env.api, SERVICES, public.namespace) as services,
        history(env.api, HTTPROUTES, public.namespace) as routes,
    ):
        # A public project's solver would be reached through its own public address; here nothing answers
        # behind its Service, so it cannot pass: cert-manager keeps retrying it while the others issue.
        started = [await env.start(p, dns_names=[dns_name(p)]) for p in (public, cloud_a, cloud_b, baseline)]
        a, b, base = await env.ready(*started[1:])
        public_rounds = env.cm.self_checks(public.namespace)
    timings.issued("cloud_a", a, base)
    timings.issued("cloud_b", b, base)
    for p in (cloud_a, cloud_b):
        await assert_tls_secret(env, p.namespace, [dns_name(p)])
        assert_validated_through_envoy(env, p, [dns_name(p)])
    assert_no_lost_checks(a, b, base)
    assert await env.api.get_or_none(SECRETS, SECRET, public.namespace) is None
    assert public_rounds.rounds >= 2, public_rounds
    assert public_rounds.rounds_passed == 0, public_rounds

    # The public project's solver objects were never written by the reconciler: each Service's
    # resourceVersion never changed; each route's spec, labels and generation never changed (its
    # resourceVersion does: Envoy Gateway writes the route's status). Usually one of each; under load
    # cert-manager may make a Service or route anew (stale cache), so all are checked.
    solver_services = services.by_name_prefix("cm-acme-http-solver-")
    assert solver_services
    for svc_versions in solver_services:
        first = svc_versions[0]
        assert {v["metadata"]["resourceVersion"] for v in svc_versions} == {first["metadata"]["resourceVersion"]}
        assert first["spec"]["type"] == "NodePort"
    solver_routes = routes.by_name_prefix("cm-acme-http-solver-")
    assert solver_routes
    for route_versions in solver_routes:
        for version in route_versions:
            assert version["metadata"]["generation"] == 1
            assert version["spec"] == route_versions[0]["spec"]
            assert version["metadata"].get("labels") == route_versions[0]["metadata"].get("labels")
    assert not [n for n in routes.names() if n.endswith("-acme")], "no companion route"
    assert await env.api.list(BACKENDS, public.namespace) == []

    m = await rec.metrics_when(
        lambda m: outcomes(m, cloud_a, "success") == 1 and outcomes(m, cloud_b, "success") == 1,
        "both cloud successes counted",
    )
    # Three writes per cloud solver (Service patch, Backend, companion route) after the claim of its name,
    # none for the public one; the deletes once the solver Services go (the reconciler's or the garbage
    # collector's) do not count.
    solvers = env.solvers_made(cloud_a, cloud_b)
    timings["challenges_and_solver_services"] = solvers
    for kind, verb in (("Service", "patch"), ("Backend", "create"), ("HTTPRoute", "create")):
        assert_writes_per_solver(m, kind, verb, solvers)
    assert m.total("acme_gateway_writes_total", kind="DomainClaim", verb="create", result="success") == 2
    patches = m.total("acme_gateway_writes_total", verb="patch", result="success")
    creates = m.total("acme_gateway_writes_total", verb="create", result="success")
    if solvers == (2, 2):
        assert (patches, creates) == (2, 6)
    else:
        assert 2 <= patches <= solvers[1]
        assert 6 <= creates <= 2 + 2 * solvers[1]
    assert_no_rejected_writes(m)


async def test_nothing_of_the_solver_is_left_after_issuance(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline()
    cloud, base = await issue_with_baseline(env, p, baseline)
    timings.issued("certificate", cloud, base)

    t0 = time.monotonic()
    for namespace in (p.namespace, baseline.namespace):

        async def clean(namespace: str = namespace) -> bool:
            return await solver_leftovers(env.api, namespace) is None

        await wait_for(clean, within=60, interval=0.2, what=f"solver objects gone from {namespace}")
    timings["ready_to_clean"] = time.monotonic() - t0
    assert not [lb for lb in await env.api.list(SERVICES, p.namespace) if lb["spec"]["type"] == "LoadBalancer"]
    serving = {ns for ns, _ in env.solvers.serving()}
    assert p.namespace not in serving, "the solver servers stopped too"
    assert baseline.namespace not in serving
    assert await env.api.get_or_none(SECRETS, SECRET, p.namespace) is not None, "the certificate stays"
    m = await rec.metrics()
    assert_no_rejected_writes(m)
    # Between the Challenge's deletion and the garbage collector, cert-manager's route names a Challenge
    # that is gone: routine, not a forgery, so no refusal (and no Warning Event on the tenant's route).
    assert m.total("acme_gateway_refusals_total") == 0


async def test_route_mode_patch_races_cert_managers_reverts(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline(["--route-mode", "patch"])

    # Before every self-check round cert-manager rewrites its route back to the Service (a revert); the
    # reconciler re-patches it within milliseconds, but the round's first GET may reach Envoy before the
    # re-patch does. Such a round is lost (another 10 s). Counted from cert-manager's own log.
    cloud, base = await issue_with_baseline(env, p, baseline)
    timings.issued("certificate", cloud, base)
    reverts = route_reverts(env, p.namespace)
    (challenge,) = cloud.challenges
    timings["cert_manager_reverts"] = reverts
    timings["lost_checks"] = challenge.rounds.lost
    timings["lost_after_revert"] = challenge.rounds.lost_after_revert
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    timings["reconciler_reverts_seen"] = m.total("acme_gateway_route_reverts_total")
    timings["reconciler_repatches"] = m.total("acme_gateway_route_repatches_total")

    await assert_tls_secret(env, p.namespace, [dns_name(p)])
    assert_validated_through_envoy(env, p, [dns_name(p)])
    assert reverts >= 1, "cert-manager undid the reconciler's edit before its retry round"
    assert m.total("acme_gateway_route_reverts_total") >= 1
    assert m.total("acme_gateway_route_repatches_total") >= 1
    # Every lost round came right after a revert: the race is patch mode's, nothing else lost a check.
    assert challenge.rounds.lost == challenge.rounds.lost_after_revert
    assert_no_lost_checks(base)
    assert_no_rejected_writes(m)


@pytest.mark.parametrize("mode", ["shadow", "patch"])
async def test_wait_instead_of_self_check(env: Env, timings: Timings, mode: str) -> None:
    p, baseline, rec = await env.cloud_and_baseline(["--route-mode", mode], wait_instead_of_self_check=5)

    # No self-check, so no Present before it and no revert: cert-manager asks Pebble 5 s after Present,
    # by when the route must be wired and programmed (Pebble's validation has no second chance).
    cloud, base = await issue_with_baseline(env, p, baseline)
    timings.issued("certificate", cloud, base)
    await assert_tls_secret(env, p.namespace, [dns_name(p)])
    assert_validated_through_envoy(env, p, [dns_name(p)])
    for one in (cloud, base):
        assert [c.rounds.rounds for c in one.challenges] == [0], "no self-check ran"
        assert 5 <= one.seconds < 60, one.seconds
    assert route_reverts(env, p.namespace) == 0

    # cert-manager v1.21.2 re-syncs the waiting Challenge in a hot loop (its status reason carries the
    # remaining time, so every sync writes the status), and a status conflict after the accept makes it
    # accept again: Pebble refuses the second accept (the challenge is already valid) and the Challenge
    # ends `expired` although its authorization is valid and the certificate issues. The reconciler counts
    # the state cert-manager reports, once.
    (challenge,) = cloud.challenges
    timings["cloud_challenge_state"] = challenge.state
    if challenge.state != "valid":
        assert challenge.state == "expired", challenge
        assert "Cannot update challenge with status valid" in challenge.reason, challenge.reason
    outcome = "success" if challenge.state == "valid" else "failure"
    m = await rec.metrics_when(lambda m: outcomes(m, p, outcome) == 1, f"{outcome} counted")
    assert outcomes(m, p, "success") + outcomes(m, p, "failure") == 1
    assert m.total("acme_gateway_route_reverts_total") == 0
    assert m.total("acme_gateway_route_repatches_total") == 0
    assert_no_rejected_writes(m)


async def test_a_certificate_for_an_ip_address(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline()
    # Addresses the gateway listens on (Envoy binds 0.0.0.0 in the private network namespace), where
    # Pebble and the self-check send an IP identifier's validation: no DNS involved.
    ips = {p.namespace: "127.64.0.1", baseline.namespace: "127.64.0.2"}

    async with history(env.api, HTTPROUTES, p.namespace) as routes:
        started = [await env.start(q, ip_addresses=[ips[q.namespace]]) for q in (p, baseline)]
        cloud, base = await env.ready(*started)
    timings.issued("certificate", cloud, base)
    await assert_tls_secret(env, p.namespace, ips=[ips[p.namespace]])
    assert assert_validated_through_envoy(env, p, [ips[p.namespace]]) == {8089}
    assert_no_lost_checks(cloud, base)

    # cert-manager omits hostnames on an IP challenge's route; the companion route does the same. (Usually
    # one of each; under load cert-manager may make its route or Service anew, so all are checked.)
    companions = [v for v in routes.versions.values() if v[0]["metadata"]["name"].endswith("-acme")]
    solver_routes = [v for v in routes.by_name_prefix("cm-acme-http-solver-") if v not in companions]
    assert solver_routes
    assert companions
    for versions in solver_routes + companions:
        assert not versions[-1]["spec"].get("hostnames"), versions[-1]["spec"]
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    assert m.total("acme_gateway_refusals_total") == 0
    assert_no_rejected_writes(m)


async def test_a_name_another_project_holds_is_not_wired_until_an_operator_transfers_it(
    env: Env, timings: Timings
) -> None:
    a, b = await env.project(), await env.project()
    rec = await env.reconciler([a.namespace, b.namespace])
    for p in (a, b):
        await env.issuer(p)
    host = dns_name(a)

    (holder,) = await env.ready(await env.start(a, dns_names=[host]))
    timings.issued("holder", holder)
    await assert_tls_secret(env, a.namespace, [host])
    claim = await env.api.get(DOMAINCLAIMS, host)
    assert claim["spec"]["project"] == {"organization": a.org_namespace, "name": a.name}
    assert claim["spec"]["namespace"] == a.namespace

    # Another cloud project asks for the same name. If its challenge were wired, the gateway would send the
    # name's challenge path to B's solver and B would get a certificate for A's name.
    async with history(env.api, HTTPROUTES, b.namespace) as routes:
        contender = await env.start(b, dns_names=[host])
        uid, name = await first_challenge(env, b)
        refused = await event_on(env, b.namespace, uid, "DomainClaimed")
        timings["refusal_seen_after"] = time.time() - contender.started
        checks = await assert_never_ready(env, b, contender)
    timings["contender_rounds"] = checks.rounds
    assert refused["type"] == "Warning"
    assert source(refused) == RECONCILER
    assert f"{a.org_namespace}/{a.name}" not in refused["message"], "the holder is not named"
    events = await events_about(env.api, b.namespace, uid)
    print(story(f"Challenge {b.namespace}/{name} ({host}, held by another project)", events, contender.started))
    assert not [e for e in events if source(e) == RECONCILER and e["reason"] in STORY], "no hop was wired"
    on_services = [
        e
        for e in await env.api.list(EVENTS, b.namespace)
        if e["reason"] == "DomainClaimed" and e["involvedObject"]["kind"] == "Service"
    ]
    assert on_services, "the solver Service says so too"
    assert await env.api.list(BACKENDS, b.namespace) == []
    assert not [n for n in routes.names() if n.endswith("-acme")], "no companion route"
    for versions in routes.by_name_prefix("cm-acme-http-solver-"):
        assert all(ref["kind"] == "Service" for v in versions for r in v["spec"]["rules"] for ref in r["backendRefs"])
    assert not [h for h in env.solvers.hits_for(host) if h.namespace == b.namespace], "nothing reached B's solver"
    claim = await env.api.get(DOMAINCLAIMS, host)
    assert claim["spec"]["namespace"] == a.namespace
    assert claim["status"]["refusedChallenges"] >= 1
    assert [c["status"] for c in claim["status"]["conditions"] if c["type"] == "Contested"] == ["True"]

    # An operator transfers the name (domainclaims-admin): B's waiting challenge is wired and issues.
    transferred, since = time.time(), time.monotonic()
    owner = {"project": {"organization": b.org_namespace, "name": b.name}, "namespace": b.namespace}
    await env.api.patch(DOMAINCLAIMS, host, {"spec": owner})
    (after,) = await env.ready(contender)
    assert after.ready_at is not None
    timings["ready_after_transfer"] = after.ready_at - transferred
    timings.issued("contender", after)
    await assert_tls_secret(env, b.namespace, [host])
    late = [h for h in env.solvers.hits_for(host) if h.at >= since and PEBBLE_UA in h.headers.get("user-agent", "")]
    assert late, "Pebble validated again"
    assert all(h.via_envoy and h.status == 200 and h.address == b.address for h in late), late

    m = await rec.metrics_when(lambda m: outcomes(m, b, "success") == 1, "B's success counted")
    assert m.total("acme_gateway_writes_total", kind="DomainClaim", verb="create", result="success") == 1
    assert m.total("acme_gateway_refusals_total", reason="DomainClaimed") >= 1
    assert_no_rejected_writes(m)


async def test_a_challenge_tells_its_story_in_events(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline()

    cloud, base = await issue_with_baseline(env, p, baseline)
    timings.issued("certificate", cloud, base)
    assert cloud.ready_at is not None
    (challenge,) = cloud.challenges
    found = env.timeline.by_name(p.namespace, challenge.name)
    assert found is not None
    uid = found[0]
    # cert-manager deleted the Challenge after issuance; its Events stay, as `kubectl get events` shows them.
    events = await events_about(env.api, p.namespace, uid)
    print(story(f"Challenge {p.namespace}/{challenge.name} ({dns_name(p)})", events, cloud.started))

    ours = [e for e in events if source(e) == RECONCILER]
    normal = [e for e in ours if e["type"] == "Normal"]
    assert sorted(e["reason"] for e in normal) == sorted(STORY), "one Event per hop"
    by_reason = {e["reason"]: e for e in normal}
    seen = [first_seen(by_reason[reason]) for reason in STORY]
    assert seen == sorted(seen), "in hop order (to the second)"
    assert seen[-1] <= cloud.ready_at, "the story was complete before the certificate was"
    # The first probes usually run before Envoy has the new route (Envoy Gateway's translation and xDS
    # push take a moment); they warn only after four failures in a row (3.5 s), which a loaded machine can
    # reach, so a GatewayProbeFailed (503) may precede GatewayServes; nothing else may warn.
    warnings = [e for e in ours if e["type"] != "Normal"]
    assert {e["reason"] for e in warnings} <= {"GatewayProbeFailed"}, warnings
    assert all(last_seen(e) <= seen[-1] for e in warnings), "nothing failed once the gateway served"
    timings["probe_failures_before_serving"] = sum(int(e.get("count") or 1) for e in warnings)
    timings["story_s"] = {reason: round(t - cloud.started) for reason, t in zip(STORY, seen, strict=True)}
    timings["stored_order"] = [e["reason"] for e in sorted(normal, key=lambda e: int(e["metadata"]["resourceVersion"]))]
    assert "exposed on EIP default-gw port 8089" in by_reason["SolverExposed"]["message"]
    assert f"at {p.address}:8089" in by_reason["BackendReady"]["message"]
    assert f"through Gateway {EG_NAMESPACE}/{GATEWAY_NAME}" in by_reason["Routed"]["message"]
    assert f"the gateway at {env.gateway.address}:80 answers" in by_reason["GatewayServes"]["message"]
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    assert_no_rejected_writes(m)


async def test_a_solver_the_eip_does_not_forward_to_is_named_by_a_warning(env: Env, timings: Timings) -> None:
    p, baseline, rec = await env.cloud_and_baseline()
    # kube-dc gives the solver its address and port, but nothing answers there (the EIP's forwarding is
    # broken): the Backend is accepted, the route too, and the gateway answers 503.
    env.solvers.cut_forwarding(p.namespace)

    started = [await env.start(q, dns_names=[dns_name(q)]) for q in (p, baseline)]
    uid, name = await first_challenge(env, p)
    failed = await event_on(env, p.namespace, uid, "GatewayProbeFailed")
    timings["warning_seen_after"] = time.time() - started[0].started
    (base,) = await env.ready(started[1])
    checks = await assert_never_ready(env, p, started[0])
    timings["broken_rounds"] = checks.rounds
    assert failed["type"] == "Warning"
    assert source(failed) == RECONCILER

    # Not a transient failure: still failing long after, and counted on (a repeat raises the Event's count
    # at most once per 30 s, the recorder's repeat interval).
    async def counted_on() -> list[Obj] | None:
        events = await events_about(env.api, p.namespace, uid)
        (warning,) = [e for e in events if e["reason"] == "GatewayProbeFailed"]
        late = int(warning["count"]) >= 2 and last_seen(warning) - started[0].started >= 20
        return events if late else None

    events = await wait_for(counted_on, within=60, interval=1, what="the Warning raised again while still broken")
    print(story(f"Challenge {p.namespace}/{name} ({dns_name(p)}), EIP forwarding broken", events, started[0].started))
    (failed,) = [e for e in events if e["reason"] == "GatewayProbeFailed"]
    timings["probe_failures"] = failed["count"]
    want = f"the gateway at {env.gateway.address}:80 does not serve the challenge path for {dns_name(p)}: HTTP 503"
    assert failed["message"] == want, failed["message"]
    reasons = [e["reason"] for e in events if source(e) == RECONCILER]
    assert {"SolverExposed", "BackendReady", "Routed"} <= set(reasons), reasons
    assert "GatewayServes" not in reasons
    backend_ready = next(e for e in events if e["reason"] == "BackendReady")
    assert f"at {p.address}:8089" in backend_ready["message"], "the hop before the failing one, with its address"
    assert not [h for h in env.solvers.hits_for(dns_name(p))], "nothing answered on the EIP"
    failures = set(checks.failures)
    assert "received HTTP status code was not StatusOK (200) (503)" in failures, failures

    # Mended, the same challenge passes at cert-manager's next round: nothing else was in the way.
    mended = time.time()
    env.solvers.cut_forwarding(p.namespace, cut=False)
    (cloud,) = await env.ready(started[0])
    assert cloud.ready_at is not None
    timings["ready_after_mend"] = cloud.ready_at - mended
    timings.issued("certificate", cloud, base)
    await assert_tls_secret(env, p.namespace, [dns_name(p)])
    assert_validated_through_envoy(env, p, [dns_name(p)])
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    assert m.total("acme_gateway_gateway_probes_total", result="bad_status") >= 1
    assert_no_rejected_writes(m)


async def test_a_gateway_that_keeps_route_order_gets_cert_managers_route_patched(env: Env, timings: Timings) -> None:
    # The shared gateway's class names EnvoyProxy eg-host; with preserveRouteOrder cert-manager's older
    # route would win over a companion route, so route mode auto must patch it instead. Restored after.
    proxy = await env.api.get(ENVOYPROXIES, ENVOY_PROXY_NAME, EG_NAMESPACE)
    assert "preserveRouteOrder" not in proxy["spec"]
    await env.api.patch(ENVOYPROXIES, ENVOY_PROXY_NAME, {"spec": {"preserveRouteOrder": True}}, EG_NAMESPACE)
    try:
        p, baseline, rec = await env.cloud_and_baseline()
        async with history(env.api, HTTPROUTES, p.namespace) as routes:
            cloud, base = await issue_with_baseline(env, p, baseline)
    finally:
        await env.api.patch(ENVOYPROXIES, ENVOY_PROXY_NAME, {"spec": {"preserveRouteOrder": None}}, EG_NAMESPACE)
    timings.issued("certificate", cloud, base)
    timings["baseline_check_failures"] = env.cm.self_checks(baseline.namespace).failures
    await assert_tls_secret(env, p.namespace, [dns_name(p)])
    assert_validated_through_envoy(env, p, [dns_name(p)])
    assert_no_lost_checks(base)
    (challenge,) = cloud.challenges
    timings["cert_manager_reverts"] = route_reverts(env, p.namespace)
    timings["lost_checks"] = challenge.rounds.lost

    found = env.timeline.by_name(p.namespace, challenge.name)
    assert found is not None
    events = await events_about(env.api, p.namespace, found[0])
    print(story(f"Challenge {p.namespace}/{challenge.name} ({dns_name(p)})", events, cloud.started))
    (preserved,) = [e for e in events if e["reason"] == "RouteOrderPreserved"]
    assert preserved["type"] == "Warning"
    assert source(preserved) == RECONCILER
    assert f"Gateway {EG_NAMESPACE}/{GATEWAY_NAME} keeps route order" in preserved["message"]
    assert f"EnvoyProxy {EG_NAMESPACE}/{ENVOY_PROXY_NAME}" in preserved["message"]
    assert not [n for n in routes.names() if n.endswith("-acme")], "no companion route"
    patched = [
        v
        for versions in routes.by_name_prefix("cm-acme-http-solver-")
        for v in versions
        if any(ref["kind"] == "Backend" for r in v["spec"]["rules"] for ref in r["backendRefs"])
    ]
    assert patched, "cert-manager's own route was pointed at the Backend"
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    assert m.total("acme_gateway_writes_total", kind="HTTPRoute", verb="create") == 0
    assert m.total("acme_gateway_writes_total", kind="HTTPRoute", verb="patch", result="success") >= 1
    assert_no_rejected_writes(m)
