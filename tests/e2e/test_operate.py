"""Issue 11 on the real API server: what a tenant reads on its Challenge (`kubectl describe challenge`),
the gateway probe against a loopback stand-in for the gateway, the debug endpoint, and dry runs.

No Envoy runs here (the full-stack suite has one): a Gateway object's status points the probe at a
loopback HTTP server that answers like the gateway would, or does not."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest

from testbed.harness import CertManager, ProjectFactory, StartReconciler
from testbed.httpservers import LoopbackServer, SeenRequest
from testbed.kube import BACKENDS, DOMAINCLAIMS, EVENTS, GATEWAYS, HTTPROUTES, SERVICES, Kube, Obj, wait_for
from testbed.kubedc import KubeDC, ensure_namespace
from tests.e2e.test_reconciler import WIRE_WITHIN, assert_clean, wired, writes

pytestmark = pytest.mark.anyio

GATEWAY_NS = "envoy-gateway-system"
GATEWAY_ADDRESS = "127.0.0.77"


def host(label: str) -> str:
    return f"{label}-{secrets.token_hex(4)}.example.test"


class FakeGateway:
    """Answers challenge paths the way the shared gateway would when it routes to the right solver."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], str] = {}  # (Host, path) -> body
        self.broken = False
        self.seen: list[SeenRequest] = []

    def respond(self, request: SeenRequest) -> tuple[int, bytes]:
        self.seen.append(request)
        body = self.keys.get((request.headers.get("host", ""), request.path))
        if self.broken or body is None:
            return 503, b"no healthy upstream"
        return 200, body.encode()

    def serve(self, ch: Obj) -> None:
        path = f"/.well-known/acme-challenge/{ch['spec']['token']}"
        self.keys[(ch["spec"]["dnsName"], path)] = ch["spec"]["key"]


@pytest.fixture
def fake_gateway() -> Iterator[tuple[FakeGateway, LoopbackServer]]:
    gateway = FakeGateway()
    with LoopbackServer(GATEWAY_ADDRESS, 0, gateway.respond, name="fake-gateway") as server:
        yield gateway, server


@pytest.fixture
async def gateway_object(api: Kube, fake_gateway: tuple[FakeGateway, LoopbackServer]) -> AsyncIterator[Obj]:
    """Gateway `eg` (the one cert-manager's routes name), its status pointing at the fake gateway."""
    _, server = fake_gateway
    await ensure_namespace(api, GATEWAY_NS)
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "eg"},
        "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "protocol": "HTTP", "port": server.port}]},
    }
    await api.create(GATEWAYS, body, GATEWAY_NS)
    status = {"status": {"addresses": [{"type": "IPAddress", "value": GATEWAY_ADDRESS}]}}
    gateway = await api.patch(GATEWAYS, "eg", status, GATEWAY_NS, subresource="status")
    yield gateway
    await api.delete(GATEWAYS, "eg", GATEWAY_NS, missing_ok=True)


async def story(api: Kube, ch: Obj) -> list[tuple[str, str, int]]:
    """The Challenge's Events from us, as `kubectl describe challenge` lists them: (type, reason, count)."""
    events = [
        e
        for e in await api.list(EVENTS, ch["metadata"]["namespace"])
        if e["involvedObject"]["uid"] == ch["metadata"]["uid"]
        and e.get("source", {}).get("component") == "acme-gateway-reconciler"
    ]
    # Timestamps have whole seconds; a once-only Event's resourceVersion is its place in etcd's order.
    events.sort(key=lambda e: (e.get("firstTimestamp") or "", int(e["metadata"]["resourceVersion"])))
    return [(e["type"], e["reason"], int(e.get("count") or 1)) for e in events]


def reasons(events: list[tuple[str, str, int]]) -> list[str]:
    return [reason for _, reason, _ in events]


async def test_the_challenge_tells_its_story_and_the_gateway_serves_the_key(
    api: Kube,
    project: ProjectFactory,
    cert_manager: CertManager,
    reconciler: StartReconciler,
    fake_gateway: tuple[FakeGateway, LoopbackServer],
    gateway_object: Obj,
) -> None:
    gateway, _ = fake_gateway
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, host("story"), finalizer=False)
    gateway.serve(ch)
    await cert_manager.present(ch)
    await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired")

    async def told() -> list[str] | None:
        found = reasons(await story(api, ch))
        return found if "GatewayServes" in found else None

    told_reasons = await wait_for(told, within=WIRE_WITHIN, what="the story up to the probe")
    assert told_reasons == ["SolverExposed", "BackendReady", "Routed", "GatewayServes"], "a story, in order"
    assert all(kind == "Normal" for kind, _, _ in await story(api, ch))
    probe = gateway.seen[-1]
    assert probe.headers["host"] == ch["spec"]["dnsName"]
    assert probe.path == f"/.well-known/acme-challenge/{ch['spec']['token']}"

    async with httpx.AsyncClient() as http:
        debug = (await http.get(f"{rec.base_url}/debug/challenges")).json()["challenges"]
    (record,) = [c for c in debug if c["challenge"] == f"{p.namespace}/{ch['metadata']['name']}"]
    assert record["step"] == "validation", "nothing left to us: the ACME server's turn"
    assert record["project"] == f"{p.org_namespace}/{p.name}"
    assert (record["network"], record["eip_port"], record["probe"]) == ("cloud", 8089, "ok")
    assert record["backend"].endswith("-backend")
    assert record["route"].endswith("-acme")
    assert record["gateway"] == f"{GATEWAY_NS}/eg"
    m = await rec.metrics()
    assert m.total("acme_gateway_gateway_probes_total", result="ok") == 1
    assert_clean(m, rec)


async def test_a_gateway_that_does_not_serve_the_key_is_named_on_the_challenge_once(
    api: Kube,
    project: ProjectFactory,
    cert_manager: CertManager,
    reconciler: StartReconciler,
    fake_gateway: tuple[FakeGateway, LoopbackServer],
    gateway_object: Obj,
) -> None:
    gateway, _ = fake_gateway
    gateway.broken = True  # e.g. the Backend points nowhere: Envoy answers 503
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace])
    ch = await cert_manager.challenge(p.namespace, host("broken"), finalizer=False)
    await cert_manager.present(ch)

    await wait_for(lambda: _has(api, ch, "GatewayProbeFailed"), within=30, what="the Warning after 4 failed probes")
    failed = (await rec.metrics()).total("acme_gateway_gateway_probes_total", result="bad_status")
    assert failed >= 4, "no Warning before the 4th failure in a row (Envoy takes a moment to serve a new route)"
    events = await story(api, ch)
    assert [e for e in events if e[0] == "Warning"] == [("Warning", "GatewayProbeFailed", 1)], (
        "one Warning naming the hop, never one Event per retry"
    )
    (warning,) = [
        e
        for e in await api.list(EVENTS, p.namespace)
        if e["reason"] == "GatewayProbeFailed" and e["involvedObject"]["uid"] == ch["metadata"]["uid"]
    ]
    assert "HTTP 503" in warning["message"]
    assert f"{GATEWAY_ADDRESS}:" in warning["message"]
    gateway.broken = False
    gateway.serve(ch)
    await wait_for(
        lambda: _has(api, ch, "GatewayServes"), within=45, what="served once the gateway answers (next backoff step)"
    )
    assert_clean(await rec.metrics(), rec)


async def _has(api: Kube, ch: Obj, reason: str) -> bool:
    return reason in reasons(await story(api, ch))


async def test_no_address_from_the_eip_in_time_is_a_warning(
    api: Kube, project: ProjectFactory, kubedc: KubeDC, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    kubedc.addresses.pop(p.namespace)  # the platform never gives this project's solver an address
    rec = await reconciler(args=["--namespaces", p.namespace, "--address-timeout", "1"])
    ch = await cert_manager.challenge(p.namespace, host("noaddr"), finalizer=False)
    await cert_manager.present(ch)
    await wait_for(lambda: _has(api, ch, "NoAddress"), within=WIRE_WITHIN, what="NoAddress warning")
    (warning,) = [
        e
        for e in await api.list(EVENTS, p.namespace)
        if e["reason"] == "NoAddress" and e["involvedObject"]["uid"] == ch["metadata"]["uid"]
    ]
    assert warning["type"] == "Warning"
    assert "no address within 1s" in warning["message"]
    assert "the platform" in warning["message"], "what the platform said about the Service (here: nothing)"
    assert reasons(await story(api, ch)) == ["SolverExposed", "NoAddress"]
    assert_clean(await rec.metrics(), rec)


async def test_a_dry_run_decides_and_logs_every_write_and_sends_none(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    rec = await reconciler(args=["--namespaces", p.namespace, "--dry-run"])
    name = host("dry")
    ch = await cert_manager.challenge(p.namespace, name, finalizer=False)
    solver = await cert_manager.present(ch)

    async def decided() -> bool:
        m = await rec.metrics()
        return m.total("acme_gateway_writes_total", dry_run="true") >= 2

    await wait_for(decided, within=WIRE_WITHIN, what="the claim and the Service patch decided")
    await anyio.sleep(2)
    svc = await api.get(SERVICES, solver.service["metadata"]["name"], p.namespace)
    assert svc["metadata"]["resourceVersion"] == solver.service["metadata"]["resourceVersion"], "not written"
    assert await api.list(BACKENDS, p.namespace) == []
    assert [r for r in await api.list(HTTPROUTES, p.namespace) if r["metadata"]["name"].endswith("-acme")] == []
    assert await api.get_or_none(DOMAINCLAIMS, name) is None
    ours = [
        e
        for e in await api.list(EVENTS, p.namespace)
        if e.get("source", {}).get("component") == "acme-gateway-reconciler"
    ]
    assert ours == [], "an Event is a write too"
    m = await rec.metrics()
    assert writes(m, dry_run="false") == 0
    assert m.total("acme_gateway_writes_total", kind="Service", verb="patch", dry_run="true") == 1
    assert m.total("acme_gateway_writes_total", kind="DomainClaim", verb="create", dry_run="true") == 1
    assert "dry run: would patch Service" in rec.log()
    assert "dry run: would create DomainClaim" in rec.log()
