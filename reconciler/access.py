"""What the reconciler must be allowed to do: the one list the start-up checks review and
`manifests/rbac.yaml` grants (`tests/unit/test_access.py` holds the two, and the writes the reconcilers
can decide, to each other).

Reads come from the watch table (`watches.py`: every informer lists and watches), writes from `WRITES`,
the Lease from `LEADER_ELECTION` (only with `--leader-elect`, and only in its namespace).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.cache import ClusterCache
from reconciler.kube.preflight import Requirement
from reconciler.kube.resources import BACKENDS, DOMAINCLAIMS, EVENTS, HTTPROUTES, LEASES, SERVICES, Resource
from reconciler.policy import Policy
from reconciler.watches import Watch, watches


@dataclass(frozen=True, slots=True)
class Write:
    """Verbs the reconciler writes with, on one resource (or subresource), and why."""

    resource: Resource
    verbs: tuple[str, ...]
    why: str
    subresource: str | None = None


WRITES: tuple[Write, ...] = (
    Write(
        SERVICES,
        ("patch", "get"),
        "solver Services become LoadBalancers on the project's EIP; read before re-creating what was just "
        "deleted with its owner (writer.py)",
    ),
    Write(
        SERVICES,
        ("update",),
        "a Backend's owner reference blocks its Service's deletion (OwnerReferencesPermissionEnforcement)",
        "finalizers",
    ),
    Write(
        EVENTS,
        ("create", "get", "list", "patch"),
        "Events where tenants see them, one per object and reason with a count (get, patch); the platform's "
        "own Events on a solver Service quoted when its EIP gives no address (list)",
    ),
    Write(HTTPROUTES, ("create", "patch", "delete"), "companion routes; cert-manager's in route mode patch"),
    Write(DOMAINCLAIMS, ("create",), "a project's first challenge for a free name claims it"),
    Write(DOMAINCLAIMS, ("patch",), "contests recorded in the claim's status", "status"),
    Write(BACKENDS, ("create", "patch", "delete"), "one Backend per solver (and per LoadBalancer Service)"),
)
"""Every write (see `reconcile/*`: Patch, Create and Delete of each `Kind`; Events in `kube/events.py`)."""

LEADER_ELECTION = Write(
    LEASES, ("get", "create", "update", "list", "watch"), "leader election (kube/leader.py; watched for hand-overs)"
)


def _merge(into: dict[tuple[Resource, str | None], Requirement], req: Requirement) -> None:
    """One requirement per (sub)resource: verbs in first-use order, all namespaces win over a list."""
    key = (req.resource, req.subresource)
    held = into.get(key)
    if held is None:
        into[key] = req
        return
    verbs = held.verbs + tuple(v for v in req.verbs if v not in held.verbs)
    scopes = held.namespaces + tuple(n for n in req.namespaces if n not in held.namespaces)
    namespaces: tuple[str | None, ...] = (None,) if None in scopes else scopes
    into[key] = Requirement(
        held.resource, verbs, namespaces, held.subresource, held.optional and req.optional, held.lease
    )


def requirements(
    table: Iterable[Watch[Any]],
    namespaces: Sequence[str] = (),
    leader_election_namespace: str | None = None,
) -> tuple[Requirement, ...]:
    """What the process will do: list+watch per watch (in its scope), every write in the watched
    namespaces, and the Lease when electing (`leader_election_namespace`)."""
    watched: tuple[str | None, ...] = tuple(namespaces) or (None,)
    found: dict[tuple[Resource, str | None], Requirement] = {}
    for watch in table:
        scope = (None,) if watch.cluster_wide or not watch.resource.namespaced else watched
        _merge(found, Requirement(watch.resource, ("list", "watch"), scope, optional=watch.optional))
    for write in WRITES:
        scope = watched if write.resource.namespaced else (None,)
        _merge(found, Requirement(write.resource, write.verbs, scope, write.subresource))
    if leader_election_namespace is not None:
        lease = Requirement(LEASES, LEADER_ELECTION.verbs, (leader_election_namespace,), lease=True)
        _merge(found, lease)
    return tuple(found.values())


def for_policy(
    policy: Policy, namespaces: Sequence[str] = (), leader_election_namespace: str | None = None
) -> tuple[Requirement, ...]:
    """`requirements` of the watch table this policy builds (its selectors do not change the resources)."""
    return requirements(watches(ClusterCache(policy.solver_label), policy), namespaces, leader_election_namespace)
