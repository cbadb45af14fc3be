"""How the shared Gateways are set up: the views route mode `auto` and the gateway probe read (a Gateway,
its GatewayClass, the EnvoyProxy configuring either). Trimmed views, plain data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.model import BACKEND_GROUP, Meta, View
from reconciler.shapes import shape_checked


class ParamsRef(View):
    """A Gateway's or GatewayClass's `parametersRef`: which EnvoyProxy configures its data plane."""

    group: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""

    @classmethod
    def from_raw(cls, raw: Any, namespace: str = "") -> ParamsRef | None:
        if not isinstance(raw, Mapping) or not raw.get("name"):
            return None
        return cls(
            group=str(raw.get("group") or ""),
            kind=str(raw.get("kind") or ""),
            name=str(raw["name"]),
            namespace=str(raw.get("namespace") or namespace),
        )

    @property
    def envoy_proxy(self) -> bool:
        return self.group == BACKEND_GROUP and self.kind == "EnvoyProxy"


class GatewayClass(View):
    meta: Meta
    params: ParamsRef | None = None

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> GatewayClass:
        spec = raw.get("spec") or {}
        return cls(meta=Meta.from_raw(raw, frozenset()), params=ParamsRef.from_raw(spec.get("parametersRef")))


class Gateway(View):
    meta: Meta
    class_name: str = ""
    params: ParamsRef | None = None
    """`spec.infrastructure.parametersRef` (same namespace as the Gateway)."""
    addresses: tuple[str, ...] = ()
    """`status.addresses[].value`: where clients (and our probe) reach it."""
    http_port: int | None = None
    """The port of its first plain-HTTP listener (the one ACME HTTP-01 uses)."""

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> Gateway:
        meta = Meta.from_raw(raw, frozenset())
        spec = raw.get("spec") or {}
        infra = spec.get("infrastructure") or {}
        listeners = [ln for ln in spec.get("listeners") or () if isinstance(ln, Mapping)]
        http = next((ln.get("port") for ln in listeners if ln.get("protocol") == "HTTP"), None)
        addresses = (raw.get("status") or {}).get("addresses") or ()
        return cls(
            meta=meta,
            class_name=str(spec.get("gatewayClassName") or ""),
            params=ParamsRef.from_raw(infra.get("parametersRef"), meta.namespace),
            addresses=tuple(str(a["value"]) for a in addresses if isinstance(a, Mapping) and a.get("value")),
            http_port=http if isinstance(http, int) else None,
        )


class EnvoyProxy(View):
    meta: Meta
    preserve_route_order: bool = False
    """Envoy Gateway keeps route creation order instead of sorting rules by specificity."""

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> EnvoyProxy:
        spec = raw.get("spec") or {}
        return cls(meta=Meta.from_raw(raw, frozenset()), preserve_route_order=spec.get("preserveRouteOrder") is True)
