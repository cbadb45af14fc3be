"""Route mode `patch` (the PRD's design): point cert-manager's solver HTTPRoute at the solver's Backend.

cert-manager's route sends the challenge path to the solver Service, whose endpoints the shared gateway
cannot reach in a cloud project; the Backend `<service>-backend` holds the load-balancer address it can
reach. Only references to a Service owned by the route's own Challenge are rewritten, so the rewrite
cannot be steered at other workloads. cert-manager restores its route before every self-check (see
the notes); a restore is just another update of the route, and is rewritten again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from reconciler.model import BACKEND_GROUP, JSON, Backend, BackendRef, Challenge, HTTPRoute, Key, Service
from reconciler.names import backend_name
from reconciler.policy import Policy, RouteMode
from reconciler.reconcile import claims
from reconciler.reconcile.backends import untrusted_backend
from reconciler.reconcile.claims import challenge_subject
from reconciler.reconcile.intents import Decision, Kind, Notice, Patch, Refusal
from reconciler.reconcile.network import InvalidNetwork, Network, NetworkResult, UnknownNetwork, network_type
from reconciler.reconcile.ownership import solver_challenge, solver_object
from reconciler.reconcile.reasons import Noted, Skip
from reconciler.reconcile.route_mode import effective_route_mode
from reconciler.reconcile.snapshot import Snapshot
from reconciler.reconcile.solver_routes import is_service_ref, solver_service_name, solver_service_names, validate_route
from reconciler.reconcile.solvers import SOLVER_PORT, solver, tenant_network


class _RefState(Enum):
    OTHER = "other"  # not a reference to this Challenge's solver Service: left as it is
    NOT_CLOUD = "not-cloud"  # the solver is reachable without a Backend, or its network is unknown
    WAITING = "waiting-for-backend"
    BLOCKED = "blocked"  # the name is another project's, or the Backend is not ours: back to the Service
    ROUTED = "routed"


def _not_cloud_skip(net: NetworkResult) -> Skip:
    """Why a solver gets no Backend route; bad network input is refused by the Service reconciler."""
    if isinstance(net, UnknownNetwork):
        return net.skip
    return Skip.INVALID_NETWORK if isinstance(net, InvalidNetwork) else Skip.PUBLIC_NETWORK


def _backend_port(backend: Backend, ref: BackendRef) -> int | None:
    for ep in backend.endpoints[:1]:
        if ep.port is not None:
            return ep.port
    return ref.port


@dataclass
class _Rewriter:
    """Rewrites one route's references, remembering what it found for the decision."""

    route: HTTPRoute
    challenge: Challenge
    snapshot: Snapshot
    policy: Policy
    changed: bool = False
    states: list[_RefState] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def rules(self) -> list[JSON]:
        out: list[JSON] = []
        for rule in self.route.rules:
            refs = rule.get("backendRefs")
            out.append({**rule, "backendRefs": [self.ref(raw) for raw in refs]} if refs else rule)
        return out

    def ref(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The reference as it should be."""
        namespace, snapshot, policy = self.route.meta.namespace, self.snapshot, self.policy
        ref = BackendRef.from_raw(raw)
        service_name = solver_service_name(ref, namespace)
        svc = snapshot.service(namespace, service_name) if service_name else None
        if svc is None or svc.meta.deletion_timestamp is not None:
            return self._keep(raw, _RefState.OTHER)
        owner = solver_challenge(svc.meta, snapshot, policy, Kind.SERVICE)
        if not isinstance(owner, Challenge) or owner.meta.uid != self.challenge.meta.uid:
            return self._keep(raw, _RefState.OTHER)
        net = network_type(svc.meta.annotations, namespace, snapshot, policy)
        if not (isinstance(net, Network) and net.cloud):
            return self._keep(raw, _RefState.NOT_CLOUD, _not_cloud_skip(net))
        found = solver(svc, snapshot, policy)
        if isinstance(found, Decision):  # refused by the Service reconciler
            return self._blocked(raw, svc, Skip.INVALID_SOLVER)
        claim = claims.verdict(owner, found.project, snapshot, policy)
        if isinstance(claim, claims.Taken):
            return self._blocked(raw, svc, Skip.DOMAIN_CLAIMED)
        if isinstance(claim, claims.Free):
            return self._keep(raw, _RefState.WAITING, Skip.WAITING_FOR_CLAIM)

        name = backend_name(svc.meta.name)
        backend = snapshot.backend(namespace, name)
        if backend is None or backend.meta.deletion_timestamp is not None:
            return self._keep(raw, _RefState.WAITING, Skip.WAITING_FOR_BACKEND)
        distrust = untrusted_backend(backend, svc, owner, policy)
        if distrust is not None:
            self.refusals.append(distrust)
            return self._blocked(raw, svc, Skip.UNTRUSTED_BACKEND)
        port = _backend_port(backend, ref)
        if not is_service_ref(ref) and ref.name == name and ref.port == port:
            return self._keep(raw, _RefState.ROUTED)
        new: dict[str, Any] = {"group": BACKEND_GROUP, "kind": "Backend", "name": name}
        if port is not None:
            new["port"] = port
        for keep in ("weight", "filters"):
            if keep in raw:
                new[keep] = raw[keep]
        self.changed = True
        self.states.append(_RefState.ROUTED)
        return new

    def _blocked(self, raw: dict[str, Any], svc: Service, skip: Skip) -> dict[str, Any]:
        """Never leave the gateway pointed at a Backend for this solver: back to the solver Service."""
        ref = BackendRef.from_raw(raw)
        if is_service_ref(ref):
            return self._keep(raw, _RefState.BLOCKED, skip)
        new: dict[str, Any] = {"group": "", "kind": "Service", "name": svc.meta.name}
        new["port"] = svc.ports[0].port if svc.ports else SOLVER_PORT
        for keep in ("weight", "filters"):
            if keep in raw:
                new[keep] = raw[keep]
        self.changed = True
        return self._keep(new, _RefState.BLOCKED, skip)

    def _keep(self, raw: dict[str, Any], state: _RefState, skip: Skip | None = None) -> dict[str, Any]:
        self.states.append(state)
        if skip:
            self.skips.append(skip)
        return raw


def _tenant_gate(route: HTTPRoute | None, snapshot: Snapshot, policy: Policy) -> Decision | None:
    """Nothing at all (not even a refusal) for routes outside cloud tenants' namespaces; the network is
    the one of the solver Service the route names (its own override), else the Project's."""
    if route is None:
        return Decision()
    namespace = route.meta.namespace
    named = (snapshot.service(namespace, name) for name in sorted(solver_service_names(route)))
    svc = next((s for s in named if s is not None), None)
    return tenant_network(dict(svc.meta.annotations) if svc else {}, namespace, snapshot, policy)


def reconcile_route(key: Key, snapshot: Snapshot, policy: Policy) -> Decision:
    route = snapshot.route(*key)
    silent = _tenant_gate(route, snapshot, policy)
    if silent is not None:
        return silent
    found = solver_object(route, snapshot, policy, Kind.HTTPROUTE)
    if isinstance(found, Decision):
        return found
    route, challenge = found
    problem = validate_route(route, challenge)
    if problem is not None:
        return Decision(refusals=(problem,))
    meta = route.meta
    mode, why = effective_route_mode(route, snapshot, policy)
    if mode is not RouteMode.PATCH:
        return Decision(skipped=Skip.ROUTE_MODE_SHADOW)  # see shadows.py
    chosen = (
        (Notice((challenge_subject(challenge),), "Warning", Noted.ROUTE_ORDER_PRESERVED, why),)
        if policy.route_mode is RouteMode.AUTO
        else ()
    )

    rewriter = _Rewriter(route, challenge, snapshot, policy)
    rules = rewriter.rules()
    solver_states = [s for s in rewriter.states if s in (_RefState.ROUTED, _RefState.WAITING, _RefState.BLOCKED)]
    routed = meta.uid if solver_states and all(s is _RefState.ROUTED for s in solver_states) else None
    refusals = tuple(rewriter.refusals)
    if not rewriter.changed:
        skipped = rewriter.skips[0] if rewriter.skips else (None if solver_states else Skip.NO_SOLVER_REFS)
        return Decision(refusals=refusals, notices=chosen, skipped=skipped, routed=routed)
    changes: JSON = {"spec": {"rules": rules}}
    target = "the solver's Backend" if routed else "the solver Service (no Backend may be used)"
    reason = f"solver of Challenge {challenge.meta.name}: backendRefs to {target}"
    patch = Patch(Kind.HTTPROUTE, meta.namespace, meta.name, meta.resource_version, changes, reason)
    return Decision(writes=(patch,), refusals=refusals, notices=chosen, routed=routed)
