"""The cluster cache: one store per watched resource, the indexes the triggers and reconcilers use, and
the project index (project namespace -> Project). Pure data; the informers fill it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from reconciler.kube.store import Store, by_controller_uid, by_label, by_namespace, by_uid
from reconciler.model import Backend, Challenge, HTTPRoute, Project, Service
from reconciler.names import service_of_backend

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

    def __init__(self, solver_label: str = "acme.cert-manager.io/http01-solver") -> None:
        self.services: Store[Service] = Store(
            {NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid, SOLVER_LABEL: by_label(solver_label)}
        )
        self.backends: Store[Backend] = Store({NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid})
        self.routes: Store[HTTPRoute] = Store(
            {NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid, SERVICE_BACKEND_REF: route_service_refs}
        )
        self.shadows: Store[HTTPRoute] = Store({NAMESPACE: by_namespace, CONTROLLER_UID: by_controller_uid})
        self.challenges: Store[Challenge] = Store({NAMESPACE: by_namespace, UID: by_uid}, on_delete=self._deleted)
        self.projects: Store[Project] = Store({PROJECT_NAMESPACE: project_namespace})
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
        """Remember a deleted Challenge (bounded), for `challenge_was_deleted`."""
        uid = challenge.meta.uid
        self.deleted_challenges[uid] = None
        self.deleted_challenges.move_to_end(uid)
        while len(self.deleted_challenges) > DELETED_CHALLENGES_KEPT:
            self.deleted_challenges.popitem(last=False)

    def projects_for(self, namespace: str) -> Sequence[Project]:
        return self.projects.by_index(PROJECT_NAMESPACE, namespace)
