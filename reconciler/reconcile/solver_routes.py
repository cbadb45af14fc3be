"""cert-manager's solver HTTPRoutes: which solver Services a route names, and what a route may ask of us.

Both route modes read these: `shadows` copies a valid solver route's parentRefs and hostname into its
companion, `routes` (patch mode) rewrites the route itself. A solver route is tenant-writable input, so
it is checked before either acts on it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from reconciler.model import BACKEND_GROUP, BackendRef, Challenge, HTTPRoute
from reconciler.names import service_of_backend
from reconciler.reconcile.intents import Kind, Refusal
from reconciler.reconcile.ownership import refusal
from reconciler.reconcile.reasons import Refused
from reconciler.text import QUOTED_MAX, clip, quoted


def is_service_ref(ref: BackendRef) -> bool:
    return ref.group == "" and ref.kind == "Service"


def solver_service_name(ref: BackendRef, namespace: str) -> str | None:
    """The Service a same-namespace reference stands for: itself, or the Service behind `<svc>-backend`."""
    if ref.namespace not in (None, namespace):
        return None
    if is_service_ref(ref):
        return ref.name
    if ref.group == BACKEND_GROUP and ref.kind == "Backend":
        return service_of_backend(ref.name)
    return None


def solver_service_names(route: HTTPRoute) -> set[str]:
    """Services in the route's own namespace its backendRefs stand for (directly or via `<svc>-backend`)."""
    names = (solver_service_name(ref, route.meta.namespace) for ref in route.backend_refs())
    return {n for n in names if n}


@lru_cache(maxsize=4096)
def is_ip(text: str) -> bool:
    """Cached: asked for every hostname of every decision (3.8% of the reconciler's CPU in a storm)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def validate_route(route: HTTPRoute, challenge: Challenge) -> Refusal | None:
    """What a solver route may ask of us, whoever wrote it: backendRefs only in its own namespace, and
    exactly the Challenge's hostname (cert-manager omits hostnames when the name is an IP address)."""
    meta = route.meta
    foreign = sorted(
        {f"{ref.namespace}/{ref.name}" for ref in route.backend_refs() if ref.namespace not in (None, meta.namespace)}
    )
    if foreign:
        msg = f"backendRefs to other namespaces: {clip(', '.join(foreign), QUOTED_MAX)}"
        return refusal(Kind.HTTPROUTE, meta, Refused.CROSS_NAMESPACE_BACKEND_REF, msg)
    expected = () if is_ip(challenge.dns_name) else (challenge.dns_name,)
    if tuple(route.hostnames) != expected:
        msg = (
            f"hostnames {quoted(list(route.hostnames))} differ from Challenge {challenge.meta.name}'s {list(expected)}"
        )
        return refusal(Kind.HTTPROUTE, meta, Refused.HOSTNAME_MISMATCH, msg)
    return None
