"""Route mode `patch` (the PRD's design): point cert-manager's solver HTTPRoute at the solver's Backend.

cert-manager's route sends the challenge path to the solver Service, whose endpoints the shared gateway
cannot reach in a cloud project; the Backend `<service>-backend` holds the load-balancer address it can
reach. Only references to a Service owned by the route's own Challenge are rewritten, so the rewrite
cannot be steered at other workloads. cert-manager restores its route before every self-check (see
the notes); a restore is just another update of the route, and is rewritten again.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from reconciler.config import Policy, RouteMode
from reconciler.model import BACKEND_GROUP, JSON, Backend, BackendRef, Challenge, HTTPRoute, Key
from reconciler.reconcile.backends import BACKEND_SUFFIX, backend_name
from reconciler.reconcile.intents import Decision, Kind, Patch, Refusal
from reconciler.reconcile.network import InvalidNetwork, Network, NetworkResult, UnknownNetwork, network_type
from reconciler.reconcile.ownership import owning_challenge, refusal, solver_challenge
from reconciler.reconcile.snapshot import Snapshot

CROSS_NAMESPACE_BACKEND_REF = "CrossNamespaceBackendRef"
HOSTNAME_MISMATCH = "HostnameMismatch"


class _RefState(Enum):
    OTHER = "other"  # not a reference to this Challenge's solver Service: left as it is
    NOT_CLOUD = "not-cloud"  # the solver is reachable without a Backend, or its network is unknown
    WAITING = "waiting-for-backend"
    ROUTED = "routed"


def _is_service_ref(ref: BackendRef) -> bool:
    return ref.group == "" and ref.kind == "Service"


def _solver_service_name(ref: BackendRef, namespace: str) -> str | None:
    """The Service a same-namespace reference stands for: itself, or the Service behind `<svc>-backend`."""
    if ref.namespace not in (None, namespace):
        return None
    if _is_service_ref(ref):
        return ref.name
    if ref.group == BACKEND_GROUP and ref.kind == "Backend" and ref.name.endswith(BACKEND_SUFFIX):
        return ref.name[: -len(BACKEND_SUFFIX)]
    return None


def _not_cloud_skip(net: NetworkResult) -> str:
    """Why a solver gets no Backend route; bad network input is refused by the Service reconciler."""
    if isinstance(net, UnknownNetwork):
        return net.skip
    return "invalid-network" if isinstance(net, InvalidNetwork) else "public-network"


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
    skips: list[str] = field(default_factory=list)

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
        service_name = _solver_service_name(ref, namespace)
        svc = snapshot.service(namespace, service_name) if service_name else None
        if svc is None or svc.meta.deletion_timestamp is not None:
            return self._keep(raw, _RefState.OTHER)
        owner = solver_challenge(svc.meta, snapshot, policy, Kind.SERVICE)
        if not isinstance(owner, Challenge) or owner.meta.uid != self.challenge.meta.uid:
            return self._keep(raw, _RefState.OTHER)
        net = network_type(svc.meta.annotations, namespace, snapshot, policy)
        if not (isinstance(net, Network) and net.cloud):
            return self._keep(raw, _RefState.NOT_CLOUD, _not_cloud_skip(net))

        name = backend_name(svc.meta.name)
        backend = snapshot.backend(namespace, name)
        if backend is None or backend.meta.deletion_timestamp is not None:
            return self._keep(raw, _RefState.WAITING, _RefState.WAITING.value)
        port = _backend_port(backend, ref)
        if not _is_service_ref(ref) and ref.name == name and ref.port == port:
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

    def _keep(self, raw: dict[str, Any], state: _RefState, skip: str | None = None) -> dict[str, Any]:
        self.states.append(state)
        if skip:
            self.skips.append(skip)
        return raw


def solver_service_names(route: HTTPRoute) -> set[str]:
    """Services in the route's own namespace its backendRefs stand for (directly or via `<svc>-backend`)."""
    names = (_solver_service_name(ref, route.meta.namespace) for ref in route.backend_refs())
    return {n for n in names if n}


def validate_route(route: HTTPRoute, challenge: Challenge) -> Refusal | None:
    """What a solver route may ask of us, whoever wrote it: backendRefs only in its own namespace, and
    exactly the Challenge's hostname (cert-manager omits hostnames when the name is an IP address)."""
    meta = route.meta
    foreign = sorted(
        {f"{ref.namespace}/{ref.name}" for ref in route.backend_refs() if ref.namespace not in (None, meta.namespace)}
    )
    if foreign:
        msg = f"backendRefs to other namespaces: {', '.join(foreign)}"
        return refusal(Kind.HTTPROUTE, meta, CROSS_NAMESPACE_BACKEND_REF, msg)
    expected = () if _is_ip(challenge.dns_name) else (challenge.dns_name,)
    if tuple(route.hostnames) != expected:
        msg = f"hostnames {list(route.hostnames)} differ from Challenge {challenge.meta.name}'s {list(expected)}"
        return refusal(Kind.HTTPROUTE, meta, HOSTNAME_MISMATCH, msg)
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def reconcile_route(key: Key, snapshot: Snapshot, policy: Policy) -> Decision:
    route = snapshot.route(*key)
    if route is None:
        return Decision()
    meta = route.meta
    challenge = owning_challenge(meta, snapshot, policy, Kind.HTTPROUTE)
    if isinstance(challenge, Decision):
        return challenge
    problem = validate_route(route, challenge)
    if problem is not None:
        return Decision(refusals=(problem,))
    if policy.route_mode is not RouteMode.PATCH:
        return Decision(skipped=f"route-mode-{policy.route_mode.value}")  # see shadows.py
    if not snapshot.projects_for(meta.namespace):
        return Decision(skipped="unknown-project")

    rewriter = _Rewriter(route, challenge, snapshot, policy)
    rules = rewriter.rules()
    solver_states = [s for s in rewriter.states if s in (_RefState.ROUTED, _RefState.WAITING)]
    extra: dict[str, Any] = {}
    if solver_states and all(s is _RefState.ROUTED for s in solver_states):
        extra["routed"] = True
    if not rewriter.changed:
        skipped = rewriter.skips[0] if rewriter.skips else (None if solver_states else "no-solver-refs")
        return Decision(skipped=skipped, extra=extra)
    body: JSON = {"metadata": {"resourceVersion": meta.resource_version}, "spec": {"rules": rules}}
    reason = f"solver of Challenge {challenge.meta.name}: backendRefs to the solver's Backend"
    patch = Patch(Kind.HTTPROUTE, meta.namespace, meta.name, meta.resource_version, body, reason)
    return Decision(writes=(patch,), extra=extra)
