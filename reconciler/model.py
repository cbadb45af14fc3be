"""Typed, trimmed views of the few fields the reconcilers read.

The informers build one view per watch event straight from the decoded JSON (never through the
kubernetes client's model classes, which cost ~25x more per object) and keep only these views in
the cache: no managedFields, no last-applied annotations, no specs we do not read.
Everything here is plain data; nothing does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from reconciler.shapes import shape_checked

JSON = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name) of a namespaced object; ("", name) for cluster-scoped ones."""

CHALLENGE_GROUP = "acme.cert-manager.io"
BACKEND_GROUP = "gateway.envoyproxy.io"
BACKEND_API_VERSION = "gateway.envoyproxy.io/v1alpha1"
GATEWAY_GROUP = "gateway.networking.k8s.io"

FINAL_SUCCESS_STATES = frozenset({"valid"})
FINAL_FAILURE_STATES = frozenset({"invalid", "expired", "errored"})


class View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OwnerRef(View):
    """One `metadata.ownerReferences` entry."""

    controller: bool = False
    """At most one reference is the controller: the only one ownership checks believe."""
    api_version: str
    kind: str
    name: str
    uid: str

    @property
    def group(self) -> str:
        group, sep, _ = self.api_version.rpartition("/")
        return group if sep else ""


class Meta(View):
    namespace: str = ""
    name: str
    uid: str = ""
    resource_version: str = ""
    creation_timestamp: str = ""
    deletion_timestamp: str | None = None
    labels: Mapping[str, str] = {}
    annotations: Mapping[str, str] = {}
    owner_refs: tuple[OwnerRef, ...] = ()

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def controller_ref(self) -> OwnerRef | None:
        """The owner reference with controller=true (Kubernetes allows at most one)."""
        for ref in self.owner_refs:
            if ref.controller:
                return ref
        return None

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> Meta:
        """Trim `metadata`; with `keep_annotations`, every other annotation is dropped."""
        md = raw.get("metadata") or {}
        annotations = md.get("annotations") or {}
        if keep_annotations is not None:
            annotations = {k: v for k, v in annotations.items() if k in keep_annotations}
        return cls(
            namespace=md.get("namespace") or "",
            name=md.get("name") or "",
            uid=md.get("uid") or "",
            resource_version=md.get("resourceVersion") or "",
            creation_timestamp=md.get("creationTimestamp") or "",
            deletion_timestamp=md.get("deletionTimestamp"),
            labels=md.get("labels") or {},
            annotations=annotations,
            owner_refs=tuple(
                OwnerRef(
                    api_version=ref.get("apiVersion", ""),
                    kind=ref.get("kind", ""),
                    name=ref.get("name", ""),
                    uid=ref.get("uid", ""),
                    controller=bool(ref.get("controller", False)),
                )
                for ref in md.get("ownerReferences") or ()
            ),
        )


class HasMeta(Protocol):
    """Any view: what the store indexes and the ownership checks read."""

    @property
    def meta(self) -> Meta: ...


class ServicePort(View):
    name: str | None = None
    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    node_port: int | None = None

    def raw(self) -> JSON:
        """Back to the API's shape, for a merge patch that replaces the ports list."""
        out: JSON = {"port": self.port, "protocol": self.protocol}
        for key, value in (("name", self.name), ("targetPort", self.target_port), ("nodePort", self.node_port)):
            if value is not None:
                out[key] = value
        return out


class Service(View):
    meta: Meta
    type: str = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    ingress: tuple[str, ...] = ()
    """`status.loadBalancer.ingress[*]` addresses (ip, else hostname), in order."""
    cluster_ip: str = ""
    """`spec.clusterIP`; "None" for a headless Service, which can never become a LoadBalancer."""

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> Service:
        spec = raw.get("spec") or {}
        lb = (raw.get("status") or {}).get("loadBalancer") or {}
        return cls(
            meta=Meta.from_raw(raw, keep_annotations),
            type=spec.get("type") or "ClusterIP",
            cluster_ip=spec.get("clusterIP") or "",
            ports=tuple(
                ServicePort(
                    name=p.get("name"),
                    port=p["port"],
                    target_port=p.get("targetPort"),
                    protocol=p.get("protocol") or "TCP",
                    node_port=p.get("nodePort"),
                )
                for p in spec.get("ports") or ()
                if isinstance(p.get("port"), int)
            ),
            ingress=tuple(
                addr for entry in lb.get("ingress") or () if (addr := entry.get("ip") or entry.get("hostname"))
            ),
        )


class BackendEndpoint(View):
    """One `spec.endpoints[]` entry; exactly one of ip, fqdn, unix is set by the CRD's rules."""

    ip: str | None = None
    fqdn: str | None = None
    port: int | None = None
    unix: str | None = None


class Condition(View):
    """One `status.conditions[]` entry, as Envoy Gateway reports on Backends and routes."""

    type: str
    status: str
    reason: str = ""
    message: str = ""

    @classmethod
    def all_from(cls, conditions: Any) -> tuple[Condition, ...]:
        return tuple(
            cls(
                type=str(c.get("type") or ""),
                status=str(c.get("status") or ""),
                reason=str(c.get("reason") or ""),
                message=str(c.get("message") or ""),
            )
            for c in conditions or ()
            if isinstance(c, Mapping)
        )


def failing(conditions: tuple[Condition, ...], *types: str) -> Condition | None:
    """The first of these condition types whose status is False (not merely absent or Unknown)."""
    return next((c for c in conditions if c.type in types and c.status == "False"), None)


class Backend(View):
    meta: Meta
    endpoints: tuple[BackendEndpoint, ...] = ()
    conditions: tuple[Condition, ...] = ()
    """What Envoy Gateway says about it (`Accepted`)."""

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> Backend:
        endpoints = []
        for ep in (raw.get("spec") or {}).get("endpoints") or ():
            ip, fqdn, unix = ep.get("ip"), ep.get("fqdn"), ep.get("unix")
            if ip:
                endpoints.append(BackendEndpoint(ip=ip.get("address"), port=ip.get("port")))
            elif fqdn:
                endpoints.append(BackendEndpoint(fqdn=fqdn.get("hostname"), port=fqdn.get("port")))
            elif unix:
                endpoints.append(BackendEndpoint(unix=unix.get("path")))
        conditions = Condition.all_from((raw.get("status") or {}).get("conditions"))
        return cls(meta=Meta.from_raw(raw, keep_annotations), endpoints=tuple(endpoints), conditions=conditions)


class BackendRef(View):
    """A rule's backendRef with the Gateway API defaults filled in (group "", kind Service)."""

    group: str = ""
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int | None = None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> BackendRef:
        return cls(
            group=raw.get("group") or "",
            kind=raw.get("kind") or "Service",
            name=raw.get("name") or "",
            namespace=raw.get("namespace"),
            port=raw.get("port"),
            weight=raw.get("weight"),
        )


class ParentStatus(View):
    """A Gateway's verdict on a route (`status.parents[]`): namespace/name of the Gateway and conditions."""

    gateway: str
    conditions: tuple[Condition, ...] = ()


class HTTPRoute(View):
    meta: Meta
    parent_refs: tuple[JSON, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[JSON, ...] = ()
    """Rules as the API server returned them: patch mode rewrites them whole (merge patch replaces lists)."""
    parents: tuple[ParentStatus, ...] = ()

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> HTTPRoute:
        spec = raw.get("spec") or {}
        meta = Meta.from_raw(raw, keep_annotations)
        parents = []
        for parent in (raw.get("status") or {}).get("parents") or ():
            ref = parent.get("parentRef") or {}
            gateway = f"{ref.get('namespace') or meta.namespace}/{ref.get('name') or ''}"
            parents.append(ParentStatus(gateway=gateway, conditions=Condition.all_from(parent.get("conditions"))))
        route = cls(
            meta=meta,
            parent_refs=tuple(spec.get("parentRefs") or ()),
            hostnames=tuple(spec.get("hostnames") or ()),
            rules=tuple(spec.get("rules") or ()),
            parents=tuple(parents),
        )
        route.backend_refs()  # refs of the wrong shape refuse the route here, not in every index and reconciler
        return route

    def backend_refs(self) -> tuple[BackendRef, ...]:
        return tuple(BackendRef.from_raw(ref) for rule in self.rules for ref in rule.get("backendRefs") or ())


class Challenge(View):
    meta: Meta
    dns_name: str = ""
    token: str = ""
    key: str = ""
    """The key authorization the solver serves (public by design: the ACME server fetches it)."""
    type: str = ""
    state: str = ""

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> Challenge:
        spec = raw.get("spec") or {}
        return cls(
            meta=Meta.from_raw(raw, keep_annotations),
            dns_name=spec.get("dnsName") or "",
            token=spec.get("token") or "",
            key=spec.get("key") or "",
            type=spec.get("type") or "",
            state=(raw.get("status") or {}).get("state") or "",
        )

    @property
    def final(self) -> bool:
        return self.state in FINAL_SUCCESS_STATES or self.state in FINAL_FAILURE_STATES


class Project(View):
    meta: Meta
    project_namespace: str
    """`status.namespace`, else kube-dc's convention `<org-namespace>-<project-name>`."""
    network_type: str | None = None
    """`spec.egressNetworkType` (the real CRD), else `spec.externalNetworkType` (the PRD's name)."""

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> Project:
        meta = Meta.from_raw(raw, keep_annotations)
        spec = raw.get("spec") or {}
        status_ns = (raw.get("status") or {}).get("namespace")
        return cls(
            meta=meta,
            project_namespace=status_ns or f"{meta.namespace}-{meta.name}",
            network_type=spec.get("egressNetworkType") or spec.get("externalNetworkType"),
        )


class ProbeResult(View):
    """One GET of a challenge path through the gateway (the shell's observation; core decisions read it)."""

    ok: bool
    result: str
    """`ok`, `wrong_body`, `bad_status` or `connection_error` (the metric's label)."""
    detail: str
    at: float
    """`clock()` seconds."""
    route_uid: str
    """The route that was probed: a new route is probed afresh."""
    attempts: int = 1
