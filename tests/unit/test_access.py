"""One list of what the reconciler may do (`reconciler/access.py`), held to the three things it must
match: the writes the reconcilers can decide, the informers the watch table starts, and what
`manifests/rbac.yaml` grants. A verb added to one and not the others fails here, not in a cluster."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from reconciler import access
from reconciler.cache import ClusterCache
from reconciler.kube.diagnosis import CLUSTER_ROLE, LEADER_ELECTION_ROLE, RBAC_NAMESPACE, SERVICE_ACCOUNT
from reconciler.kube.preflight import Requirement
from reconciler.kube.resources import EVENTS, LEASES, SERVICES
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind
from reconciler.watches import RESOURCES, watches

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "manifests" / "rbac.yaml"
CORE = ROOT / "reconciler" / "reconcile"
VERB = {"Patch": "patch", "Create": "create", "Delete": "delete"}

Grants = dict[tuple[str, str], set[str]]


def rbac_documents() -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def granted(kind: str, name: str) -> Grants:
    [role] = [d for d in rbac_documents() if d["kind"] == kind and d["metadata"]["name"] == name]  # type: ignore[index]
    rules = role["rules"]
    assert isinstance(rules, list)
    return {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}


def needed(requirements: tuple[Requirement, ...], lease: bool) -> Grants:
    found: Grants = {}
    for req in requirements:
        if req.lease is lease:
            name = f"{req.resource.plural}/{req.subresource}" if req.subresource else req.resource.plural
            found.setdefault((req.resource.group, name), set()).update(req.verbs)
    return found


def test_the_cluster_role_grants_exactly_what_the_reconciler_needs() -> None:
    assert granted("ClusterRole", CLUSTER_ROLE) == needed(access.for_policy(Policy()), lease=False)


def test_the_leader_election_role_grants_exactly_the_lease_verbs() -> None:
    electing = access.for_policy(Policy(), leader_election_namespace=RBAC_NAMESPACE)
    assert granted("Role", LEADER_ELECTION_ROLE) == needed(electing, lease=True)
    [role] = [d for d in rbac_documents() if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == RBAC_NAMESPACE  # type: ignore[index]


def test_the_bindings_name_the_service_account_the_messages_name() -> None:
    namespace, name = SERVICE_ACCOUNT.split("/")
    for doc in rbac_documents():
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert doc["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]


def decided_writes() -> set[tuple[str, str | None, str]]:
    """(plural, subresource, verb) of every Patch/Create/Delete the functional core constructs."""
    found: set[tuple[str, str | None, str]] = set()
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in VERB):
                continue
            kind = node.args[0] if node.args else next(k.value for k in node.keywords if k.arg == "kind")
            assert isinstance(kind, ast.Attribute), f"{path.name}:{node.lineno}: kind must be Kind.X"
            sub = next((k.value for k in node.keywords if k.arg == "subresource"), None)
            subresource = sub.value if isinstance(sub, ast.Constant) else None
            found.add((RESOURCES[Kind[kind.attr]].plural, subresource, VERB[node.func.id]))
    return found


def test_writes_are_exactly_what_the_reconcilers_decide_plus_events_and_owner_finalizers() -> None:
    listed = {(w.resource.plural, w.subresource, verb) for w in access.WRITES for verb in w.verbs}
    events = {(EVENTS.plural, None, verb) for verb in ("create", "get", "list", "patch")}  # kube/events.py, writer.py
    owner_check = {(SERVICES.plural, None, "get")}  # writer.py: is the owner of a just-deleted object gone?
    shell_only = events | owner_check | {(SERVICES.plural, "finalizers", "update")}
    assert decided_writes(), "the scan found no writes: has the core's shape changed?"
    assert listed == decided_writes() | shell_only


def test_every_informer_may_list_and_watch_in_its_scope() -> None:
    policy = Policy()
    table = watches(ClusterCache(policy.solver_label), policy)
    scoped = access.requirements(table, namespaces=["a", "b"])
    by_resource = {(r.resource, r.subresource): r for r in scoped}
    for watch in table:
        req = by_resource[(watch.resource, None)]
        assert {"list", "watch"} <= set(req.verbs)
        if watch.cluster_wide:
            assert req.namespaces == (None,), watch.resource.plural
    assert by_resource[(SERVICES, None)].namespaces == ("a", "b")
    assert by_resource[(SERVICES, None)].verbs == ("list", "watch", "patch", "get")
    assert not any(r.resource == LEASES for r in scoped)
    tls = [r for r in scoped if r.resource.plural == "tlsroutes"]
    assert [r.optional for r in tls] == [True]
