"""Solver Services in cloud networks: make them LoadBalancers on the project's EIP that ask for a Backend.

cert-manager makes its solver Service a NodePort, whose addresses the shared gateway cannot reach in a
cloud project. As a LoadBalancer bound to the EIP it gets a cloud-pool address the gateway can reach,
and the create-gateway-backend annotation gets a Backend pointing at that address. cert-manager never
compares the Service's spec, so the change sticks.
"""

from __future__ import annotations

from reconciler.config import Policy
from reconciler.model import JSON, Key
from reconciler.reconcile.intents import Decision, Kind, Patch, Refusal
from reconciler.reconcile.network import InvalidNetwork, UnknownNetwork, network_type
from reconciler.reconcile.ownership import refusal, solver_challenge
from reconciler.reconcile.snapshot import Snapshot

LOAD_BALANCER = "LoadBalancer"


def reconcile_service(key: Key, snapshot: Snapshot, policy: Policy) -> Decision:
    svc = snapshot.service(*key)
    if svc is None:
        return Decision()
    meta = svc.meta
    if meta.deletion_timestamp is not None:
        return Decision(skipped="being-deleted")
    owner = solver_challenge(meta, snapshot, policy, Kind.SERVICE)
    if owner is None:
        return Decision(skipped="not-a-solver")
    if isinstance(owner, Refusal):
        return Decision(refusals=(owner,))
    net = network_type(meta.annotations, meta.namespace, snapshot, policy)
    if isinstance(net, UnknownNetwork):
        return Decision(skipped=net.skip)
    if isinstance(net, InvalidNetwork):
        return Decision(refusals=(refusal(Kind.SERVICE, meta, net.reason, net.message),))
    if not net.cloud:
        return Decision(skipped="public-network")

    wanted = {policy.bind_on_eip_annotation: policy.eip_name, policy.create_backend_annotation: "true"}
    annotations = {k: v for k, v in wanted.items() if meta.annotations.get(k) != v}
    body: JSON = {"metadata": {"resourceVersion": meta.resource_version}}
    if annotations:
        body["metadata"]["annotations"] = annotations
    if svc.type != LOAD_BALANCER:
        body["spec"] = {"type": LOAD_BALANCER}
    if not annotations and "spec" not in body:
        return Decision()
    patch = Patch(
        Kind.SERVICE,
        meta.namespace,
        meta.name,
        meta.resource_version,
        body,
        reason=f"solver of Challenge {owner.meta.name} in a cloud network: LoadBalancer on {policy.eip_name}",
    )
    return Decision(writes=(patch,))
