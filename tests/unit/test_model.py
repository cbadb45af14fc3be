"""The trimmed views built from raw JSON: what they keep, their defaults, and the Project fallbacks."""

from __future__ import annotations

import copy

import pytest

from reconciler.model import JSON, Backend, BackendEndpoint, BackendRef, HTTPRoute, Meta, OwnerRef, Project, Service
from reconciler.policy import Policy
from tests.unit import objects as o

POLICY = Policy()
CH = o.challenge()


def test_service_view_of_a_cert_manager_solver() -> None:
    raw = o.solver_service(CH)
    svc = Service.from_raw(raw, POLICY.annotation_keys())
    assert svc.type == "NodePort"
    assert [(p.name, p.port, p.target_port, p.protocol) for p in svc.ports] == [("http", 8089, 8089, "TCP")]
    assert svc.ingress == ()
    assert svc.meta.annotations == {}  # auth.istio.io/8089 is not one of ours: trimmed
    assert svc.meta.labels == o.solver_labels(CH)
    assert svc.meta.labels[o.DOMAIN_LABEL] == o.adler(CH["spec"]["dnsName"])
    ref = svc.meta.controller_ref()
    assert ref == OwnerRef(
        api_version="acme.cert-manager.io/v1",
        kind="Challenge",
        name=CH["metadata"]["name"],
        uid=CH["metadata"]["uid"],
        controller=True,
    )
    assert ref.group == "acme.cert-manager.io"
    assert svc.meta.key == (o.NS, raw["metadata"]["name"])
    assert svc.meta.resource_version == "1"


def test_annotations_kept_only_when_ours() -> None:
    raw = o.patched(o.solver_service(CH), annotations={o.NETWORK_ANNOTATION: "cloud", o.ROUTE_PORT_ANNOTATION: "80"})
    kept = Service.from_raw(raw, POLICY.annotation_keys()).meta.annotations
    assert kept == {
        o.BIND_ANNOTATION: "default-gw",
        o.BACKEND_ANNOTATION: "true",
        o.NETWORK_ANNOTATION: "cloud",
        o.ROUTE_PORT_ANNOTATION: "80",
    }
    assert "auth.istio.io/8089" in Service.from_raw(raw).meta.annotations  # untrimmed without a keep set


@pytest.mark.parametrize(
    ("spec", "status", "type_", "ports", "ingress"),
    [
        ({}, {}, "ClusterIP", (), ()),
        ({"type": None, "ports": None}, {"loadBalancer": None}, "ClusterIP", (), ()),
        ({"ports": [{"port": "80"}, {"port": 443, "targetPort": "https"}]}, {}, "ClusterIP", (443,), ()),
        (
            {"type": "LoadBalancer"},
            {"loadBalancer": {"ingress": [{"ip": "100.65.0.1"}]}},
            "LoadBalancer",
            (),
            ("100.65.0.1",),
        ),
        (
            {},
            {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {}, {"ip": "fd00::1"}]}},
            "ClusterIP",
            (),
            ("lb.example.com", "fd00::1"),
        ),
    ],
    ids=["empty", "nulls", "non-int-port-dropped", "lb-ip", "hostname-and-empty-entry"],
)
def test_service_defaults(
    spec: JSON, status: JSON, type_: str, ports: tuple[int, ...], ingress: tuple[str, ...]
) -> None:
    svc = Service.from_raw({"metadata": {"name": "s", "namespace": "n"}, "spec": spec, "status": status})
    assert svc.type == type_
    assert tuple(p.port for p in svc.ports) == ports
    assert svc.ingress == ingress


def test_meta_defaults_and_owner_refs() -> None:
    meta = Meta.from_raw(
        {
            "metadata": {
                "name": "x",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "s", "uid": "u"}],
            }
        }
    )
    assert (meta.namespace, meta.uid, meta.resource_version, meta.deletion_timestamp) == ("", "", "", None)
    assert (meta.labels, meta.annotations) == ({}, {})
    assert (meta.owner_refs[0].group, meta.owner_refs[0].controller) == ("", False)
    assert meta.controller_ref() is None
    assert Meta.from_raw(o.deleting(CH)).deletion_timestamp == o.TIMESTAMP


@pytest.mark.parametrize(
    ("spec", "status", "namespace", "network"),
    [
        ({"egressNetworkType": "cloud"}, {"namespace": "shalb-demo"}, "shalb-demo", "cloud"),
        ({"egressNetworkType": "public"}, {"namespace": "custom-ns"}, "custom-ns", "public"),
        ({"egressNetworkType": "cloud"}, {}, "shalb-demo", "cloud"),  # <org-namespace>-<project-name>
        ({"egressNetworkType": "cloud"}, {"namespace": ""}, "shalb-demo", "cloud"),
        ({"externalNetworkType": "cloud"}, {}, "shalb-demo", "cloud"),  # the PRD's field name as a fallback
        (
            {"egressNetworkType": "public", "externalNetworkType": "cloud"},
            {},
            "shalb-demo",
            "public",
        ),  # real field first
        ({}, {}, "shalb-demo", None),
    ],
    ids=[
        "status-namespace",
        "status-namespace-custom",
        "convention",
        "empty-status",
        "prd-field",
        "real-field-first",
        "no-type",
    ],
)
def test_project_view(spec: JSON, status: JSON, namespace: str, network: str | None) -> None:
    raw = {
        "apiVersion": "kube-dc.com/v1",
        "kind": "Project",
        "metadata": {"name": "demo", "namespace": "shalb"},
        "spec": spec,
        "status": status,
    }
    project = Project.from_raw(raw)
    assert (project.project_namespace, project.network_type) == (namespace, network)


def test_projects_indexed_by_project_namespace() -> None:
    cache = o.cache_of(
        [o.project(), o.project(name="web", status_namespace=None), o.project(name="x", status_namespace="elsewhere")]
    )
    assert [p.meta.name for p in cache.projects_for("shalb-demo")] == ["demo"]
    assert [p.meta.name for p in cache.projects_for("shalb-web")] == ["web"]
    assert [p.meta.name for p in cache.projects_for("elsewhere")] == ["x"]
    assert cache.projects_for("shalb-x") == []


def test_backend_view() -> None:
    raw = o.managed_backend(o.solver_service(CH))
    raw["spec"]["endpoints"] += [{"fqdn": {"hostname": "a.example.com", "port": 80}}, {"unix": {"path": "/s"}}, {}]
    backend = Backend.from_raw(raw)
    assert backend.endpoints == (
        BackendEndpoint(ip="100.65.0.102", port=8089),
        BackendEndpoint(fqdn="a.example.com", port=80),
        BackendEndpoint(unix="/s"),
    )
    assert backend.meta.labels == {o.MANAGED_BY: o.MANAGER}
    assert Backend.from_raw({"metadata": {"name": "b"}}).endpoints == ()


def test_backend_refs_get_gateway_api_defaults() -> None:
    assert BackendRef.from_raw({"name": "s"}) == BackendRef(group="", kind="Service", name="s")
    assert BackendRef.from_raw({"group": "", "kind": "", "name": "s", "port": 80, "weight": 0}).kind == "Service"
    route = copy.deepcopy(o.solver_route(CH))
    route["spec"]["rules"].append({"matches": []})
    route["spec"]["rules"].append({"backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "b"}]})
    view = HTTPRoute.from_raw(route)
    assert [(r.group, r.kind, r.name, r.namespace, r.port, r.weight) for r in view.backend_refs()] == [
        ("", "Service", "cm-acme-http-solver-x7k2p", o.NS, 8089, 1),
        ("gateway.envoyproxy.io", "Backend", "b", None, None, None),
    ]
    assert view.hostnames == ("my-app.example.com",)
    assert view.parent_refs == ({"name": "eg", "namespace": "envoy-gateway-system"},)


def test_views_are_frozen() -> None:
    svc = Service.from_raw(o.solver_service(CH))
    with pytest.raises(ValueError, match="frozen"):
        svc.type = "LoadBalancer"  # type: ignore[misc]
