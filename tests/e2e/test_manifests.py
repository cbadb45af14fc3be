"""`manifests/` as a cluster sees it: every object in the kustomization is accepted by the real API
server, and the Deployment keeps the restricted pod-security settings the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testbed.kube import BY_KIND, DEPLOYMENTS, Kube, load_manifests

pytestmark = pytest.mark.anyio

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def kustomization_objects() -> list[dict[str, object]]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_manifests(MANIFESTS / name)]


async def test_every_manifest_is_accepted_by_the_api_server(api: Kube) -> None:
    docs = kustomization_objects()
    kinds = sorted({str(d["kind"]) for d in docs})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for doc in docs:  # Namespace first in the kustomization, so namespaced objects have a home
        resource = BY_KIND[str(doc["kind"])]
        assert doc["apiVersion"] == resource.api_version
        await api.apply(resource, doc)

    deployment = await api.get(DEPLOYMENTS, "acme-gateway-reconciler", "acme-gateway-reconciler")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["serviceAccountName"] == "acme-gateway-reconciler"
    assert "limits" in container["resources"]
    assert "requests" in container["resources"]


def test_cluster_role_is_least_privilege() -> None:
    [role] = [
        d
        for d in kustomization_objects()
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "acme-gateway-reconciler"
    ]
    rules = role["rules"]
    assert isinstance(rules, list)
    for rule in rules:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"]
    granted = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted[("", "services")] == {"list", "watch", "patch", "get"}
    assert granted[("gateway.envoyproxy.io", "backends")] == {"list", "watch", "create", "patch", "delete"}
    assert granted[("acme.cert-manager.io", "challenges")] == {"list", "watch"}
    assert granted[("kube-dc.com", "projects")] == {"list", "watch"}
    assert granted[("acme-gateway.kube-dc.com", "domainclaims")] == {"list", "watch", "create"}, "never transfers"
    assert granted[("acme-gateway.kube-dc.com", "domainclaims/status")] == {"patch"}
    assert granted[("gateway.networking.k8s.io", "tlsroutes")] == {"list", "watch"}
    for read_only in (("gateway.networking.k8s.io", "gateways"), ("gateway.networking.k8s.io", "gatewayclasses")):
        assert granted[read_only] == {"list", "watch"}
    assert granted[("gateway.envoyproxy.io", "envoyproxies")] == {"list", "watch"}
    assert granted[("", "events")] == {"create", "get", "list", "patch"}
    assert ("coordination.k8s.io", "leases") not in granted, "leases only in the reconciler's namespace (Role)"
