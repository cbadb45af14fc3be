"""Who holds which hostname on the shared gateway: domain claims and the routes that already serve a name
(read by `reconcile/claims.py`). Trimmed views, plain data; see `model.py` for how views are built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reconciler.model import Meta, View
from reconciler.shapes import shape_checked


class ProjectRef(View):
    """A kube-dc Project as a claim names it: its organization (the Project's namespace) and name."""

    organization: str
    name: str

    def __str__(self) -> str:
        return f"{self.organization}/{self.name}"


class DomainClaim(View):
    """Which project owns a hostname on the shared gateway (cluster-scoped, our API group)."""

    meta: Meta
    hostname: str = ""
    project: ProjectRef | None = None
    namespace: str = ""
    """The project namespace its challenges run in."""
    contenders: tuple[str, ...] = ()
    """uids of the most recent other projects' Challenges refused for this name (bounded)."""
    refused: int = 0
    """How many Challenges of other projects were refused for this name."""
    contested_since: str = ""
    """lastTransitionTime of the Contested condition, kept when later contenders are recorded."""

    @classmethod
    @shape_checked
    def from_raw(cls, raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> DomainClaim:
        spec = raw.get("spec") or {}
        status = raw.get("status") or {}
        project = spec.get("project") or {}
        org, name = project.get("organization"), project.get("name")
        refused = status.get("refusedChallenges")
        contested = [c for c in status.get("conditions") or () if isinstance(c, dict) and c.get("type") == "Contested"]
        return cls(
            meta=Meta.from_raw(raw, keep_annotations),
            hostname=str(spec.get("hostname") or "").lower(),
            project=ProjectRef(organization=org, name=name) if isinstance(org, str) and isinstance(name, str) else None,
            namespace=str(spec.get("namespace") or ""),
            contenders=tuple(str(c) for c in status.get("recentContenders") or () if isinstance(c, str)),
            refused=refused if isinstance(refused, int) else 0,
            contested_since=str(contested[0].get("lastTransitionTime") or "") if contested else "",
        )


class ServedRoute(View):
    """Any HTTPRoute or TLSRoute, reduced to the hostnames it serves: who already serves a name."""

    meta: Meta
    kind: str
    hostnames: tuple[str, ...] = ()
    attached: bool = False
    """Has parentRefs: it is (meant to be) served by a Gateway."""

    @classmethod
    def parser(cls, kind: str) -> Callable[[Mapping[str, Any], frozenset[str] | None], ServedRoute]:
        @shape_checked
        def parse(raw: Mapping[str, Any], keep_annotations: frozenset[str] | None = None) -> ServedRoute:
            spec = raw.get("spec") or {}
            return cls(
                meta=Meta.from_raw(raw, frozenset()),
                kind=kind,
                hostnames=tuple(str(h).lower() for h in spec.get("hostnames") or () if isinstance(h, str)),
                attached=bool(spec.get("parentRefs")),
            )

        return parse
