"""Route mode `shadow` (the default): a companion HTTPRoute per solver that the gateway prefers.

cert-manager rewrites its own HTTPRoute back to the solver Service before every self-check, so editing it
(route mode `patch`) is undone every 10 s. Instead, `<service>-acme` carries the same parentRefs and
hostname, an Exact match on the challenge path plus `method: GET`, and the solver's Backend as its only
backendRef. Envoy Gateway orders rules for one hostname by match type, then path length, then the number
of header matches (a method match counts as one), so this route wins over cert-manager's whatever their
ages. cert-manager's route is never touched.

The companion is owned by the solver Service (garbage-collected with it) and carries only our managed-by
label: cert-manager finds its routes by the solver labels alone and deletes extras, so it must not
carry those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from reconciler.model import BACKEND_GROUP, GATEWAY_GROUP, JSON, Challenge, HTTPRoute, Key, Service
from reconciler.names import backend_name, shadow_name
from reconciler.policy import Policy, RouteMode
from reconciler.reconcile import claims
from reconciler.reconcile.backends import untrusted_backend
from reconciler.reconcile.intents import Create, Decision, Delete, Kind, Patch, Refusal
from reconciler.reconcile.ownership import owned_by_service, service_owner_references, solver_challenge
from reconciler.reconcile.reasons import Skip
from reconciler.reconcile.route_mode import effective_route_mode
from reconciler.reconcile.snapshot import Snapshot
from reconciler.reconcile.solver_routes import solver_service_names, validate_route
from reconciler.reconcile.solvers import solver

CHALLENGE_PATH = "/.well-known/acme-challenge/"
_NOT_CLOUD = (Skip.PUBLIC_NETWORK, Skip.UNKNOWN_PROJECT_NETWORK)
HTTPROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"


def is_managed(route: HTTPRoute, service_name: str, policy: Policy) -> bool:
    return owned_by_service(route.meta, service_name, policy)


class _Wanted(NamedTuple):
    """The companion as it should be, copied from cert-manager's solver `route`."""

    body: JSON
    route: HTTPRoute


@dataclass(frozen=True, slots=True)
class _NotWanted:
    """No companion should exist (and why), with the refusals found on the way."""

    skip: Skip
    refusals: tuple[Refusal, ...] = ()


@dataclass(frozen=True, slots=True)
class _Keep:
    """Leave whatever is there as it is (a namespace no Project owns, a claim about to be re-made)."""

    skip: Skip


def reconcile_shadow(service_key: Key, snapshot: Snapshot, policy: Policy) -> Decision:
    namespace, service = service_key
    if not snapshot.projects_for(namespace):
        # No Project owns the namespace (any more): no write here, not even a clean-up. The companion
        # goes with its Service (owner reference) when cert-manager removes the solver.
        return Decision(skipped=Skip.UNKNOWN_PROJECT)
    name = shadow_name(service)
    existing = snapshot.shadow_route(namespace, name)
    if (existing is not None and not is_managed(existing, service, policy)) or (
        existing is None and snapshot.route(namespace, name) is not None
    ):
        return Decision(skipped=Skip.SHADOW_NAME_TAKEN)  # someone else's route of that name: never touched
    wanted = _wanted(service_key, snapshot, policy)
    if isinstance(wanted, _Keep):
        return Decision(skipped=wanted.skip)
    if isinstance(wanted, _NotWanted):
        if existing is None or existing.meta.deletion_timestamp is not None:
            return Decision(refusals=wanted.refusals, skipped=wanted.skip)
        meta = existing.meta
        delete = Delete(
            Kind.HTTPROUTE,
            namespace,
            name,
            meta.uid,
            meta.resource_version,
            reason=f"solver Service {service} no longer needs it: {wanted.skip}",
        )
        return Decision(writes=(delete,), refusals=wanted.refusals)

    routed = wanted.route.meta.uid
    body = wanted.body
    if existing is None:
        reason = f"routes the challenge path of Service {service} to its Backend"
        return Decision(writes=(Create(Kind.HTTPROUTE, namespace, body, reason),), routed=routed)
    if existing.meta.deletion_timestamp is not None:
        return Decision(skipped=Skip.BEING_DELETED)
    patch = _difference(existing, body, policy)
    if patch is None:
        return Decision(routed=routed)
    meta = existing.meta
    write = Patch(
        Kind.HTTPROUTE,
        namespace,
        name,
        meta.resource_version,
        patch,
        reason=f"companion route of Service {service} out of date",
    )
    return Decision(writes=(write,), routed=routed)


def _wanted(service_key: Key, snapshot: Snapshot, policy: Policy) -> _Wanted | _NotWanted | _Keep:
    if policy.route_mode is RouteMode.PATCH:
        return _NotWanted(Skip.ROUTE_MODE_PATCH)
    svc = snapshot.service(*service_key)
    if svc is None or svc.meta.deletion_timestamp is not None:
        return _NotWanted(Skip.SERVICE_GONE)
    found = solver(svc, snapshot, policy)
    if isinstance(found, Decision):  # the Service reconciler reports its refusals
        return _NotWanted(Skip.NOT_CLOUD if found.skipped in _NOT_CLOUD else Skip.NOT_A_SOLVER)
    challenge = found.challenge
    claim = claims.verdict(challenge, found.project, snapshot, policy)
    if isinstance(claim, claims.Taken):
        return _NotWanted(Skip.DOMAIN_CLAIMED)  # refused (and shown) by the Service reconciler
    if isinstance(claim, claims.Free):
        return _Keep(Skip.WAITING_FOR_CLAIM)  # the Service reconciler claims it first
    backend = snapshot.backend(svc.meta.namespace, backend_name(svc.meta.name))
    if backend is None or backend.meta.deletion_timestamp is not None or not backend.endpoints:
        return _NotWanted(Skip.WAITING_FOR_BACKEND)
    distrust = untrusted_backend(backend, svc, challenge, policy)
    if distrust is not None:
        return _NotWanted(Skip.UNTRUSTED_BACKEND, (distrust,))
    port = backend.endpoints[0].port

    refusals: list[Refusal] = []
    for route in snapshot.routes_controlled_by(challenge.meta.uid):
        if route.meta.namespace != svc.meta.namespace or route.meta.deletion_timestamp is not None:
            continue
        if solver_challenge(route.meta, snapshot, policy, Kind.HTTPROUTE) != challenge:
            continue
        if svc.meta.name not in solver_service_names(route):
            continue
        problem = validate_route(route, challenge)
        if problem is not None:
            refusals.append(problem)
            continue
        if effective_route_mode(route, snapshot, policy)[0] is RouteMode.PATCH:
            return _NotWanted(Skip.ROUTE_MODE_PATCH)  # this Gateway keeps route order: see route_mode.py
        return _Wanted(_body(svc, challenge, route, backend_name(svc.meta.name), port, policy), route)
    return _NotWanted(Skip.INVALID_ROUTE if refusals else Skip.WAITING_FOR_ROUTE, tuple(refusals))


def _body(svc: Service, challenge: Challenge, route: HTTPRoute, backend: str, port: int | None, policy: Policy) -> JSON:
    ref: JSON = {"group": BACKEND_GROUP, "kind": "Backend", "name": backend, "weight": 1}
    if port is not None:
        ref["port"] = port
    spec: JSON = {
        "parentRefs": [dict(p) for p in route.parent_refs],
        "rules": [
            {
                "matches": [{"path": {"type": "Exact", "value": CHALLENGE_PATH + challenge.token}, "method": "GET"}],
                "backendRefs": [ref],
            }
        ],
    }
    if route.hostnames:
        spec["hostnames"] = list(route.hostnames)
    return {
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": shadow_name(svc.meta.name),
            "namespace": svc.meta.namespace,
            "labels": {policy.managed_by_label: policy.managed_by_value},
            "ownerReferences": service_owner_references(svc.meta),
        },
        "spec": spec,
    }


def _difference(existing: HTTPRoute, body: JSON, policy: Policy) -> JSON | None:
    """The merge patch that brings `existing` to `body`, or None when nothing differs."""
    spec = body["spec"]
    patch: JSON = {}
    changed: JSON = {}
    if [dict(p) for p in existing.parent_refs] != spec["parentRefs"]:
        changed["parentRefs"] = spec["parentRefs"]
    if list(existing.hostnames) != spec.get("hostnames", []):
        changed["hostnames"] = spec.get("hostnames")
    if [dict(r) for r in existing.rules] != spec["rules"]:
        changed["rules"] = spec["rules"]
    owner = body["metadata"]["ownerReferences"][0]
    ref = existing.meta.controller_ref()
    if ref is None or ref.uid != owner["uid"]:
        patch["metadata"] = {"ownerReferences": body["metadata"]["ownerReferences"]}
    if changed:
        patch["spec"] = changed
    return patch or None
