"""Which kube-dc network a Service's address comes from: `cloud` (unreachable from the shared gateway
without a Backend) or `public`.

A namespace that belongs to no Project is not a tenant namespace and is left alone, whatever the
Service says. Otherwise the Service's own annotation (kube-dc's per-Service override) decides, else the
Project's network type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from reconciler.policy import Policy
from reconciler.reconcile.reasons import Refused, Skip
from reconciler.reconcile.snapshot import Snapshot
from reconciler.text import quoted

NetworkName = Literal["cloud", "public"]
_NETWORKS: dict[str, NetworkName] = {"cloud": "cloud", "public": "public"}


@dataclass(frozen=True, slots=True)
class Network:
    name: NetworkName
    source: Literal["annotation", "project"]

    @property
    def cloud(self) -> bool:
        return self.name == "cloud"


@dataclass(frozen=True, slots=True)
class UnknownNetwork:
    """Expected and not the tenant's doing (no Project yet, a Project without a usable type)."""

    skip: Skip


@dataclass(frozen=True, slots=True)
class InvalidNetwork:
    """Input the reconciler refuses to guess from."""

    reason: Refused
    message: str


NetworkResult = Network | UnknownNetwork | InvalidNetwork


def network_type(annotations: Mapping[str, str], namespace: str, snapshot: Snapshot, policy: Policy) -> NetworkResult:
    """The network of a Service with these annotations in `namespace`."""
    projects = snapshot.projects_for(namespace)
    if not projects:
        return UnknownNetwork(Skip.UNKNOWN_PROJECT)
    override = annotations.get(policy.network_type_annotation, "")
    if override:
        name = _NETWORKS.get(override)
        if name is None:
            return InvalidNetwork(
                Refused.INVALID_NETWORK_TYPE,
                f"annotation {policy.network_type_annotation}={quoted(override)}; expected cloud or public",
            )
        return Network(name, "annotation")
    types = {p.network_type for p in projects}
    if len(types) > 1:
        names = ", ".join(f"{p.meta.namespace}/{p.meta.name}={p.network_type}" for p in projects)
        return InvalidNetwork(Refused.CONFLICTING_PROJECTS, f"projects for namespace {namespace} disagree: {names}")
    (project_type,) = types
    name = _NETWORKS.get(project_type or "")
    if name is None:
        return UnknownNetwork(Skip.UNKNOWN_PROJECT_NETWORK)
    return Network(name, "project")
