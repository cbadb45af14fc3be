"""The closed sets of reasons a decision gives: why nothing was done (`Skip`, a debug log line) and why
input was refused (`Refused`, an Event reason and a metric label). Logs, metrics and tests share these;
no reason is ever built from tenant input, so metric label values stay bounded."""

from __future__ import annotations

from enum import StrEnum


class Skip(StrEnum):
    """Expected states in which a reconciler writes nothing (kebab-case)."""

    # the object itself
    BEING_DELETED = "being-deleted"
    NOT_A_SOLVER = "not-a-solver"
    SERVICE_GONE = "service-gone"
    SERVICE_BEING_DELETED = "service-being-deleted"
    # networks and projects
    UNKNOWN_PROJECT = "unknown-project"
    UNKNOWN_PROJECT_NETWORK = "unknown-project-network"
    INVALID_NETWORK = "invalid-network"
    PUBLIC_NETWORK = "public-network"
    NOT_CLOUD = "not-cloud"
    # Backends
    BACKEND_NOT_REQUESTED = "backend-not-requested"
    BACKEND_MODE_NONE = "backend-mode-none"
    BACKEND_BEING_DELETED = "backend-being-deleted"
    BACKEND_NOT_MANAGED = "backend-not-managed"
    NO_SERVICE_PORT = "no-service-port"
    WAITING_FOR_ADDRESS = "waiting-for-address"
    # routes
    ROUTE_MODE_SHADOW = "route-mode-shadow"
    ROUTE_MODE_PATCH = "route-mode-patch"
    WAITING_FOR_BACKEND = "waiting-for-backend"
    WAITING_FOR_ROUTE = "waiting-for-route"
    INVALID_ROUTE = "invalid-route"
    NO_SOLVER_REFS = "no-solver-refs"
    SHADOW_NAME_TAKEN = "shadow-name-taken"
    # tenant safety
    WAITING_FOR_CLAIM = "waiting-for-claim"
    WAITING_FOR_SLOT = "waiting-for-slot"
    DOMAIN_CLAIMED = "domain-claimed"
    UNTRUSTED_BACKEND = "untrusted-backend"
    INVALID_SOLVER = "invalid-solver"


class Refused(StrEnum):
    """Bad or foreign input (CamelCase: Kubernetes Event reasons)."""

    NO_CHALLENGE_OWNER = "NoChallengeOwner"
    CHALLENGE_NOT_FOUND = "ChallengeNotFound"
    CHALLENGE_LABEL_MISMATCH = "ChallengeLabelMismatch"
    INVALID_NETWORK_TYPE = "InvalidNetworkType"
    CONFLICTING_PROJECTS = "ConflictingProjects"
    INVALID_ROUTE_PORT = "InvalidRoutePort"
    NON_IP_ADDRESS = "NonIPAddress"
    NO_FREE_PORT = "NoFreePort"
    CROSS_NAMESPACE_BACKEND_REF = "CrossNamespaceBackendRef"
    HOSTNAME_MISMATCH = "HostnameMismatch"
    DOMAIN_CLAIMED = "DomainClaimed"
    UNTRUSTED_BACKEND = "UntrustedBackend"
    INVALID_CHALLENGE = "InvalidChallenge"
    UNUSABLE_SOLVER_SERVICE = "UnusableSolverService"


class Noted(StrEnum):
    """Reasons of Events that are not refusals (CamelCase)."""

    # Warnings: the hop a challenge is stuck on
    CONCURRENCY_LIMIT_REACHED = "ConcurrencyLimitReached"
    ROUTE_ORDER_PRESERVED = "RouteOrderPreserved"
    NO_ADDRESS = "NoAddress"
    BACKEND_NOT_ACCEPTED = "BackendNotAccepted"
    ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
    GATEWAY_PROBE_FAILED = "GatewayProbeFailed"
    # Normal: progress, one per hop
    SOLVER_EXPOSED = "SolverExposed"
    BACKEND_READY = "BackendReady"
    ROUTED = "Routed"
    GATEWAY_SERVES = "GatewayServes"
