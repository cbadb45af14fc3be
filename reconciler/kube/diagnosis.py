"""What stops the reconciler from starting, in one line an operator can act on: the cause and the fix.

The start-up checks (`kubeconfig`, `preflight`) and the informers (a CRD removed or a permission revoked
at run time) word the same problem the same way, from here.
"""

from __future__ import annotations

from enum import IntEnum

from reconciler.kube.resources import Resource


class ExitCode(IntEnum):
    """The process's exit codes (README, "Start-up errors")."""

    OK = 0
    CLUSTER = 1
    """The cluster does not let us run: unreachable, credentials rejected, a CRD or a permission missing
    (also: lost the leader lease, cannot bind the metrics address)."""
    SETTINGS = 2
    """Our own configuration is unusable: invalid settings, no usable kubeconfig or in-cluster config."""


class StartupError(Exception):
    """A start-up check failed; `lines` are the log lines (one per problem), `exit_code` the process's."""

    def __init__(self, exit_code: ExitCode, *lines: str) -> None:
        super().__init__("; ".join(lines))
        self.exit_code = exit_code
        self.lines = lines


RBAC_MANIFEST = "manifests/rbac.yaml"
CLUSTER_ROLE = "acme-gateway-reconciler"
LEADER_ELECTION_ROLE = "acme-gateway-reconciler-leader-election"
RBAC_NAMESPACE = "acme-gateway-reconciler"
"""Where `manifests/rbac.yaml` puts the leader-election Role and the ServiceAccount it binds."""
SERVICE_ACCOUNT = f"{RBAC_NAMESPACE}/acme-gateway-reconciler"
SERVICE_ACCOUNT_USER = f"system:serviceaccount:{RBAC_NAMESPACE}:acme-gateway-reconciler"

INSTALL: dict[str, str] = {
    "acme.cert-manager.io": "install cert-manager (its CRDs, with installCRDs=true for the Helm chart)",
    "gateway.envoyproxy.io": "install Envoy Gateway's CRDs",
    "backends.gateway.envoyproxy.io": (
        "install Envoy Gateway's CRDs (the Backend API, gateway.envoyproxy.io_backends.yaml)"
    ),
    "gateway.networking.k8s.io": "install the Gateway API CRDs (standard channel)",
    "kube-dc.com": "install kube-dc (the reconciler only serves kube-dc clouds)",
    "acme-gateway.kube-dc.com": "apply manifests/crds/ (kubectl apply -k manifests/)",
}
"""How to get a CRD served: by `plural.group`, else by group."""


BUILT_IN = frozenset({"", "coordination.k8s.io"})
"""Groups every Kubernetes API server serves (no CRD to install)."""


def resource_id(resource: Resource, subresource: str | None = None) -> str:
    """`backends.gateway.envoyproxy.io/v1alpha1`; core resources as `services/v1`."""
    name = f"{resource.plural}/{subresource}" if subresource else resource.plural
    return f"{name}.{resource.group}/{resource.version}" if resource.group else f"{name}/{resource.version}"


def rbac_name(resource: Resource, subresource: str | None = None) -> str:
    """As RBAC and `kubectl auth can-i` name it: `domainclaims.acme-gateway.kube-dc.com/status`, `services`."""
    name = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return f"{name}/{subresource}" if subresource else name


def install_hint(resource: Resource) -> str:
    fallback = f"install the CRD that serves {resource.kind} ({resource.api_version})"
    return INSTALL.get(f"{resource.plural}.{resource.group}") or INSTALL.get(resource.group, fallback)


def not_served(resource: Resource, served_versions: tuple[str, ...] = ()) -> str:
    """The line for a resource discovery does not list (or the informer gets 404 for)."""
    if served_versions:
        cause = (
            f"CRD for {resource.plural}.{resource.group} does not serve {resource.version} "
            f"(served: {', '.join(served_versions)})"
        )
        return f"{cause}: {install_hint(resource)} in a version that serves {resource.api_version}"
    if resource.group in BUILT_IN:
        return f"{resource_id(resource)} is not served by the API server: is this a Kubernetes API server?"
    return f"CRD for {resource_id(resource)} is not installed: {install_hint(resource)}"


def rbac_fix(namespace: str | None = None, lease: bool = False, user: str | None = None) -> str:
    """How to grant what is missing: the manifest and the object in it that grants it. `user` (None when
    unknown) is who we run as: another identity than the manifest's ServiceAccount must be bound itself."""
    role = f"Role {LEADER_ELECTION_ROLE}" if lease else f"ClusterRole {CLUSTER_ROLE}"
    if lease and namespace != RBAC_NAMESPACE:
        return (
            f"grant get, create, update, list, watch on leases.coordination.k8s.io in namespace {namespace} to "
            f"{user or 'this identity'} ({RBAC_MANIFEST} has {role} for namespace {RBAC_NAMESPACE} only)"
        )
    if user and user != SERVICE_ACCOUNT_USER:
        return f"bind {role} ({RBAC_MANIFEST}) to {user}: the manifest binds it to ServiceAccount {SERVICE_ACCOUNT}"
    binding = "RoleBinding" if lease else "ClusterRoleBinding"
    return f"apply {RBAC_MANIFEST} ({role} and its {binding})"


def forbidden(verbs: tuple[str, ...], what: str, namespace: str | None, fix: str, user: str | None = None) -> str:
    """`not allowed to create domainclaims.acme-gateway.kube-dc.com: apply manifests/rbac.yaml (...)`."""
    where = f" in namespace {namespace}" if namespace else ""
    who = f" (as {user})" if user else ""
    return f"not allowed to {', '.join(verbs)} {what}{where}{who}: {fix}"
