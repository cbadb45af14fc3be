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
from reconciler.reconcile.intents import Decision, Kind, Patch
from reconciler.reconcile.network import InvalidNetwork, UnknownNetwork, network_type
from reconciler.reconcile.ownership import refusal, solver_object
from reconciler.reconcile.ports import LOAD_BALANCER, solver_port
from reconciler.reconcile.reasons import Refused, Skip
from reconciler.reconcile.snapshot import Snapshot


def reconcile_service(key: Key, snapshot: Snapshot, policy: Policy) -> Decision:
    found = solver_object(snapshot.service(*key), snapshot, policy, Kind.SERVICE)
    if isinstance(found, Decision):
        return found
    svc, owner = found
    meta = svc.meta
    net = network_type(meta.annotations, meta.namespace, snapshot, policy)
    if isinstance(net, UnknownNetwork):
        return Decision(skipped=net.skip)
    if isinstance(net, InvalidNetwork):
        return Decision(refusals=(refusal(Kind.SERVICE, meta, net.reason, net.message),))
    if not net.cloud:
        return Decision(skipped=Skip.PUBLIC_NETWORK)

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
    if not changes:
        return Decision()
    patch = Patch(
        Kind.SERVICE,
        meta.namespace,
        meta.name,
        meta.resource_version,
        changes,
        reason=f"solver of Challenge {owner.meta.name} in a cloud network: LoadBalancer on {policy.eip_name}:{port}",
    )
    return Decision(writes=(patch,))
