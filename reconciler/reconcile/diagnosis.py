"""What a tenant is told on its Challenge (`kubectl describe challenge`): progress as Normal Events, and
the hop that is stuck as a Warning naming it. cert-manager's own message ("wrong status code '503'") says
nothing about which hop failed; this does.

The hops, in order; the first one not done is the step the challenge waits on:

    solver      cert-manager made the solver Service
    claim       the name is the project's                 (DomainClaimed: the Service reconciler says so)
    slot        a concurrency slot                        (ConcurrencyLimitReached: likewise)
    exposure    the Service is a LoadBalancer on the EIP  -> SolverExposed
    address     the EIP gave it an address                (NoAddress after `policy.address_timeout`)
    backend     our Backend points at it                  -> BackendReady   (BackendNotAccepted)
    route       the challenge path is routed to it        -> Routed
    gateway     the Gateway accepted the route            (RouteNotAccepted)
    probe       the gateway answers with the key          -> GatewayServes  (GatewayProbeFailed)
    validation  nothing left to us: the ACME server's turn

Pure: it reads the cache and the shell's observations (probe answers, when a solver was first seen
exposed without an address) and asks for a probe or a later look; the shell does both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from reconciler.model import Backend, Challenge, Condition, HTTPRoute, ProbeResult, Service, failing
from reconciler.names import backend_name, shadow_name
from reconciler.policy import Policy, RouteMode
from reconciler.reconcile import claims
from reconciler.reconcile.backends import untrusted_backend
from reconciler.reconcile.claims import challenge_subject
from reconciler.reconcile.intents import Decision, Kind, Notice, ProbeRequest
from reconciler.reconcile.limits import holds_slot, may_wire
from reconciler.reconcile.ownership import owned_by_service, subject
from reconciler.reconcile.reasons import Noted
from reconciler.reconcile.route_mode import effective_route_mode, parent_gateways
from reconciler.reconcile.shadows import CHALLENGE_PATH
from reconciler.reconcile.snapshot import Snapshot
from reconciler.reconcile.solver_routes import is_ip
from reconciler.reconcile.solvers import Solver, solver
from reconciler.text import clip

PROBE_BACKOFF_MAX = 30.0
"""Seconds between probes of a challenge path the gateway keeps failing to serve."""
PROBE_WARN_AFTER = 4
"""Failed probes in a row before the Warning (the 4th comes 3.5 s after the first): Envoy serves a new route
only after Envoy Gateway's translation and xDS push, so the first probes of a healthy challenge fail too."""
CONDITION_TEXT_MAX = 256


@dataclass(frozen=True, slots=True)
class Progress:
    """Where one challenge's wiring stands (also the `/debug/challenges` record)."""

    challenge: str
    """namespace/name"""
    dns_name: str
    project: str | None = None
    """organization/name of the kube-dc Project"""
    network: str | None = None
    service: str | None = None
    """the solver Service"""
    eip_port: int | None = None
    """its external port on the project's EIP, once exposed"""
    address: str | None = None
    """the address the EIP gave it"""
    backend: str | None = None
    """the Backend pointing at that address (ours, or the platform's in backend mode none)"""
    route: str | None = None
    """the route carrying the challenge path to the Backend (companion, or cert-manager's in patch mode)"""
    gateway: str | None = None
    """namespace/name of the route's Gateway"""
    route_mode: str | None = None
    probe: str | None = None
    """the gateway probe's last answer"""
    step: str = "solver"
    """The hop it waits on (see the module docstring)."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Hops:
    """What the cache says about each hop of one solver."""

    found: Solver
    exposed: bool
    address: str
    backend: Backend | None
    route: HTTPRoute | None
    gateway: str
    mode: RouteMode


def _hops(found: Solver, snapshot: Snapshot, policy: Policy) -> _Hops:
    svc, challenge = found.service, found.challenge
    namespace = svc.meta.namespace
    backend = snapshot.backend(namespace, backend_name(svc.meta.name))
    if backend is not None and untrusted_backend(backend, svc, challenge, policy) is not None:
        backend = None
    cert_managers = [r for r in snapshot.routes_controlled_by(challenge.meta.uid) if r.meta.namespace == namespace]
    mode = effective_route_mode(cert_managers[0], snapshot, policy)[0] if cert_managers else RouteMode.SHADOW
    route = _routing(svc, cert_managers, mode, snapshot, policy) if backend is not None else None
    gateways = [f"{g.meta.namespace}/{g.meta.name}" for g in parent_gateways(route, snapshot)] if route else []
    return _Hops(
        found=found,
        exposed=holds_slot(svc, policy),
        address=svc.ingress[0] if svc.ingress else "",
        backend=backend,
        route=route,
        gateway=gateways[0] if gateways else "",
        mode=mode,
    )


def _routing(
    svc: Service, cert_managers: list[HTTPRoute], mode: RouteMode, snapshot: Snapshot, policy: Policy
) -> HTTPRoute | None:
    """The route that sends the challenge path to the solver's Backend: our companion, or in patch mode
    cert-manager's own once rewritten."""
    target = backend_name(svc.meta.name)
    if mode is RouteMode.PATCH:
        candidates = cert_managers
    else:
        companion = snapshot.shadow_route(svc.meta.namespace, shadow_name(svc.meta.name))
        ours = companion is not None and owned_by_service(companion.meta, svc.meta.name, policy)
        candidates = [companion] if companion is not None and ours else []
    for route in candidates:
        refs = route.backend_refs()
        if refs and all(ref.kind == "Backend" and ref.name == target for ref in refs):
            return route
    return None


def progress(challenge: Challenge, snapshot: Snapshot, policy: Policy) -> Progress:
    """The challenge's wiring, hop by hop, and the step it waits on."""
    base = Progress(challenge=f"{challenge.meta.namespace}/{challenge.meta.name}", dns_name=challenge.dns_name)
    if challenge.final:
        return replace(base, step="done")
    services = snapshot.services_controlled_by(challenge.meta.uid)
    found = solver(services[0], snapshot, policy) if services else None
    if not isinstance(found, Solver):
        return base
    hops = _hops(found, snapshot, policy)
    svc, project = found.service, found.project
    probe = snapshot.probe_result(challenge.meta.uid)
    return replace(
        base,
        project=f"{project.meta.namespace}/{project.meta.name}",
        network=project.network_type or "",
        service=svc.meta.name,
        eip_port=svc.ports[0].port if hops.exposed and svc.ports else None,
        address=hops.address or None,
        backend=hops.backend.meta.name if hops.backend else None,
        route=hops.route.meta.name if hops.route else None,
        gateway=hops.gateway or None,
        route_mode=hops.mode.value,
        probe=(probe.result if probe.ok else f"{probe.result}: {probe.detail}") if probe else None,
        step=_step(hops, probe, snapshot, policy),
    )


def _step(hops: _Hops, probe: ProbeResult | None, snapshot: Snapshot, policy: Policy) -> str:
    challenge, svc = hops.found.challenge, hops.found.service
    if not isinstance(claims.verdict(challenge, hops.found.project, snapshot, policy), claims.Owned):
        return "claim"
    if not hops.exposed:
        return "exposure" if may_wire(svc, snapshot, policy) else "slot"
    if not hops.address:
        return "address"
    if hops.backend is None or failing(hops.backend.conditions, "Accepted"):
        return "backend"
    if hops.route is None:
        return "route"
    if _route_problem(hops.route):
        return "gateway"
    if policy.probe and (probe is None or not probe.ok or probe.route_uid != hops.route.meta.uid):
        return "probe"
    return "validation"


def diagnose(key: tuple[str, str], snapshot: Snapshot, policy: Policy) -> Decision:
    """Events for a Challenge's progress and stuck hop, a probe when routed, and when to look again."""
    challenge = snapshot.challenge(*key)
    if challenge is None or challenge.final or challenge.meta.deletion_timestamp is not None:
        return Decision()
    services = snapshot.services_controlled_by(challenge.meta.uid)
    found = solver(services[0], snapshot, policy) if services else None
    if not isinstance(found, Solver):
        return Decision()  # not ours to tell (public, no project) or refused by the Service reconciler
    hops = _hops(found, snapshot, policy)
    on = (challenge_subject(challenge),)
    svc = found.service
    notices: list[Notice] = []
    recheck: float | None = None
    probe_request: ProbeRequest | None = None

    if hops.exposed:
        port = svc.ports[0].port if svc.ports else 0
        text = f"solver Service {svc.meta.name} exposed on EIP {policy.eip_name} port {port}"
        notices.append(Notice(on, "Normal", Noted.SOLVER_EXPOSED, text))
        if not hops.address:
            since = snapshot.exposed_since(svc.meta.uid)
            waited = snapshot.clock() - since if since is not None else 0.0
            if waited >= policy.address_timeout:
                text = (
                    f"EIP {policy.eip_name} gave solver Service {svc.meta.name} no address within "
                    f"{policy.address_timeout:g}s"
                )
                notices.append(Notice(on, "Warning", Noted.NO_ADDRESS, text, cite=subject(Kind.SERVICE, svc.meta)))
            else:
                recheck = policy.address_timeout - waited
    if hops.backend is not None:
        problem = failing(hops.backend.conditions, "Accepted")
        if problem is not None:
            text = f"Backend {hops.backend.meta.name} is not accepted by Envoy Gateway: {_condition_text(problem)}"
            notices.append(Notice(on, "Warning", Noted.BACKEND_NOT_ACCEPTED, text))
        elif hops.backend.endpoints and hops.backend.endpoints[0].ip:
            ep = hops.backend.endpoints[0]
            text = f"Backend {hops.backend.meta.name} at {ep.ip}:{ep.port}"
            notices.append(Notice(on, "Normal", Noted.BACKEND_READY, text))
    if hops.route is not None:
        via = f"Gateway {hops.gateway}" if hops.gateway else "its parent Gateway"
        text = f"challenge path routed through {via} by HTTPRoute {hops.route.meta.name}"
        notices.append(Notice(on, "Normal", Noted.ROUTED, text))
        problem_text = _route_problem(hops.route)
        if problem_text:
            notices.append(Notice(on, "Warning", Noted.ROUTE_NOT_ACCEPTED, problem_text))
        elif policy.probe:
            probe_request, probe_notice, probe_recheck = _probe(challenge, hops, snapshot, policy)
            notices += probe_notice
            recheck = probe_recheck if recheck is None or probe_recheck is None else min(recheck, probe_recheck)
    return Decision(notices=tuple(notices), probe=probe_request, recheck_after=recheck)


def _probe(
    challenge: Challenge, hops: _Hops, snapshot: Snapshot, policy: Policy
) -> tuple[ProbeRequest | None, list[Notice], float | None]:
    """Probe when routed and not yet seen served; repeat failures with backoff, each aggregated."""
    assert hops.route is not None
    target = _probe_target(hops, snapshot, policy)
    if target is None:
        return None, [], None
    on = (challenge_subject(challenge),)
    last = snapshot.probe_result(challenge.meta.uid)
    request = ProbeRequest(
        challenge_uid=challenge.meta.uid,
        route_uid=hops.route.meta.uid,
        address=target,
        host=challenge.dns_name,
        path=CHALLENGE_PATH + challenge.token,
        expected=challenge.key,
        attempts=1,
    )
    if last is None or last.route_uid != hops.route.meta.uid:
        return request, [], None
    if last.ok:
        text = f"the gateway at {target} answers the challenge path with the key"
        return None, [Notice(on, "Normal", Noted.GATEWAY_SERVES, text)], None
    text = f"the gateway at {target} does not serve the challenge path for {challenge.dns_name}: {last.detail}"
    failed = [Notice(on, "Warning", Noted.GATEWAY_PROBE_FAILED, text, repeat=True)]
    if last.attempts < PROBE_WARN_AFTER:
        failed = []
    wait = min(PROBE_BACKOFF_MAX, 0.5 * 2 ** (last.attempts - 1))
    left = last.at + wait - snapshot.clock()
    if left > 0:
        return None, failed, left
    return replace(request, attempts=last.attempts + 1), failed, None


def _probe_target(hops: _Hops, snapshot: Snapshot, policy: Policy) -> str | None:
    """HOST:PORT of the gateway: the configured one, else the route's Gateway's first address."""
    if policy.probe_address:
        return policy.probe_address if ":" in policy.probe_address.rsplit("]", 1)[-1] else f"{policy.probe_address}:80"
    assert hops.route is not None
    for gateway in parent_gateways(hops.route, snapshot):
        if gateway.addresses:
            address = gateway.addresses[0]
            host = f"[{address}]" if ":" in address and is_ip(address) else address
            return f"{host}:{gateway.http_port or 80}"
    return None


def _route_problem(route: HTTPRoute) -> str:
    """Why a parent Gateway does not serve the route (`status.parents[].conditions`), or ""."""
    for parent in route.parents:
        problem = failing(parent.conditions, "Accepted", "ResolvedRefs")
        if problem is not None:
            return f"HTTPRoute {route.meta.name} on Gateway {parent.gateway}: {_condition_text(problem)}"
    return ""


def _condition_text(condition: Condition) -> str:
    text = f"{condition.type}={condition.status} {condition.reason}: {condition.message}"
    return clip(text, CONDITION_TEXT_MAX)
