"""Builders of raw objects shaped like the ones cert-manager, kube-dc and Envoy Gateway really produce
(see docs/), and a helper that loads raw objects into the real cluster cache."""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.cache import ClusterCache
from reconciler.model import JSON
from reconciler.names import claim_name
from reconciler.policy import Policy
from reconciler.watches import store_raw, watches

NS = "shalb-demo"
ORG_NS = "shalb"
DOMAIN_LABEL = "acme.cert-manager.io/http-domain"
TOKEN_LABEL = "acme.cert-manager.io/http-token"
SOLVER_LABEL = "acme.cert-manager.io/http01-solver"
NETWORK_ANNOTATION = "network.kube-dc.com/external-network-type"
BIND_ANNOTATION = "service.nlb.kube-dc.com/bind-on-eip"
BACKEND_ANNOTATION = "service.nlb.kube-dc.com/create-gateway-backend"
ROUTE_PORT_ANNOTATION = "service.nlb.kube-dc.com/route-port"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "acme-gateway-reconciler"
TIMESTAMP = "2026-08-01T10:00:00Z"


def uid_of(kind: str, namespace: str, name: str) -> str:
    return f"uid-{kind.lower()}-{namespace}-{name}"


def adler(value: str) -> str:
    return str(zlib.adler32(value.encode()))


def _meta(kind: str, namespace: str, name: str, **extra: Any) -> JSON:
    md: JSON = {
        "name": name,
        "namespace": namespace,
        "uid": uid_of(kind, namespace, name),
        "resourceVersion": "1",
        "creationTimestamp": TIMESTAMP,
    }
    md.update({k: v for k, v in extra.items() if v is not None})
    return md


def owner_ref(obj: Mapping[str, Any], controller: bool = True) -> JSON:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def challenge(
    name: str = "my-app-tls-1-2837465-0",
    namespace: str = NS,
    dns_name: str = "my-app.example.com",
    token: str = "tok-Zq3hV9",
    state: str = "pending",
) -> JSON:
    return {
        "apiVersion": "acme.cert-manager.io/v1",
        "kind": "Challenge",
        "metadata": _meta("Challenge", namespace, name, finalizers=["finalizer.acme.cert-manager.io"]),
        "spec": {
            "authorizationURL": "https://acme.test/authz/1",
            "url": "https://acme.test/chall/1",
            "dnsName": dns_name,
            "token": token,
            "key": f"{token}.thumbprint",
            "type": "HTTP-01",
            "wildcard": False,
            "issuerRef": {"name": "letsencrypt", "kind": "Issuer", "group": "cert-manager.io"},
            "solver": {
                "http01": {"gatewayHTTPRoute": {"parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}]}}
            },
        },
        "status": {"processing": True, "presented": False, "state": state},
    }


def solver_labels(ch: Mapping[str, Any]) -> dict[str, str]:
    return {
        DOMAIN_LABEL: adler(ch["spec"]["dnsName"]),
        TOKEN_LABEL: adler(ch["spec"]["token"]),
        SOLVER_LABEL: "true",
    }


def solver_service(ch: Mapping[str, Any], name: str = "cm-acme-http-solver-x7k2p") -> JSON:
    """The solver Service exactly as cert-manager creates it (NodePort, not the PRD's ClusterIP)."""
    labels = solver_labels(ch)
    namespace = ch["metadata"]["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(
            "Service",
            namespace,
            name,
            generateName="cm-acme-http-solver-",
            labels=dict(labels),
            annotations={"auth.istio.io/8089": "NONE"},
            ownerReferences=[owner_ref(ch)],
        ),
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.12.34",
            "ports": [{"name": "http", "port": 8089, "targetPort": 8089, "protocol": "TCP", "nodePort": 31234}],
            "selector": dict(labels),
            "sessionAffinity": "None",
        },
        "status": {"loadBalancer": {}},
    }


def patched(
    svc: Mapping[str, Any], ingress: list[JSON] | None = None, annotations: Mapping[str, str] | None = None
) -> JSON:
    """The Service after our patch (LoadBalancer + the two annotations), optionally with an address."""
    out = copy.deepcopy(dict(svc))
    out["spec"]["type"] = "LoadBalancer"
    out["metadata"].setdefault("annotations", {}).update(
        {BIND_ANNOTATION: "default-gw", BACKEND_ANNOTATION: "true", **(annotations or {})}
    )
    if ingress is not None:
        out["status"] = {"loadBalancer": {"ingress": ingress}}
    return out


def plain_service(
    name: str = "my-app",
    namespace: str = NS,
    type_: str = "ClusterIP",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ports: list[int] | None = None,
    ingress: list[JSON] | None = None,
    owners: list[JSON] | None = None,
) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("Service", namespace, name, labels=labels, annotations=annotations, ownerReferences=owners),
        "spec": {
            "type": type_,
            "ports": [{"name": f"p{p}", "port": p, "targetPort": p, "protocol": "TCP"} for p in ports or [443]],
        },
        "status": {"loadBalancer": {"ingress": ingress} if ingress else {}},
    }


def solver_route(
    ch: Mapping[str, Any],
    service_name: str = "cm-acme-http-solver-x7k2p",
    name: str = "cm-acme-http-solver-q9w8e",
    extra_labels: dict[str, str] | None = None,
) -> JSON:
    """The solver HTTPRoute as cert-manager generates it."""
    namespace = ch["metadata"]["namespace"]
    token = ch["spec"]["token"]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(
            "HTTPRoute",
            namespace,
            name,
            generateName="cm-acme-http-solver-",
            labels={**solver_labels(ch), **(extra_labels or {})},
            ownerReferences=[owner_ref(ch)],
        ),
        "spec": {
            "parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}],
            "hostnames": [ch["spec"]["dnsName"]],
            "rules": [
                {
                    "matches": [{"path": {"type": "Exact", "value": f"/.well-known/acme-challenge/{token}"}}],
                    "backendRefs": [
                        {
                            "group": "",
                            "kind": "Service",
                            "name": service_name,
                            "namespace": namespace,
                            "port": 8089,
                            "weight": 1,
                        }
                    ],
                }
            ],
        },
    }


def project(
    name: str = "demo",
    org_namespace: str = ORG_NS,
    network: str | None = "cloud",
    status_namespace: str | None = "shalb-demo",
    field: str = "egressNetworkType",
) -> JSON:
    spec: JSON = {"cidrBlock": "10.0.10.0/24"}
    if network is not None:
        spec[field] = network
    return {
        "apiVersion": "kube-dc.com/v1",
        "kind": "Project",
        "metadata": _meta("Project", org_namespace, name),
        "spec": spec,
        "status": {"namespace": status_namespace} if status_namespace else {},
    }


def backend_endpoints(address: str, port: int) -> list[JSON]:
    return [{"ip": {"address": address, "port": port}}]


def managed_backend(svc: Mapping[str, Any], address: str = "100.65.0.102", port: int = 8089) -> JSON:
    """A Backend as this reconciler creates it for `svc`."""
    name = svc["metadata"]["name"] + "-backend"
    namespace = svc["metadata"]["namespace"]
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": _meta("Backend", namespace, name, labels={MANAGED_BY: MANAGER}, ownerReferences=[owner_ref(svc)]),
        "spec": {"endpoints": backend_endpoints(address, port)},
    }


def platform_backend(svc: Mapping[str, Any], address: str = "100.65.0.102", port: int = 8089) -> JSON:
    """A Backend kube-dc's own service controller made: owned by the Service, without our label."""
    out = managed_backend(svc, address, port)
    out["metadata"]["labels"] = {MANAGED_BY: "kube-dc-manager"}
    return out


def backend_route(route: Mapping[str, Any], backend_name: str, port: int = 8089) -> JSON:
    """`route` with its backendRefs already on `backend_name` (what our patch produces)."""
    out = copy.deepcopy(dict(route))
    for rule in out["spec"]["rules"]:
        rule["backendRefs"] = [
            {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": backend_name, "port": port, "weight": 1}
        ]
    return out


def deleting(obj: Mapping[str, Any]) -> JSON:
    out = copy.deepcopy(dict(obj))
    out["metadata"]["deletionTimestamp"] = TIMESTAMP
    return out


def domain_claim(hostname: str, project_: Mapping[str, Any] | None = None, name: str | None = None) -> JSON:
    """A DomainClaim for `hostname` held by `project_` (default: the default project)."""
    owner = project_ or project()
    return {
        "apiVersion": "acme-gateway.kube-dc.com/v1alpha1",
        "kind": "DomainClaim",
        "metadata": {
            "name": name or claim_name(hostname),
            "uid": uid_of("DomainClaim", "", hostname),
            "resourceVersion": "1",
            "creationTimestamp": TIMESTAMP,
        },
        "spec": {
            "hostname": hostname,
            "project": {"organization": owner["metadata"]["namespace"], "name": owner["metadata"]["name"]},
            "namespace": owner["status"].get("namespace")
            or f"{owner['metadata']['namespace']}-{owner['metadata']['name']}",
        },
    }


def own_claims(objects: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """Claims by which each Project holds the names its Challenges ask for (unless the world has one)."""
    world = list(objects)
    claimed = {o["spec"]["hostname"] for o in world if o["kind"] == "DomainClaim"}
    projects = {
        (p.get("status") or {}).get("namespace") or f"{p['metadata']['namespace']}-{p['metadata']['name']}": p
        for p in world
        if p["kind"] == "Project"
    }
    out = []
    for ch in world:
        host = ch["spec"].get("dnsName", "").lower() if ch["kind"] == "Challenge" else ""
        owner = projects.get(ch["metadata"]["namespace"]) if host else None
        if owner is not None and host not in claimed:
            claimed.add(host)
            out.append(domain_claim(host, owner))
    return out


def cache_of(
    objects: Iterable[Mapping[str, Any]], policy: Policy | None = None, owned_claims: bool = True
) -> ClusterCache:
    """The real cluster cache, filled the way the informers fill it (through the same watch table).

    With `owned_claims` (the default) each Project already holds the names its Challenges ask for: the
    wiring tables are about wiring; `test_reconcile_claims` is about claims.
    An object no informer's label selector takes (an unlabelled HTTPRoute) still lands in its resource's
    first store, so the reconcilers' defensive branches stay testable; in a cluster the reconciler would
    not see it (a create of a taken name then gets 409 AlreadyExists, see test_writer)."""
    pol = policy or Policy()
    cache = ClusterCache(pol.solver_label)
    table = watches(cache, pol)
    keep = pol.annotation_keys()
    objects = list(objects)
    if owned_claims:
        objects += own_claims(objects)
    for raw in objects:
        mine = [w for w in table if w.resource.kind == raw["kind"]]
        view = mine[0].parse(raw, keep)
        store_raw(table, mine[0].resource, raw, keep)
        selected = [w for w in mine if w.selector is not None]
        if selected and not any(w.holds(view) for w in selected):
            mine[0].store.upsert(view)
    return cache
