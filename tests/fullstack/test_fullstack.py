"""Real certificates through the shared gateway: Pebble validates HTTP-01 through Envoy Gateway + Envoy.

Each scenario drives cert-manager's flow (``testbed.issuer``) against Pebble, with the reconciler as a
process under its ServiceAccount. The only stand-ins on the request path are the solver servers
(``testbed.solvers``: the solver Pod and kube-dc's EIP forwarding); everything Pebble's validation request
crosses before them (DNS, Envoy, the routes and Backends the reconciler wrote) is real.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from testbed.harness import Metrics, Project
from testbed.issuer import IssueResult, issue_certificate
from testbed.kube import BACKENDS, CHALLENGES, EVENTS, HTTPROUTES, SECRETS, SERVICES, Kube, Obj, Resource, wait_for
from testbed.solverobjects import LABEL_SOLVER

if TYPE_CHECKING:
    from tests.fullstack.conftest import Env, Timings

pytestmark = pytest.mark.anyio

SECRET = "app-tls"
PEBBLE_UA = "Pebble"


# --- helpers -------------------------------------------------------------------------------------------


def dns_name(p: Project, label: str = "app") -> str:
    """A name unique to the project (challtestsrv resolves every name to the gateway)."""
    return f"{label}.{p.namespace}.example.test"


async def issue(env: Env, p: Project, names: Sequence[str], *, secret: str = SECRET, **config: Any) -> IssueResult:
    """One certificate for ``names`` in ``p`` through the shared gateway, with the test's ACME account."""
    return await issue_certificate(
        env.api,
        env.pebble,
        p.namespace,
        secret,
        names,
        parent_refs=[env.gateway.parent_ref],
        config=env.solver_config(**config),
        account=env.account,
    )


def outcomes(m: Metrics, p: Project, outcome: str) -> float:
    """``acme_gateway_challenge_outcomes_total`` for one project and outcome."""
    return m.total("acme_gateway_challenge_outcomes_total", project=f"{p.org_namespace}/{p.name}", outcome=outcome)


def assert_no_rejected_writes(m: Metrics) -> None:
    """Every write the reconciler sent passed the real RBAC and CRD schemas."""
    assert m.total("acme_gateway_writes_total", result="rejected") == 0
    assert m.total("acme_gateway_reconcile_errors_total") == 0


async def assert_tls_secret(env: Env, namespace: str, names: Sequence[str]) -> x509.Certificate:
    """The Secret holds a chain to Pebble's root for exactly ``names``, and the matching key; returns the leaf."""
    secret = await env.api.get(SECRETS, SECRET, namespace)
    assert secret["type"] == "kubernetes.io/tls"
    chain = x509.load_pem_x509_certificates(base64.b64decode(secret["data"]["tls.crt"]))
    key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
    root = x509.load_pem_x509_certificate(env.pebble.roots_pem().encode())
    assert len(chain) >= 2, "leaf and intermediate"
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        child.verify_directly_issued_by(parent)
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(names)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert leaf.public_key().public_bytes(serialization.Encoding.PEM, spki) == key.public_key().public_bytes(
        serialization.Encoding.PEM, spki
    )
    return leaf


def assert_validated_through_envoy(env: Env, p: Project, names: Sequence[str]) -> set[int]:
    """Pebble's validation requests reached the solver servers through Envoy, on the project's EIP address;
    returns the EIP ports they came in on."""
    ports: set[int] = set()
    for name in names:
        hits = [h for h in env.solvers.hits_for(name) if PEBBLE_UA in h.headers.get("user-agent", "")]
        assert hits, f"Pebble never reached the solver for {name}"
        assert all(h.via_envoy and h.status == 200 and h.address == p.address for h in hits), hits
        ports |= {h.port for h in hits}
    return ports


def record(env: Env, timings: Timings, result: IssueResult, prefix: str = "") -> None:
    """Order -> valid / issued (Secret written), how many self-checks it took, when the gateway first
    answered the self-check with the key, and what it answered (status: count; 0 = no answer)."""
    timings[f"{prefix}order_to_challenges_final"] = result.marks.get("challenges_final")
    timings[f"{prefix}order_to_issued"] = result.seconds_to_issued
    timings[f"{prefix}order_to_challenges_deleted"] = result.marks.get("challenges_deleted")
    timings[f"{prefix}self_check_requests"] = sum(o.run.checks for o in result.challenges)
    timings[f"{prefix}presents"] = sum(o.run.presents for o in result.challenges)
    names = {o.dns_name for o in result.challenges}
    end = result.started_at + (result.marks.get("challenges_final") or 0.0)
    seen = [r for r in env.self_check.seen if r.dns_name in names and result.started_at <= r.at <= end]
    first_pass = min((r.at for r in seen if r.passed), default=None)
    if first_pass is not None:
        timings[f"{prefix}order_to_first_key_through_gateway"] = first_pass - result.started_at
    statuses = [r.status or 0 for r in seen]
    timings[f"{prefix}self_check_statuses"] = {str(s): statuses.count(s) for s in sorted(set(statuses))}


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


@dataclass
class History:
    """Every version of every object of one kind in one namespace, from a watch."""

    versions: dict[str, list[Obj]] = field(default_factory=dict)  # uid -> versions seen, oldest first

    def by_name_prefix(self, prefix: str) -> list[list[Obj]]:
        return [v for v in self.versions.values() if v[0]["metadata"]["name"].startswith(prefix)]


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


@dataclass
class GatewayProbe:
    """Polls the gateway for the namespace's (first) challenge path every 20 ms, as any client could."""

    env: Env
    namespace: str
    stop: anyio.Event = field(default_factory=anyio.Event)
    seen: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, status; 0 = no answer)

    async def run(self) -> None:
        found: list[Obj] = []
        while not found:
            if self.stop.is_set():
                return
            found = await self.env.api.list(CHALLENGES, self.namespace)
            await anyio.sleep(0.02)
        ch = found[0]
        url = f"{self.env.gateway.base_url}/.well-known/acme-challenge/{ch['spec']['token']}"
        async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
            while not self.stop.is_set():
                try:
                    status = (await http.get(url, headers={"Host": ch["spec"]["dnsName"]})).status_code
                except httpx.HTTPError:
                    status = 0
                self.seen.append((time.monotonic(), status))
                await anyio.sleep(0.02)

    def after_first_key(self, until: float) -> dict[str, int]:
        """Statuses (status: count) from the first 200 to ``until``: anything but 200 is a flap."""
        first = next((at for at, status in self.seen if status == 200), None)
        statuses = [status for at, status in self.seen if first is not None and first <= at <= until]
        return {str(s): statuses.count(s) for s in sorted(set(statuses))}


# --- scenarios -------------------------------------------------------------------------------------------


async def test_without_the_reconciler_a_cloud_challenge_does_not_validate(env: Env, timings: Timings) -> None:
    p = await env.project("cloud")
    name = dns_name(p)

    # cert-manager as it is: its self-check through the gateway never passes (a Service backendRef has no
    # reachable endpoints in a cloud project), so it never accepts; the stand-in gives up after 3 s.
    t0 = time.monotonic()
    result = await issue(env, p, [name], give_up_after=3.0)
    timings["self_check_gave_up_after"] = time.monotonic() - t0
    record(env, timings, result)
    assert not result.issued
    (challenge,) = result.challenges
    assert challenge.state == "invalid"
    assert "gave up: self check failed" in challenge.reason
    statuses = env.self_check.statuses(name)
    assert set(statuses) <= {503, 404}, statuses  # 404 only until Envoy has the route
    assert 503 in statuses, "the gateway has the route but no endpoint to send it to"
    assert challenge.accepted_after is None, "never accepted at the ACME server"

    # Pebble's own verdict, as if cert-manager skipped its self-check: accepted once the gateway has the
    # route, the authorization becomes invalid because the gateway answers 503.
    async def route_programmed(ch: Obj) -> bool:
        url = f"{env.gateway.base_url}/.well-known/acme-challenge/{ch['spec']['token']}"

        async def answers_503() -> bool:
            async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
                return (await http.get(url, headers={"Host": ch["spec"]["dnsName"]})).status_code == 503

        return bool(await wait_for(answers_503, within=15, interval=0.1, what="route programmed in Envoy"))

    t0 = time.monotonic()
    result = await issue(env, p, [name], self_check=route_programmed, required_passes=1)
    timings["pebble_verdict_after"] = time.monotonic() - t0
    (challenge,) = result.challenges
    assert not result.issued
    assert challenge.state == "invalid", challenge
    assert challenge.reason.startswith("Error accepting authorization: ")
    assert "503" in challenge.reason, challenge.reason
    print(f"Pebble's verdict: {challenge.reason}")
    assert await env.api.get_or_none(SECRETS, SECRET, p.namespace) is None
    assert not env.solvers.hits_for(name), "nothing could reach a solver"


async def test_a_cloud_certificate_issues_through_the_shared_gateway(env: Env, timings: Timings) -> None:
    p = await env.project("cloud")
    rec = await env.reconciler([p.namespace])
    names = [dns_name(p)]

    result = await issue(env, p, names)
    record(env, timings, result)
    assert result.issued, result.error
    await assert_tls_secret(env, p.namespace, names)
    assert assert_validated_through_envoy(env, p, names) == {8089}

    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 1, "success counted")
    assert outcomes(m, p, "failure") == 0
    assert m.total("acme_gateway_writes_total", kind="Service", verb="patch", result="success") == 1
    assert m.total("acme_gateway_writes_total", kind="Backend", verb="create", result="success") == 1
    assert m.total("acme_gateway_writes_total", kind="HTTPRoute", verb="create", result="success") == 1
    assert m.total("acme_gateway_route_reverts_total") == 0
    assert_no_rejected_writes(m)


async def test_renewal_issues_a_new_certificate_the_same_way(env: Env, timings: Timings) -> None:
    p = await env.project("cloud")
    rec = await env.reconciler([p.namespace])
    names = [dns_name(p), dns_name(p, "www")]

    first = await issue(env, p, names)
    assert first.issued, first.error
    leaf = await assert_tls_secret(env, p.namespace, names)

    renewal = await issue(env, p, names)  # a second order for the same names: fresh authorizations
    record(env, timings, first, "first_")
    record(env, timings, renewal, "renewal_")
    assert renewal.issued, renewal.error
    renewed = await assert_tls_secret(env, p.namespace, names)
    assert renewed.serial_number != leaf.serial_number
    assert renewed.not_valid_before_utc >= leaf.not_valid_before_utc
    assert {o.token for o in renewal.challenges}.isdisjoint({o.token for o in first.challenges})

    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 4, "two orders x two names counted")
    assert outcomes(m, p, "failure") == 0
    assert_no_rejected_writes(m)


async def test_two_cloud_projects_and_a_public_one_at_once(env: Env, timings: Timings) -> None:
    cloud_a, cloud_b, public = await env.project("cloud"), await env.project("cloud"), await env.project("public")
    rec = await env.reconciler([cloud_a.namespace, cloud_b.namespace, public.namespace])
    results: dict[str, IssueResult] = {}

    async def run(key: str, p: Project, **config: Any) -> None:
        results[key] = await issue(env, p, [dns_name(p)], **config)

    async with (
        history(env.api, SERVICES, public.namespace) as services,
        history(env.api, HTTPROUTES, public.namespace) as routes,
        anyio.create_task_group() as tg,
    ):
        # A public project's solver would be reached through its own public address; here nothing answers
        # behind the Service, so only the cloud projects can pass. The public one gives up after 6 s.
        tg.start_soon(functools.partial(run, "public", public, give_up_after=6.0))
        tg.start_soon(run, "a", cloud_a)
        tg.start_soon(run, "b", cloud_b)

    for key, p in (("a", cloud_a), ("b", cloud_b)):
        assert results[key].issued, results[key].error
        await assert_tls_secret(env, p.namespace, [dns_name(p)])
        assert_validated_through_envoy(env, p, [dns_name(p)])
        record(env, timings, results[key], f"cloud_{key}_")
    assert not results["public"].issued
    assert results["public"].challenges[0].state == "invalid"

    # The public project's solver objects were never written by the reconciler: the Service's
    # resourceVersion never changed; the route's spec, labels and generation never changed (its
    # resourceVersion does: Envoy Gateway writes the route's status).
    (svc_versions,) = services.by_name_prefix("cm-acme-http-solver-")
    assert {v["metadata"]["resourceVersion"] for v in svc_versions} == {svc_versions[0]["metadata"]["resourceVersion"]}
    assert svc_versions[0]["spec"]["type"] == "NodePort"
    (route_versions,) = routes.by_name_prefix("cm-acme-http-solver-")
    for version in route_versions:
        assert version["metadata"]["generation"] == 1
        assert version["spec"] == route_versions[0]["spec"]
        assert version["metadata"].get("labels") == route_versions[0]["metadata"].get("labels")
    assert len(routes.versions) == 1, "no companion route"
    assert await env.api.list(BACKENDS, public.namespace) == []

    m = await rec.metrics_when(
        lambda m: outcomes(m, cloud_a, "success") == 1 and outcomes(m, cloud_b, "success") == 1,
        "both cloud successes counted",
    )
    # Three writes per cloud solver (Service patch, Backend, companion route), none for the public one;
    # the deletes once the solver Services go (the reconciler's or the garbage collector's) do not count.
    for kind, verb in (("Service", "patch"), ("Backend", "create"), ("HTTPRoute", "create")):
        assert m.total("acme_gateway_writes_total", kind=kind, verb=verb, result="success") == 2, (kind, verb)
    assert m.total("acme_gateway_writes_total", verb="patch", result="success") == 2
    assert m.total("acme_gateway_writes_total", verb="create", result="success") == 4
    assert_no_rejected_writes(m)


async def test_nothing_of_the_solver_is_left_after_issuance(env: Env, timings: Timings) -> None:
    p = await env.project("cloud")
    rec = await env.reconciler([p.namespace])
    names = [dns_name(p)]
    result = await issue(env, p, names)
    assert result.issued, result.error
    record(env, timings, result)

    t0 = time.monotonic()

    async def clean() -> bool:
        return await solver_leftovers(env.api, p.namespace) is None

    await wait_for(clean, within=60, interval=0.2, what="Backend, companion route, solver Service gone")
    timings["challenges_deleted_to_clean"] = time.monotonic() - t0
    assert not [lb for lb in await env.api.list(SERVICES, p.namespace) if lb["spec"]["type"] == "LoadBalancer"]
    assert not [s for s in env.solvers.serving() if s[0] == p.namespace], "the solver server stopped too"
    assert await env.api.get_or_none(SECRETS, SECRET, p.namespace) is not None, "the certificate stays"
    m = await rec.metrics()
    assert_no_rejected_writes(m)
    # Between the Challenge's deletion and the garbage collector, cert-manager's route names a Challenge
    # that is gone: routine, not a forgery, so no refusal (and no Warning Event on the tenant's route).
    assert m.total("acme_gateway_refusals_total") == 0


@pytest.mark.parametrize("mode", ["shadow", "patch"])
async def test_cert_manager_reverts_with_shadow_and_patch_route_modes(env: Env, timings: Timings, mode: str) -> None:
    p = await env.project("cloud")
    rec = await env.reconciler([p.namespace], ["--route-mode", mode])
    names = [dns_name(p)]

    # cert-manager's cadence (5 passes 2 s apart, retry after 10 s) compressed 10x; every check starts
    # with Present, which reverts any edit of cert-manager's route. A client polling the gateway every
    # 20 ms meanwhile shows whether a revert ever reached the data plane.
    results: list[IssueResult] = []
    async with anyio.create_task_group() as tg:
        probe = GatewayProbe(env, p.namespace)
        tg.start_soon(probe.run)
        results.append(await issue(env, p, names))
        probe.stop.set()
    (result,) = results
    (challenge,) = result.challenges
    record(env, timings, result)
    timings["cert_manager_reverts"] = challenge.run.reverts
    accepted = result.started_at + (challenge.accepted_after or 0.0)
    timings["client_polls_after_first_key"] = probe.after_first_key(until=accepted)
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") + outcomes(m, p, "failure") == 1, "outcome counted")
    timings["reconciler_reverts_seen"] = m.total("acme_gateway_route_reverts_total")
    timings["reconciler_repatches"] = m.total("acme_gateway_route_repatches_total")
    timings["issued"] = result.issued
    assert_no_rejected_writes(m)

    if mode == "shadow":
        assert result.issued, result.error
        assert challenge.run.reverts == 0, "cert-manager found its route as it made it"
        assert m.total("acme_gateway_route_reverts_total") == 0
        assert m.total("acme_gateway_writes_total", kind="HTTPRoute", verb="patch") == 0
    else:
        assert challenge.run.reverts > 0, "cert-manager undid the reconciler's edit"
        assert m.total("acme_gateway_route_reverts_total") > 0
        assert m.total("acme_gateway_route_repatches_total") > 0
        assert result.issued, f"patch mode lost the race with cert-manager's revert: {result.error}"
    await assert_tls_secret(env, p.namespace, names)
    assert outcomes(m, p, "success") == 1


async def test_a_certificate_with_three_names_uses_three_ports_on_the_eip(env: Env, timings: Timings) -> None:
    p = await env.project("cloud")
    rec = await env.reconciler([p.namespace])
    names = [dns_name(p), dns_name(p, "www"), dns_name(p, "api")]

    result = await issue(env, p, names)
    record(env, timings, result)
    timings["per_name_valid"] = {o.dns_name.split(".")[0]: round(o.final_after or -1, 3) for o in result.challenges}
    assert result.issued, result.error
    await assert_tls_secret(env, p.namespace, names)
    ports = assert_validated_through_envoy(env, p, names)
    assert ports == {8089, 8090, 8091}, "three concurrent solvers, three distinct external ports on one EIP"
    events = await env.api.list(EVENTS, p.namespace)
    assert not [e for e in events if e["reason"] == "PortInUse"], "kube-dc refused no solver"
    m = await rec.metrics_when(lambda m: outcomes(m, p, "success") == 3, "three successes counted")
    assert m.total("acme_gateway_writes_total", kind="Backend", verb="create", result="success") == 3
    assert_no_rejected_writes(m)
