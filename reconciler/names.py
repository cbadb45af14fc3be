"""How derived objects are named after their solver Service, both ways.

kube-dc's own service controller names a Service's Backend `<service>-backend`; routes and the cache find
the Service behind a Backend reference by undoing that suffix. The companion route of route mode `shadow`
is `<service>-acme`. Plain string rules, shared by the cache's indexes and the pure reconcilers.
"""

from __future__ import annotations

BACKEND_SUFFIX = "-backend"
SHADOW_SUFFIX = "-acme"


def backend_name(service_name: str) -> str:
    return service_name + BACKEND_SUFFIX


def service_of_backend(backend: str) -> str | None:
    """The Service a Backend of that name stands for, or None when the name does not follow the rule."""
    if backend.endswith(BACKEND_SUFFIX) and len(backend) > len(BACKEND_SUFFIX):
        return backend[: -len(BACKEND_SUFFIX)]
    return None


def shadow_name(service_name: str) -> str:
    return service_name + SHADOW_SUFFIX


WILDCARD_PREFIX = "*."
WILDCARD_NAME_PREFIX = "wildcard."


def claim_name(hostname: str) -> str:
    """The DomainClaim object for a hostname: the hostname itself; `*.example.com` is
    `wildcard.example.com` (a `*` is not allowed in object names). The CRD checks the same rule, so there
    is one claim object per hostname and the API server decides who was first."""
    if hostname.startswith(WILDCARD_PREFIX):
        return WILDCARD_NAME_PREFIX + hostname[len(WILDCARD_PREFIX) :]
    return hostname
