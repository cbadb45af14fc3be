"""The read-only view of the cache the reconcilers decide on (implemented by `reconciler.cache`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from reconciler.gateways import EnvoyProxy, Gateway, GatewayClass
from reconciler.hostnames import DomainClaim, ServedRoute
from reconciler.model import Backend, Challenge, HTTPRoute, ProbeResult, Project, Service


class Snapshot(Protocol):
    def service(self, namespace: str, name: str) -> Service | None: ...

    def services_in(self, namespace: str) -> Sequence[Service]: ...

    def solver_services_in(self, namespace: str) -> Sequence[Service]:
        """Services carrying the solver label (a claim only; ownership is checked by the reconcilers)."""
        ...

    def backend(self, namespace: str, name: str) -> Backend | None: ...

    def route(self, namespace: str, name: str) -> HTTPRoute | None: ...

    def routes_controlled_by(self, uid: str) -> Sequence[HTTPRoute]:
        """cert-manager's solver routes whose controller owner reference has this uid."""
        ...

    def shadow_route(self, namespace: str, name: str) -> HTTPRoute | None:
        """An HTTPRoute carrying our managed-by label (the companion routes of route mode `shadow`)."""
        ...

    def challenge(self, namespace: str, name: str) -> Challenge | None: ...

    def challenge_by_uid(self, uid: str) -> Challenge | None: ...

    def challenge_was_deleted(self, uid: str) -> bool:
        """A Challenge with this uid existed and was deleted (its objects await garbage collection)."""
        ...

    def projects_for(self, namespace: str) -> Sequence[Project]:
        """Projects whose project namespace is `namespace` (normally one; more is a conflict)."""
        ...

    def claim(self, hostname: str) -> DomainClaim | None:
        """The DomainClaim for exactly this (normalized) hostname, `*.`-wildcards included."""
        ...

    def routes_serving(self, hostname: str) -> Sequence[ServedRoute]:
        """HTTPRoutes and TLSRoutes whose hostnames include exactly this one (a wildcard is looked up as
        written, `*.example.com`)."""
        ...

    def gateway(self, namespace: str, name: str) -> Gateway | None: ...

    def gateway_class(self, name: str) -> GatewayClass | None: ...

    def envoy_proxy(self, namespace: str, name: str) -> EnvoyProxy | None: ...

    def services_controlled_by(self, uid: str) -> Sequence[Service]:
        """Services whose controller owner reference has this uid (a Challenge's solver Services)."""
        ...

    def probe_result(self, challenge_uid: str) -> ProbeResult | None:
        """The gateway probe's last answer for this Challenge (observed by the shell)."""
        ...

    def exposed_since(self, service_uid: str) -> float | None:
        """When (`clock()` seconds) the solver Service was first seen exposed on the EIP without an address."""
        ...

    def clock(self) -> float:
        """Monotonic seconds, injected so decisions that wait for a time limit stay testable."""
        ...

    def now(self) -> str:
        """The current time, RFC 3339 (for condition timestamps); injected so decisions stay testable."""
        ...
