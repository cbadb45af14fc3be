"""Domain claims: on a shared gateway a hostname belongs to the first project that wires a challenge for it.

Without them, project B could get a challenge wired for a name project A serves: the gateway would then
route A's challenge path to B's solver and B could obtain a certificate for A's name. A hostname counts as
taken when
- a DomainClaim for it (or a wildcard claim `*.parent` one label up) names another project, or
- another namespace's HTTPRoute or TLSRoute attached to a gateway serves it (exactly, or by a wildcard
  hostname at any depth, as Gateway API matches them): that namespace's project already serves it there.
A project's own claim wins over both. A free name is claimed (created) before anything is wired, and the
claim stays after issuance: renewals need it. Operators pre-create, transfer (edit `spec.project`) and
delete claims; tenants cannot write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from reconciler.hostnames import DomainClaim, ProjectRef, ServedRoute
from reconciler.model import Challenge, Project
from reconciler.names import WILDCARD_PREFIX, claim_name
from reconciler.policy import Policy
from reconciler.reconcile.intents import Create, Kind, Patch, Subject
from reconciler.reconcile.ownership import subject
from reconciler.reconcile.snapshot import Snapshot

CLAIM_API_VERSION = "acme-gateway.kube-dc.com/v1alpha1"
CONTENDERS_KEPT = 10


def normalize(hostname: str) -> str:
    """DNS names compare case-insensitively and without the root's trailing dot."""
    return hostname.strip().rstrip(".").lower()


def project_ref(project: Project) -> ProjectRef:
    return ProjectRef(organization=project.meta.namespace, name=project.meta.name)


def _parents(hostname: str) -> list[str]:
    """Wildcards that cover `hostname` on a route, nearest first: a.b.c -> *.b.c, *.c."""
    labels = hostname.split(".")
    return [WILDCARD_PREFIX + ".".join(labels[i:]) for i in range(1, len(labels))]


@dataclass(frozen=True, slots=True)
class Owned:
    """The name is this project's (its claim, or its own wildcard claim)."""


@dataclass(frozen=True, slots=True)
class Free:
    """Nobody holds the name: claim it before wiring anything."""

    create: Create


class Taken(NamedTuple):
    """Another project (or a namespace serving the name) holds it."""

    owner: str
    """Who holds it, for operators' logs only (never shown to the other tenant)."""
    claim: DomainClaim | None
    """The claim object that holds it (None when another namespace's route serves the name)."""


Verdict = Owned | Free | Taken


def verdict(challenge: Challenge, project: Project, snapshot: Snapshot, policy: Policy) -> Verdict:
    """Whose the Challenge's name is; `project` is the one that claims it when it is free."""
    host = normalize(challenge.dns_name)
    namespace = challenge.meta.namespace
    mine = {project_ref(p) for p in snapshot.projects_for(namespace)} | {project_ref(project)}
    exact = snapshot.claim(host)
    if exact is not None:
        return Owned() if exact.project in mine else Taken(f"DomainClaim {exact.meta.name}", exact)
    parents = _parents(host)
    wildcard = snapshot.claim(parents[0]) if parents else None
    if wildcard is not None:
        return Owned() if wildcard.project in mine else Taken(f"DomainClaim {wildcard.meta.name}", wildcard)
    for name in (host, *parents):
        for route in snapshot.routes_serving(name):
            if _serves_for_another(route, challenge.meta.namespace, policy):
                return Taken(f"{route.kind} {route.meta.namespace}/{route.meta.name}", None)
    return Free(_create(host, project, challenge.meta.namespace, policy))


def _serves_for_another(route: ServedRoute, namespace: str, policy: Policy) -> bool:
    """Another namespace's own route on a gateway (cert-manager's solver routes and ours are challenges,
    which the claims decide)."""
    labels = route.meta.labels
    return (
        route.meta.namespace != namespace
        and route.attached
        and route.meta.deletion_timestamp is None
        and policy.domain_label not in labels
        and labels.get(policy.managed_by_label) != policy.managed_by_value
    )


def _create(host: str, project: Project, namespace: str, policy: Policy) -> Create:
    ref = project_ref(project)
    body = {
        "apiVersion": CLAIM_API_VERSION,
        "kind": "DomainClaim",
        "metadata": {"name": claim_name(host), "labels": {policy.managed_by_label: policy.managed_by_value}},
        "spec": {
            "hostname": host,
            "project": {"organization": ref.organization, "name": ref.name},
            "namespace": namespace,
        },
    }
    return Create(Kind.DOMAINCLAIM, "", body, f"first challenge for {host} is project {ref}'s")


def contested(claim: DomainClaim, challenge: Challenge, project: Project, now: str) -> Patch | None:
    """The claim's record of a refused contender (a counter and the Contested condition), once per
    Challenge; None when this Challenge is already recorded."""
    uid = challenge.meta.uid
    if uid in claim.contenders:
        return None
    contenders = [*claim.contenders, uid][-CONTENDERS_KEPT:]
    condition = {
        "type": "Contested",
        "status": "True",
        "reason": "ChallengeRefused",
        "message": f"a challenge of project {project_ref(project)} was refused for this hostname",
        "lastTransitionTime": claim.contested_since or now,
    }
    changes = {
        "status": {"refusedChallenges": claim.refused + 1, "recentContenders": contenders, "conditions": [condition]}
    }
    reason = f"Challenge {challenge.meta.namespace}/{challenge.meta.name} refused"
    return Patch(
        Kind.DOMAINCLAIM, "", claim.meta.name, claim.meta.resource_version, changes, reason, subresource="status"
    )


def challenge_subject(challenge: Challenge) -> Subject:
    """The Challenge as the subject of an Event: where `kubectl describe challenge` shows it."""
    return subject(Kind.CHALLENGE, challenge.meta)
