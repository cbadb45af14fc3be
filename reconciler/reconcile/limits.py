"""Fair concurrency: at most `policy.max_challenges_per_project` challenges of a project are wired at once.

A project that starts a thousand challenges must not take every EIP port and every write of a renewal
storm from the others. A slot is held by a solver Service already exposed on the EIP whose Challenge is
still under way; the ones waiting get free slots oldest first (creation time, then name), so the choice
is a function of the cache alone, the same on every worker and after a restart. Waiting costs no write:
the solver stays as cert-manager made it until a slot frees.
"""

from __future__ import annotations

from reconciler.model import Challenge, Service
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind
from reconciler.reconcile.ownership import solver_challenge
from reconciler.reconcile.ports import LOAD_BALANCER, on_eip
from reconciler.reconcile.snapshot import Snapshot


def _active_challenge(svc: Service, snapshot: Snapshot, policy: Policy) -> Challenge | None:
    if svc.meta.deletion_timestamp is not None:
        return None
    owner = solver_challenge(svc.meta, snapshot, policy, Kind.SERVICE)
    return owner if isinstance(owner, Challenge) and not owner.final else None


def holds_slot(svc: Service, policy: Policy) -> bool:
    return svc.type == LOAD_BALANCER and on_eip(svc, policy)


def _queue(namespace: str, snapshot: Snapshot, policy: Policy) -> tuple[int, list[str]]:
    """(slots held, uids of the solvers not exposed yet, oldest Challenge first)."""
    held = 0
    waiting: list[tuple[str, str, str]] = []
    for svc in snapshot.solver_services_in(namespace):
        challenge = _active_challenge(svc, snapshot, policy)
        if challenge is None:
            continue
        if holds_slot(svc, policy):
            held += 1
        else:
            waiting.append((challenge.meta.creation_timestamp, challenge.meta.name, svc.meta.uid))
    return held, [uid for *_, uid in sorted(waiting)]


def may_wire(svc: Service, snapshot: Snapshot, policy: Policy) -> bool:
    """True when `svc` holds a slot or is among the oldest waiting ones that fit into the free slots."""
    if holds_slot(svc, policy):
        return True
    held, waiting = _queue(svc.meta.namespace, snapshot, policy)
    return svc.meta.uid in waiting[: max(0, policy.max_challenges_per_project - held)]


def waiting_count(namespace: str, snapshot: Snapshot, policy: Policy) -> int:
    """Solvers of a namespace that wait for a slot (for the waiting gauge)."""
    held, waiting = _queue(namespace, snapshot, policy)
    return max(0, len(waiting) - max(0, policy.max_challenges_per_project - held))
