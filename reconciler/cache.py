"""The cluster cache: one store per watched resource, the indexes the triggers and reconcilers use, and
the project index (project namespace -> Project). Pure data; the informers fill it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from reconciler.gateways import EnvoyProxy, Gateway, GatewayClass
from reconciler.hostnames import DomainClaim, ServedRoute
from reconciler.kube.store import Store, by_controller_uid, by_label, by_namespace, by_uid
from reconciler.model import Backend, Challenge, HTTPRoute, ProbeResult, Project, Service
from reconciler.names import WILDCARD_PREFIX, service_of_backend

NAMESPACE = "namespace"
CONTROLLER_UID = "controller-uid"
UID = "uid"
SERVICE_BACKEND_REF = "service-backend-ref"
"""HTTPRoutes by "<namespace>/<service>" of the Service backendRefs in their own namespace, and by the
Service a Backend backendRef was derived from (`<service>-backend`), so Service and Backend events reach
the routes that wait on them without a scan."""
PROJECT_NAMESPACE = "project-namespace"
SOLVER_LABEL = "solver-label"
"""Services by `<namespace>/<solver label value>`: the solver Services of a namespace without a scan."""
DELETED_CHALLENGES_KEPT = 10_000
HOSTNAME = "hostname"
"""DomainClaims by their (lowercase) hostname; served routes by each hostname they list."""
COVERED_BY = "covered-by"
"""Challenges by every name whose claim or route would decide them: their dnsName and each wildcard above
it (`a.b.c` -> `a.b.c`, `*.b.c`, `*.c`), so a claim or route change reaches exactly those Challenges."""


def _host(name: str) -> str:
    return name.strip().rstrip(".").lower()


def claim_hostname(claim: DomainClaim) -> Iterable[str]:
    return (claim.hostname,) if claim.hostname else ()


def served_hostnames(route: ServedRoute) -> Iterable[str]:
    return route.hostnames


def covered_by(challenge: Challenge) -> Iterable[str]:
    host = _host(challenge.dns_name)
    if not host:
        return ()
    labels = host.split(".")
    return (host, *(WILDCARD_PREFIX + ".".join(labels[i:]) for i in range(1, len(labels))))


def route_service_refs(route: HTTPRoute) -> Iterable[str]:
    ns = route.meta.namespace
    seen: set[str] = set()
    for ref in route.backend_refs():
        if ref.namespace not in (None, ns):
            continue
        if ref.group == "" and ref.kind == "Service":
            seen.add(f"{ns}/{ref.name}")
        elif ref.kind == "Backend" and (service := service_of_backend(ref.name)) is not None:
            seen.add(f"{ns}/{service}")
    return seen


def project_namespace(project: Project) -> Iterable[str]:
    return (project.project_namespace,)


class ClusterCache:
    """Implements `reconciler.reconcile.snapshot.Snapshot` over the informers' stores."""

    def __init__(
        self, solver_label: str = "acme.cert-manager.io/http01-solver", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.solver_label = solver_label
        self.services: Store[Service] = Store(
            {NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid, SOLVER_LABEL: by_label(solver_label)}
        )
        self.backends: Store[Backend] = Store({NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid})
        self.routes: Store[HTTPRoute] = Store(
            {NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid, SERVICE_BACKEND_REF: route_service_refs}
        )
        self.shadows: Store[HTTPRoute] = Store({NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid})
        self.challenges: Store[Challenge] = Store(
            {NAMESPACE: by_namespace, UID: by_uid, COVERED_BY: covered_by}, on_delete=self._deleted
        )
        self.projects: Store[Project] = Store({PROJECT_NAMESPACE: project_namespace})
        self.claims: Store[DomainClaim] = Store({HOSTNAME: claim_hostname})
        self.served_http: Store[ServedRoute] = Store({HOSTNAME: served_hostnames})
        self.served_tls: Store[ServedRoute] = Store({HOSTNAME: served_hostnames})
        self.gateways: Store[Gateway] = Store()
        self.gateway_classes: Store[GatewayClass] = Store()
        self.envoy_proxies: Store[EnvoyProxy] = Store()
        self.probes: dict[str, ProbeResult] = {}
        """The gateway probe's last answer per Challenge uid (the shell observes, decisions read)."""
        self.exposures: dict[str, float] = {}
        """Service uid -> when it was first seen exposed on the EIP without an address."""
        self.deleted_challenges: OrderedDict[str, None] = OrderedDict()
        """Uids of Challenges seen deleted, newest last, bounded: their solver objects linger until the
        garbage collector removes them and must not be taken for forgeries meanwhile."""

    # -- by name -------------------------------------------------------------------------------

    def service(self, namespace: str, name: str) -> Service | None:
        return self.services.get((namespace, name))

    def backend(self, namespace: str, name: str) -> Backend | None:
        return self.backends.get((namespace, name))

    def route(self, namespace: str, name: str) -> HTTPRoute | None:
        return self.routes.get((namespace, name))

    def shadow_route(self, namespace: str, name: str) -> HTTPRoute | None:
        return self.shadows.get((namespace, name))

    # -- by index ------------------------------------------------------------------------------

    def services_in(self, namespace: str) -> Sequence[Service]:
        return self.services.by_index(NAMESPACE, namespace)

    def solver_namespaces(self) -> list[str]:
        """Namespaces with at least one Service labelled as a solver."""
        return [value[: -len("/true")] for value in self.services.index_values(SOLVER_LABEL) if value.endswith("/true")]

    def solver_labelled(self, svc: Service) -> bool:
        return svc.meta.labels.get(self.solver_label) == "true"

    def solver_services_in(self, namespace: str) -> Sequence[Service]:
        """Services labelled as solvers (a claim only; ownership is checked by the reconcilers)."""
        return self.services.by_index(SOLVER_LABEL, f"{namespace}/true")

    def routes_in(self, namespace: str) -> Sequence[HTTPRoute]:
        return self.routes.by_index(NAMESPACE, namespace)

    def routes_for_service(self, namespace: str, service: str) -> Sequence[HTTPRoute]:
        """Solver routes naming the Service, directly or through `<service>-backend`."""
        return self.routes.by_index(SERVICE_BACKEND_REF, f"{namespace}/{service}")

    def services_controlled_by(self, uid: str) -> Sequence[Service]:
        return self.services.by_index(CONTROLLER_UID, uid)

    def routes_controlled_by(self, uid: str) -> Sequence[HTTPRoute]:
        return self.routes.by_index(CONTROLLER_UID, uid)

    def challenge(self, namespace: str, name: str) -> Challenge | None:
        return self.challenges.get((namespace, name))

    def challenge_by_uid(self, uid: str) -> Challenge | None:
        found = self.challenges.by_index(UID, uid)
        return found[0] if found else None

    def challenge_was_deleted(self, uid: str) -> bool:
        return uid in self.deleted_challenges

    def _deleted(self, challenge: Challenge) -> None:
        """Remember a deleted Challenge (bounded), for `challenge_was_deleted`; forget what was observed."""
        uid = challenge.meta.uid
        self.probes.pop(uid, None)
        self.deleted_challenges[uid] = None
        self.deleted_challenges.move_to_end(uid)
        while len(self.deleted_challenges) > DELETED_CHALLENGES_KEPT:
            self.deleted_challenges.popitem(last=False)

    def projects_for(self, namespace: str) -> Sequence[Project]:
        return self.projects.by_index(PROJECT_NAMESPACE, namespace)

    def claim(self, hostname: str) -> DomainClaim | None:
        found = self.claims.by_index(HOSTNAME, hostname)
        return found[0] if found else None

    def routes_serving(self, hostname: str) -> Sequence[ServedRoute]:
        return [*self.served_http.by_index(HOSTNAME, hostname), *self.served_tls.by_index(HOSTNAME, hostname)]

    def challenges_covered_by(self, hostname: str) -> Sequence[Challenge]:
        """Challenges a claim or route for `hostname` (exact or `*.` wildcard) decides."""
        return self.challenges.by_index(COVERED_BY, hostname)

    def gateway(self, namespace: str, name: str) -> Gateway | None:
        return self.gateways.get((namespace, name))

    def gateway_class(self, name: str) -> GatewayClass | None:
        return self.gateway_classes.get(("", name))

    def envoy_proxy(self, namespace: str, name: str) -> EnvoyProxy | None:
        return self.envoy_proxies.get((namespace, name))

    def probe_result(self, challenge_uid: str) -> ProbeResult | None:
        return self.probes.get(challenge_uid)

    def exposed_since(self, service_uid: str) -> float | None:
        return self.exposures.get(service_uid)

    def now(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
