"""The Envoy Gateway Backend `<service>-backend` for a LoadBalancer Service that asks for one.

The Backend points the shared gateway at the Service's load-balancer address, the one address of a cloud
project the gateway can reach. A Backend is ours only when it carries our managed-by label and its
controller is that Service: anything else of that name (the platform's own, a tenant's) is never
touched. Ours is owned by the Service, so garbage collection removes it with the Service even when this
controller is down; deleting it here covers the Service ceasing to ask while it still exists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from reconciler.model import BACKEND_API_VERSION, JSON, Backend, Challenge, Key, OwnerRef, Service
from reconciler.names import backend_name
from reconciler.policy import BackendMode, Policy
from reconciler.reconcile.intents import Create, Decision, Delete, Kind, Patch, Refusal
from reconciler.reconcile.network import InvalidNetwork, UnknownNetwork, network_type
from reconciler.reconcile.ownership import (
    owned_by_service,
    refusal,
    service_owner_references,
    solver_challenge,
    subject,
)
from reconciler.reconcile.reasons import Refused, Skip
from reconciler.reconcile.snapshot import Snapshot
from reconciler.text import quoted


def is_managed(backend: Backend, service_name: str, policy: Policy) -> bool:
    return owned_by_service(backend.meta, service_name, policy)


def untrusted_backend(backend: Backend, svc: Service, challenge: Challenge, policy: Policy) -> Refusal | None:
    """Why the gateway must not be pointed at this Backend, or None when it may.

    A Backend can send the shared gateway anywhere (another tenant, the node, a metadata service), and a
    tenant can create one named `<service>-backend` before we do. So in backend modes `all` and `acme` a
    route uses only the Backend we made (our label, controlled by this very Service); in mode `none`
    (the platform makes it) only one whose single endpoint is this Service's load-balancer address and
    external port."""
    if policy.backend_mode is BackendMode.NONE:
        if _points_at_service(backend, svc):
            return None
        why = "its endpoints are not this Service's load-balancer address and port"
    else:
        ref = backend.meta.controller_ref()
        if is_managed(backend, svc.meta.name, policy) and ref is not None and ref.uid == svc.meta.uid:
            return None
        why = "it was not made by this reconciler for this Service"
    message = f"Backend {backend.meta.name} is not routed to: {why}"
    return refusal(
        Kind.SERVICE, svc.meta, Refused.UNTRUSTED_BACKEND, message, (subject(Kind.CHALLENGE, challenge.meta),)
    )


def _points_at_service(backend: Backend, svc: Service) -> bool:
    if not svc.ingress or not svc.ports or len(backend.endpoints) != 1:
        return False
    ep = backend.endpoints[0]
    return ep.fqdn is None and ep.unix is None and ep.port == svc.ports[0].port and _same_address(ep.ip, svc.ingress[0])


def parse_route_port(value: str) -> int | None:
    """A port number 1..65535 written in ASCII digits, else None (leading zeros allowed, but not a
    200,000-digit tenant string: `int()` of one raises, which would fail every reconcile)."""
    if not (value.isascii() and value.isdigit()) or len(value.lstrip("0")) > 5:
        return None
    port = int(value)
    return port if 1 <= port <= 65535 else None


def endpoint_address(text: str) -> str | None:
    """`text` as the Backend CRD accepts it, or None when it is not an IP literal.

    IPv6 is written as eight unpadded groups without `::`: the CRD's pattern rejects several valid
    compressed forms (e.g. `2001:db8::1:2:3`) but accepts every address in this form."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        return str(addr)
    if addr.scope_id is not None:
        return None
    return ":".join(format(int(group, 16), "x") for group in addr.exploded.split(":"))


def _same_address(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class _Wanted:
    """The one endpoint the Backend should have."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class _Blocked:
    """The Service asks, but nothing may be written now (waiting, or bad input)."""

    skipped: Skip | None = None
    refusal: Refusal | None = None


def _asks(svc: Service | None, snapshot: Snapshot, policy: Policy) -> Skip | None:
    """None when the Service asks for a Backend, else why it does not."""
    if svc is None:
        return Skip.SERVICE_GONE
    if svc.meta.deletion_timestamp is not None:
        return Skip.SERVICE_BEING_DELETED
    if svc.type != "LoadBalancer" or svc.meta.annotations.get(policy.create_backend_annotation) != "true":
        return Skip.BACKEND_NOT_REQUESTED
    if policy.backend_mode is BackendMode.NONE:
        return Skip.BACKEND_MODE_NONE
    if policy.backend_mode is BackendMode.ACME:
        owner = solver_challenge(svc.meta, snapshot, policy, Kind.SERVICE)
        if owner is None or isinstance(owner, Refusal):
            return Skip.NOT_A_SOLVER  # a look-alike's refusal is reported by the Service reconciler
    return None


def _wanted(svc: Service, policy: Policy) -> _Wanted | _Blocked:
    meta = svc.meta
    raw_port = meta.annotations.get(policy.route_port_annotation, "")
    if raw_port:
        port = parse_route_port(raw_port)
        if port is None:
            msg = f"annotation {policy.route_port_annotation}={quoted(raw_port)} is not a port number 1..65535"
            return _Blocked(refusal=refusal(Kind.SERVICE, meta, Refused.INVALID_ROUTE_PORT, msg))
    elif svc.ports:
        port = svc.ports[0].port
    else:
        return _Blocked(skipped=Skip.NO_SERVICE_PORT)
    if not svc.ingress:
        return _Blocked(skipped=Skip.WAITING_FOR_ADDRESS)
    address = endpoint_address(svc.ingress[0])
    if address is None:
        msg = f"load-balancer address {quoted(svc.ingress[0])} is not an IP address; a Backend needs one"
        return _Blocked(refusal=refusal(Kind.SERVICE, meta, Refused.NON_IP_ADDRESS, msg))
    return _Wanted(address, port)


def _network_block(svc: Service | None, namespace: str, snapshot: Snapshot, policy: Policy) -> _Blocked | None:
    """None when the Service's network is cloud; otherwise why no Backend may be written here."""
    net = network_type(svc.meta.annotations if svc else {}, namespace, snapshot, policy)
    if isinstance(net, UnknownNetwork):
        return _Blocked(skipped=net.skip)
    if isinstance(net, InvalidNetwork):
        if svc is None:
            return _Blocked(skipped=Skip.INVALID_NETWORK)
        return _Blocked(refusal=refusal(Kind.SERVICE, svc.meta, net.reason, net.message))
    return None if net.cloud else _Blocked(skipped=Skip.PUBLIC_NETWORK)


def _blocked(block: _Blocked) -> Decision:
    return Decision(refusals=(block.refusal,) if block.refusal else (), skipped=block.skipped)


def _endpoints(want: _Wanted) -> list[JSON]:
    return [{"ip": {"address": want.address, "port": want.port}}]


def _endpoints_match(backend: Backend, want: _Wanted) -> bool:
    if len(backend.endpoints) != 1:
        return False
    ep = backend.endpoints[0]
    return ep.fqdn is None and ep.unix is None and ep.port == want.port and _same_address(ep.ip, want.address)


def reconcile_backend(service_key: Key, snapshot: Snapshot, policy: Policy) -> Decision:
    namespace, service_name = service_key
    name = backend_name(service_name)
    svc = snapshot.service(namespace, service_name)
    backend = snapshot.backend(namespace, name)
    if backend is not None:
        if backend.meta.deletion_timestamp is not None:
            return Decision(skipped=Skip.BACKEND_BEING_DELETED)
        if not is_managed(backend, service_name, policy):
            return Decision(skipped=Skip.BACKEND_NOT_MANAGED)

    why_not = _asks(svc, snapshot, policy)
    if why_not is not None:
        if backend is None:
            return Decision(skipped=why_not)
        block = _network_block(svc, namespace, snapshot, policy)
        if block is not None:
            return Decision(skipped=block.skipped or why_not)  # no writes outside known cloud networks
        delete = Delete(
            Kind.BACKEND,
            namespace,
            name,
            backend.meta.uid,
            backend.meta.resource_version,
            reason=f"Service {service_name}: {why_not}",
        )
        return Decision(writes=(delete,))

    assert svc is not None  # _asks returns a reason when it is gone
    block = _network_block(svc, namespace, snapshot, policy)
    if block is not None:
        return _blocked(block)
    want = _wanted(svc, policy)
    if isinstance(want, _Blocked):
        return _blocked(want)

    if backend is None:
        body: JSON = {
            "apiVersion": BACKEND_API_VERSION,
            "kind": "Backend",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {policy.managed_by_label: policy.managed_by_value},
                "ownerReferences": service_owner_references(svc.meta),
            },
            "spec": {"endpoints": _endpoints(want)},
        }
        reason = f"Service {service_name} asks for a Backend at {want.address}:{want.port}"
        return Decision(writes=(Create(Kind.BACKEND, namespace, body, reason),))

    metadata: JSON = {}
    changes: JSON = {}
    wanted_owner = OwnerRef(api_version="v1", kind="Service", name=svc.meta.name, uid=svc.meta.uid, controller=True)
    if backend.meta.owner_refs != (wanted_owner,):
        metadata["ownerReferences"] = service_owner_references(svc.meta)
    if metadata:
        changes["metadata"] = metadata
    if not _endpoints_match(backend, want):
        changes["spec"] = {"endpoints": _endpoints(want)}
    if not changes:
        return Decision()
    reason = f"Backend of Service {service_name} is out of date"
    patch = Patch(Kind.BACKEND, namespace, name, backend.meta.resource_version, changes, reason)
    return Decision(writes=(patch,))
