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
