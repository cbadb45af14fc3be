"""The API resources the reconciler reads and writes, and their REST paths."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resource:
    """An API resource: its group/version, plural (the REST path) and kind (in object bodies)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    """False for cluster-scoped resources: no namespace segment in the path."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


SERVICES = Resource("", "v1", "services", "Service")
EVENTS = Resource("", "v1", "events", "Event")
BACKENDS = Resource("gateway.envoyproxy.io", "v1alpha1", "backends", "Backend")
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
CHALLENGES = Resource("acme.cert-manager.io", "v1", "challenges", "Challenge")
PROJECTS = Resource("kube-dc.com", "v1", "projects", "Project")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
TLSROUTES = Resource("gateway.networking.k8s.io", "v1", "tlsroutes", "TLSRoute")
GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways", "Gateway")
GATEWAYCLASSES = Resource("gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", namespaced=False)
ENVOYPROXIES = Resource("gateway.envoyproxy.io", "v1alpha1", "envoyproxies", "EnvoyProxy")
DOMAINCLAIMS = Resource("acme-gateway.kube-dc.com", "v1alpha1", "domainclaims", "DomainClaim", namespaced=False)
