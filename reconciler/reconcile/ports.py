"""External ports for solver Services on the project's shared EIP.

kube-dc puts every LoadBalancer Service bound to an EIP on that EIP's one address, so two Services on
it cannot share a port, and cert-manager gives every solver Service port 8089: a second concurrent
challenge in a project would be refused. Each solver therefore gets its own port from a range, never one
another LoadBalancer Service on the EIP already uses (the project's own included); `targetPort` stays
8089. The choice is a function of the cache alone (the ports Services hold are the record), so it holds
across restarts; the shell serialises allocations per namespace and writes each result through to the
cache, so concurrent workers never pick the same port.
"""

from __future__ import annotations

from reconciler.model import Challenge, Service
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind
from reconciler.reconcile.ownership import solver_challenge
from reconciler.reconcile.snapshot import Snapshot

LOAD_BALANCER = "LoadBalancer"


def on_eip(svc: Service, policy: Policy) -> bool:
    """Bound to the EIP solvers use, by name or by kube-dc's default-gateway flag."""
    annotations = svc.meta.annotations
    if annotations.get(policy.bind_on_eip_annotation) == policy.eip_name:
        return True
    return policy.eip_name == "default-gw" and annotations.get(policy.bind_on_default_gw_annotation) == "true"


def _seniority(svc: Service) -> tuple[str, str]:
    return (svc.meta.creation_timestamp, svc.meta.name)


def ports_in_use(svc: Service, snapshot: Snapshot, policy: Policy) -> tuple[set[int], set[int]]:
    """(all ports, ports that force a move) other LoadBalancer Services hold on the EIP in this Service's
    project namespace. Any other Service's port forces a solver to move (we never move those), except a
    younger solver's: of two solvers on one port only the younger moves, so they never both move."""
    used: set[int] = set()
    senior: set[int] = set()
    for other in snapshot.services_in(svc.meta.namespace):
        if other.meta.uid == svc.meta.uid or other.meta.deletion_timestamp is not None:
            continue
        if other.type == LOAD_BALANCER and on_eip(other, policy):
            ports = {p.port for p in other.ports}
            used |= ports
            real_solver = isinstance(solver_challenge(other.meta, snapshot, policy, Kind.SERVICE), Challenge)
            if not real_solver or _seniority(other) < _seniority(svc):
                senior |= ports
    return used, senior


def solver_port(svc: Service, snapshot: Snapshot, policy: Policy) -> int | None:
    """The external port this solver should have: its current one when it already holds it on the EIP,
    in range, and no senior Service holds it too (no churn while a challenge is being validated), else
    the lowest port in range no Service holds; None when the range is full."""
    low, high = policy.solver_ports
    used, senior = ports_in_use(svc, snapshot, policy)
    current = svc.ports[0].port if svc.ports else None
    holds = svc.type == LOAD_BALANCER and on_eip(svc, policy)  # cert-manager's 8089 is no claim yet
    if holds and current is not None and low <= current <= high and current not in senior:
        return current
    return next((port for port in range(low, high + 1) if port not in used), None)
