"""Which solver Services the reconciler acts for, in the order the checks must run.

1. Only tenant namespaces with a cloud network: a namespace that no Project owns, or a public one, gets
   nothing at all from us: no write, no Event, not even a refusal of a look-alike.
2. Only real solvers: controlled by an existing Challenge whose checksums match (`ownership`).
3. Only solvers that can work: a Challenge with a dnsName, token and key of the right shape, and a
   Service that can become a LoadBalancer with a port that reaches the solver's 8089. Anything else is
   refused up front, once, instead of being patched and rejected by the API server on every event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.model import Challenge, Project, Service
from reconciler.policy import Policy
from reconciler.reconcile.claims import challenge_subject
from reconciler.reconcile.intents import Decision, Kind, Refusal
from reconciler.reconcile.network import InvalidNetwork, Network, UnknownNetwork, network_type
from reconciler.reconcile.ownership import carries_solver_markers, refusal, solver_challenge
from reconciler.reconcile.reasons import Refused, Skip
from reconciler.reconcile.snapshot import Snapshot
from reconciler.reconcile.solver_routes import is_ip
from reconciler.text import quoted

SOLVER_PORT = 8089
"""The port cert-manager's acmesolver listens on, in every solver Pod."""
HTTP01 = "HTTP-01"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DNS_NAME_MAX = 253


@dataclass(frozen=True, slots=True)
class Solver:
    """A solver Service we act for, with its Challenge and its Project."""

    service: Service
    challenge: Challenge
    project: Project


def tenant_network(annotations: dict[str, str], namespace: str, snapshot: Snapshot, policy: Policy) -> Decision | None:
    """None when the namespace is a cloud tenant's (or its network input is bad, which the caller refuses
    for real solvers only); otherwise the silent Decision to return."""
    net = network_type(annotations, namespace, snapshot, policy)
    if isinstance(net, UnknownNetwork):
        return Decision(skipped=net.skip)
    if isinstance(net, Network) and not net.cloud:
        return Decision(skipped=Skip.PUBLIC_NETWORK)
    return None


def solver(svc: Service | None, snapshot: Snapshot, policy: Policy) -> Solver | Decision:
    """The solver behind this Service, or the Decision to return at once (skip or refusal)."""
    if svc is None:
        return Decision()
    meta = svc.meta
    if meta.deletion_timestamp is not None:
        return Decision(skipped=Skip.BEING_DELETED)
    if not carries_solver_markers(meta, Kind.SERVICE, policy):
        return Decision(skipped=Skip.NOT_A_SOLVER)
    silent = tenant_network(dict(meta.annotations), meta.namespace, snapshot, policy)
    if silent is not None:
        return silent
    owner = solver_challenge(meta, snapshot, policy, Kind.SERVICE)
    if owner is None:
        return Decision(skipped=Skip.NOT_A_SOLVER)
    if isinstance(owner, Refusal):
        return Decision(refusals=(owner,))
    net = network_type(meta.annotations, meta.namespace, snapshot, policy)
    if isinstance(net, InvalidNetwork):
        return Decision(refusals=(refusal(Kind.SERVICE, meta, net.reason, net.message),))
    problem = unusable(svc, owner)
    if problem is not None:
        return Decision(refusals=(problem,), skipped=Skip.INVALID_SOLVER)
    return Solver(svc, owner, snapshot.projects_for(meta.namespace)[0])


def unusable(svc: Service, challenge: Challenge) -> Refusal | None:
    """Why this solver can never be made to work, shown on the Service and its Challenge."""
    also = (challenge_subject(challenge),)
    why = challenge_problem(challenge)
    if why is not None:
        return refusal(Kind.SERVICE, svc.meta, Refused.INVALID_CHALLENGE, why, also)
    why = service_problem(svc)
    if why is not None:
        return refusal(Kind.SERVICE, svc.meta, Refused.UNUSABLE_SOLVER_SERVICE, why, also)
    return None


def challenge_problem(challenge: Challenge) -> str | None:
    """The Challenge's fields as an HTTP-01 solver needs them (the CRD accepts empty strings)."""
    name = challenge.meta.name
    empty = [field for field, value in (("dnsName", challenge.dns_name), ("token", challenge.token)) if not value]
    if not challenge.key:
        empty.append("key")
    if empty:
        return f"Challenge {name} has an empty {', '.join(empty)}"
    if challenge.type != HTTP01:
        return f"Challenge {name} is of type {quoted(challenge.type)}, not {HTTP01}"
    if not _TOKEN.fullmatch(challenge.token):
        return f"Challenge {name} has a token {quoted(challenge.token)} that is not base64url"
    if not (is_ip(challenge.dns_name) or valid_dns_name(challenge.dns_name)):
        return f"Challenge {name} has a dnsName {quoted(challenge.dns_name)} that is not a host name or an IP"
    return None


def valid_dns_name(name: str) -> bool:
    """A lowercase-able RFC 1123 host name (a trailing dot allowed), no wildcard: HTTP-01 cannot do those."""
    host = name.rstrip(".").lower()
    return 0 < len(host) <= _DNS_NAME_MAX and all(_LABEL.fullmatch(label) for label in host.split("."))


def service_problem(svc: Service) -> str | None:
    """A Service that cannot become a LoadBalancer reaching the solver: headless, no port, or no port
    whose target is the solver's 8089."""
    if svc.cluster_ip == "None":
        return f"Service {svc.meta.name} is headless (clusterIP: None) and cannot become a LoadBalancer"
    if not svc.ports:
        return f"Service {svc.meta.name} has no ports"
    first = svc.ports[0]
    target = first.target_port if first.target_port is not None else first.port
    if target not in (SOLVER_PORT, "http"):
        return f"Service {svc.meta.name}'s first port targets {quoted(target)}, not the solver's {SOLVER_PORT}"
    return None
