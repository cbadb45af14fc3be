"""Which route mode a solver route gets: route mode `auto` looks at the route's Gateway.

The companion route of mode `shadow` wins over cert-manager's only because Envoy Gateway sorts the rules
of all routes for a hostname by specificity (a method match counts as a header match). An EnvoyProxy with
`preserveRouteOrder: true`, referenced by the Gateway's `spec.infrastructure.parametersRef` or by its
GatewayClass's `spec.parametersRef`, turns that sort off: the older route, cert-manager's, would win and
every challenge would fail. For such a Gateway, `auto` uses mode `patch` (rewrite cert-manager's route,
reverted before each self-check and re-patched), and says so.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.gateways import EnvoyProxy, Gateway
from reconciler.model import GATEWAY_GROUP, HTTPRoute
from reconciler.policy import Policy, RouteMode
from reconciler.reconcile.snapshot import Snapshot


def parent_gateways(route: HTTPRoute, snapshot: Snapshot) -> Iterator[Gateway]:
    """The Gateways the route names in `parentRefs` that the cache holds."""
    for ref in route.parent_refs:
        if (ref.get("group") or GATEWAY_GROUP) != GATEWAY_GROUP or (ref.get("kind") or "Gateway") != "Gateway":
            continue
        gateway = snapshot.gateway(str(ref.get("namespace") or route.meta.namespace), str(ref.get("name") or ""))
        if gateway is not None:
            yield gateway


def envoy_proxies(gateway: Gateway, snapshot: Snapshot) -> Iterator[EnvoyProxy]:
    """The EnvoyProxy objects configuring a Gateway: its own, then its class's."""
    refs = [gateway.params]
    gateway_class = snapshot.gateway_class(gateway.class_name) if gateway.class_name else None
    if gateway_class is not None:
        refs.append(gateway_class.params)
    for ref in refs:
        if ref is not None and ref.envoy_proxy:
            proxy = snapshot.envoy_proxy(ref.namespace, ref.name)
            if proxy is not None:
                yield proxy


def effective_route_mode(route: HTTPRoute, snapshot: Snapshot, policy: Policy) -> tuple[RouteMode, str]:
    """SHADOW or PATCH for this solver route, and why (for the Event when `auto` chose patch)."""
    if policy.route_mode is not RouteMode.AUTO:
        return policy.route_mode, f"route mode {policy.route_mode.value} is configured"
    for gateway in parent_gateways(route, snapshot):
        for proxy in envoy_proxies(gateway, snapshot):
            if proxy.preserve_route_order:
                why = (
                    f"Gateway {gateway.meta.namespace}/{gateway.meta.name} keeps route order "
                    f"(EnvoyProxy {proxy.meta.namespace}/{proxy.meta.name} has preserveRouteOrder), so a "
                    "companion route could not win over cert-manager's: its route is patched instead"
                )
                return RouteMode.PATCH, why
    return RouteMode.SHADOW, "Envoy Gateway orders the rules by specificity"
