"""Self-check stand-in for the shared gateway, for runs without Envoy (the full-stack suite has a real one).

In a kube-dc cloud project the gateway reaches a solver only through an Envoy Gateway Backend at the
solver Service's load-balancer address; a Service backendRef resolves to unreachable pod addresses (503).
`RoutedToBackend` passes exactly when the Challenge's HTTPRoute would get there that way.

Kinder than Envoy: it decides from the routes at the moment it looks (Envoy needs its xDS update first)
and knows only the rule order, not listeners, policies or status.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.kube import BACKENDS, HTTPROUTES, SERVICES, Kube, Obj
from testbed.polling import WaitTimeout, wait_for
from testbed.solverobjects import is_controlled_by


async def solver_service(api: Kube, ch: Obj) -> Obj | None:
    """The solver Service cert-manager made for ``ch``."""
    for svc in await api.list(SERVICES, ch["metadata"]["namespace"]):
        if is_controlled_by(svc, ch):
            return svc
    return None


async def solver_route(api: Kube, ch: Obj) -> Obj | None:
    """The solver HTTPRoute cert-manager made for ``ch``."""
    for route in await api.list(HTTPROUTES, ch["metadata"]["namespace"]):
        if is_controlled_by(route, ch):
            return route
    return None


def backend_refs(route: Obj) -> list[Obj]:
    """All backendRefs of all rules."""
    return [ref for rule in route["spec"]["rules"] for ref in rule.get("backendRefs", [])]


def ingress_ip(svc: Obj) -> str | None:
    """``status.loadBalancer.ingress[0].ip``."""
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return str(ingress[0]["ip"]) if ingress and ingress[0].get("ip") else None


def _rank(route: Obj, match: Obj) -> tuple[int, str, str]:
    """Envoy Gateway's order among rules with the same Exact path: more header matches first (a method
    match counts as one), then the older route, then the name."""
    headers = len(match.get("headers") or []) + (1 if "method" in match else 0)
    meta = route["metadata"]
    return (-headers, meta.get("creationTimestamp", ""), f"{meta['namespace']}/{meta['name']}")


def winning_rule(routes: list[Obj], host: str, path: str) -> Obj | None:
    """The rule the gateway would use for ``GET http://host/path`` among ``routes`` (Exact matches only:
    any prefix rule loses to an Exact one for the same path)."""
    best: tuple[tuple[int, str, str], Obj] | None = None
    for route in routes:
        hostnames = route["spec"].get("hostnames") or []
        if hostnames and host not in hostnames:
            continue
        for rule in route["spec"].get("rules", []):
            for match in rule.get("matches") or []:
                p = match.get("path") or {}
                if p.get("type") != "Exact" or p.get("value") != path or match.get("method", "GET") != "GET":
                    continue
                rank = _rank(route, match)
                if best is None or rank < best[0]:
                    best = (rank, rule)
    return best[1] if best else None


@dataclass(frozen=True)
class RoutedToBackend:
    """Passes when the gateway would send the challenge path to the solver through a Backend at its
    load-balancer address: of all HTTPRoutes in the namespace, the winning rule (Envoy Gateway's
    precedence) must point only at such Backends; a Service backendRef is unreachable in a cloud project.

    ``propagation`` stands for the gateway's config delay: cert-manager reverts its route just before a
    check, and a real gateway keeps serving the previous config for a moment.
    """

    api: Kube
    propagation: float = 1.0

    async def __call__(self, ch: Obj) -> bool:
        """One self-check."""
        try:
            return await wait_for(lambda: self.routed(ch), within=self.propagation, interval=0.05, what="routed")
        except WaitTimeout:
            return False

    async def routed(self, ch: Obj) -> bool:
        """The check without waiting."""
        ns = ch["metadata"]["namespace"]
        svc = await solver_service(self.api, ch)
        if svc is None:
            return False
        path = f"/.well-known/acme-challenge/{ch['spec']['token']}"
        rule = winning_rule(await self.api.list(HTTPROUTES, ns), ch["spec"]["dnsName"], path)
        refs = (rule or {}).get("backendRefs") or []
        for ref in refs:
            if ref.get("kind") != "Backend" or ref.get("namespace", ns) != ns:
                return False
            backend = await self.api.get_or_none(BACKENDS, ref["name"], ns)
            if backend is None:
                return False
            endpoint = backend["spec"]["endpoints"][0].get("ip", {})
            if endpoint.get("address") != ingress_ip(svc) or endpoint.get("port") != svc["spec"]["ports"][0]["port"]:
                return False
        return bool(refs)
