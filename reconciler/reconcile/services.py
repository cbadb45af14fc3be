"""Solver Services in cloud networks: make them LoadBalancers on the project's EIP that ask for a Backend.

cert-manager makes its solver Service a NodePort, whose addresses the shared gateway cannot reach in a
cloud project. As a LoadBalancer bound to the EIP it gets a cloud-pool address the gateway can reach,
and the create-gateway-backend annotation gets a Backend pointing at that address. Each solver gets its
own external port on the shared EIP (`ports.py`). cert-manager never compares the Service's spec, so the
change sticks.
"""

from __future__ import annotations

from reconciler.model import JSON, Key
from reconciler.policy import Policy
from reconciler.reconcile import claims
from reconciler.reconcile.claims import challenge_subject
from reconciler.reconcile.intents import Decision, Kind, Notice, Patch, Write
from reconciler.reconcile.limits import may_wire
from reconciler.reconcile.ownership import refusal, subject
from reconciler.reconcile.ports import LOAD_BALANCER, solver_port
from reconciler.reconcile.reasons import Noted, Refused, Skip
from reconciler.reconcile.snapshot import Snapshot
from reconciler.reconcile.solvers import Solver, solver


def reconcile_service(key: Key, snapshot: Snapshot, policy: Policy) -> Decision:
    found = solver(snapshot.service(*key), snapshot, policy)
    if isinstance(found, Decision):
        return found
    svc, challenge = found.service, found.challenge
    meta = svc.meta
    claim = claims.verdict(challenge, found.project, snapshot, policy)
    if isinstance(claim, claims.Taken):
        return _taken(found, claim, snapshot)
    if not may_wire(svc, snapshot, policy):
        return _waiting(found, policy)

    port = solver_port(svc, snapshot, policy)
    if port is None:
        low, high = policy.solver_ports
        message = f"every solver port {low}-{high} on EIP {policy.eip_name} is taken in this project"
        return Decision(refusals=(refusal(Kind.SERVICE, meta, Refused.NO_FREE_PORT, message),))
    wanted = {policy.bind_on_eip_annotation: policy.eip_name, policy.create_backend_annotation: "true"}
    annotations = {k: v for k, v in wanted.items() if meta.annotations.get(k) != v}
    changes: JSON = {}
    if annotations:
        changes["metadata"] = {"annotations": annotations}
    spec: JSON = {}
    if svc.type != LOAD_BALANCER:
        spec["type"] = LOAD_BALANCER
    if svc.ports and svc.ports[0].port != port:
        # A merge patch replaces the list: send every port, the first moved to its own external port.
        spec["ports"] = [svc.ports[0].raw() | {"port": port}, *(p.raw() for p in svc.ports[1:])]
    if spec:
        changes["spec"] = spec
    writes: list[Write] = [claim.create] if isinstance(claim, claims.Free) else []
    if changes:
        reason = (
            f"solver of Challenge {challenge.meta.name} in a cloud network: LoadBalancer on {policy.eip_name}:{port}"
        )
        writes.append(Patch(Kind.SERVICE, meta.namespace, meta.name, meta.resource_version, changes, reason))
    return Decision(writes=tuple(writes))


def _taken(found: Solver, claim: claims.Taken, snapshot: Snapshot) -> Decision:
    """Another project holds the name: refuse (on the Service and the Challenge), record the contender
    on the claim, write nothing else. The tenant is not told who holds it."""
    challenge = found.challenge
    message = (
        f"{challenge.dns_name} is claimed by another project on the shared gateway; the platform operators "
        "can transfer its DomainClaim"
    )
    refused = refusal(
        Kind.SERVICE, found.service.meta, Refused.DOMAIN_CLAIMED, message, (challenge_subject(challenge),)
    )
    record = claims.contested(claim.claim, challenge, found.project, snapshot.now()) if claim.claim else None
    return Decision(writes=(record,) if record else (), refusals=(refused,), skipped=Skip.DOMAIN_CLAIMED)


def _waiting(found: Solver, policy: Policy) -> Decision:
    limit = policy.max_challenges_per_project
    notice = Notice(
        (challenge_subject(found.challenge), subject(Kind.SERVICE, found.service.meta)),
        "Warning",
        Noted.CONCURRENCY_LIMIT_REACHED,
        f"{limit} challenges of this project are being solved; this one waits for one of them to finish",
    )
    return Decision(notices=(notice,), skipped=Skip.WAITING_FOR_SLOT)
