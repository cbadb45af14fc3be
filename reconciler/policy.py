"""The decision-shaping settings the pure reconcilers receive.

Kept apart from `config` (which reads flags and the environment) so that `reconciler.reconcile` depends on
plain data only and its tests need no environment.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class BackendMode(StrEnum):
    """Which LoadBalancer Services get a reconciler-managed Backend."""

    ALL = "all"  # every Service annotated create-gateway-backend (what the PRD's service controller does)
    ACME = "acme"  # only ACME solver Services
    NONE = "none"  # the platform creates `<service>-backend` itself; we only route to it


class RouteMode(StrEnum):
    """How a solver's challenge path reaches its Backend."""

    AUTO = "auto"  # shadow, unless the route's Gateway keeps route order (EnvoyProxy preserveRouteOrder): patch
    SHADOW = "shadow"  # a companion HTTPRoute that wins by precedence; cert-manager's route is never edited
    PATCH = "patch"  # rewrite cert-manager's HTTPRoute backendRefs in place (the PRD's design; reverted by
    # cert-manager before every self-check, and re-patched)


class PolicyFields(BaseModel):
    """Label and annotation keys and modes: settable in `config.Settings`, read through `Policy`."""

    # cert-manager's solver labels (docs/cert-manager-http01.md)
    solver_label: str = "acme.cert-manager.io/http01-solver"
    domain_label: str = "acme.cert-manager.io/http-domain"
    token_label: str = "acme.cert-manager.io/http-token"
    # kube-dc's annotations (docs/kube-dc.md)
    network_type_annotation: str = "network.kube-dc.com/external-network-type"
    bind_on_eip_annotation: str = "service.nlb.kube-dc.com/bind-on-eip"
    create_backend_annotation: str = "service.nlb.kube-dc.com/create-gateway-backend"
    route_port_annotation: str = "service.nlb.kube-dc.com/route-port"
    bind_on_default_gw_annotation: str = "service.nlb.kube-dc.com/bind-on-default-gw-eip"
    eip_name: str = Field(default="default-gw", description="EIP the solver Services bind on")
    managed_by_label: str = "app.kubernetes.io/managed-by"
    managed_by_value: str = "acme-gateway-reconciler"
    backend_mode: BackendMode = BackendMode.ALL
    route_mode: RouteMode = RouteMode.AUTO
    max_challenges_per_project: int = Field(
        default=10, ge=1, description="challenges of one project wired at once; the rest wait, oldest first"
    )
    address_timeout: float = Field(
        default=30.0, gt=0, description="seconds an exposed solver may wait for its EIP address before a Warning"
    )
    probe: bool = Field(default=True, description="GET the challenge path through the gateway once it is routed")
    probe_address: str = Field(
        default="", description="HOST[:PORT] the probe sends to; empty: the route's Gateway's address, HTTP port"
    )


class Policy(PolicyFields):
    """The decision-shaping part of the settings, handed to the pure reconcilers."""

    model_config = ConfigDict(frozen=True)

    solver_ports: tuple[int, int] = (8089, 8188)
    """Inclusive range of external ports solver Services get on the EIP (one per concurrent challenge)."""

    def annotation_keys(self) -> frozenset[str]:
        """Annotations the cache keeps; every other annotation is dropped at the watch."""
        return frozenset(
            {
                self.network_type_annotation,
                self.bind_on_eip_annotation,
                self.create_backend_annotation,
                self.route_port_annotation,
                self.bind_on_default_gw_annotation,
            }
        )

    @property
    def managed_by(self) -> str:
        """`label=value` of the objects we create, as a label selector."""
        return f"{self.managed_by_label}={self.managed_by_value}"
