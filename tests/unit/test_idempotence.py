"""Properties over generated worlds: the reconcilers converge (a pass over every key after convergence
writes nothing), every write applies cleanly, and no write lands where it must not.

A world mixes projects (cloud, public, missing, conflicting), Challenges (present or not), solver Services
and look-alikes in every type/annotation/address state, Backends (ours, stale, the platform's, being
deleted) and routes pointing at Services or Backends. Between passes, an optional stand-in for kube-dc's
service controller gives LoadBalancer Services an address, so the whole chain Service -> Backend -> route
runs; that chain takes up to three passes, so convergence is checked after at most six.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cache import ClusterCache
from reconciler.model import JSON, Backend, Challenge, Key, Service
from reconciler.names import SHADOW_SUFFIX
from reconciler.policy import BackendMode, Policy, RouteMode
from reconciler.reconcile.backends import reconcile_backend
from reconciler.reconcile.intents import Create, Delete, Kind, Patch, Write
from reconciler.reconcile.ownership import solver_challenge
from reconciler.reconcile.routes import reconcile_route
from reconciler.reconcile.services import reconcile_service
from reconciler.reconcile.shadows import is_managed as is_managed_shadow
from reconciler.reconcile.shadows import reconcile_shadow
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

ORG = "org"
TENANTS = ["a", "b", "c"]
MAX_PASSES = 6
SUFFIX = "-backend"


def _ann(draw: st.DrawFn, key: str, values: list[str]) -> dict[str, str]:
    value = draw(st.sampled_from([None, None, None, *values]))
    return {} if value is None else {key: value}


def _service_state(draw: st.DrawFn, svc: JSON, ip: str) -> JSON:
    """Some state between cert-manager's original and our finished patch, or a tenant's edits."""
    svc = copy.deepcopy(svc)
    if draw(st.booleans()):  # as our patch leaves it
        svc = o.patched(svc)
    else:
        svc["spec"]["type"] = draw(st.sampled_from(["NodePort", "ClusterIP", "LoadBalancer"]))
    svc["metadata"].setdefault("annotations", {}).update(
        {
            **_ann(draw, o.BIND_ANNOTATION, ["default-gw", "other-eip"]),
            **_ann(draw, o.BACKEND_ANNOTATION, ["true", "false"]),
            **_ann(draw, o.NETWORK_ANNOTATION, ["cloud", "public", "bogus", ""]),
            **_ann(draw, o.ROUTE_PORT_ANNOTATION, ["18089", "http", "0"]),
        }
    )
    address = draw(st.sampled_from(["none", "ipv4", "ipv6", "hostname"]))
    if address != "none":
        entry = {
            "ipv4": {"ip": ip},
            "ipv6": {"ip": "fd00:65::" + ip.rsplit(".", 1)[1]},
            "hostname": {"hostname": "lb.example.com"},
        }
        svc["status"] = {"loadBalancer": {"ingress": [entry[address]]}}
    if draw(st.integers(0, 9)) == 0:
        svc = o.deleting(svc)
    return svc


def _backend(draw: st.DrawFn, svc: JSON, ip: str) -> list[JSON]:
    variant = draw(st.sampled_from(["none"] * 4 + ["managed", "stale-address", "stale-owner", "platform", "deleting"]))
    if variant == "none":
        return []
    if variant == "platform":
        return [o.platform_backend(svc, ip)]
    backend = o.managed_backend(svc, "127.65.200.1" if variant == "stale-address" else ip)
    if variant == "stale-owner":
        backend["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-deleted-service"
    return [o.deleting(backend) if variant == "deleting" else backend]


def _route(draw: st.DrawFn, ch: JSON, svc_name: str, namespace: str) -> list[JSON]:
    variant = draw(
        st.sampled_from(["none", "service", "service", "backend", "backend-other-port", "cross-ns", "forged"])
    )
    if variant == "none":
        return []
    route = o.solver_route(ch, svc_name, name=f"route-{svc_name}")
    if variant.startswith("backend"):
        route = o.backend_route(route, svc_name + SUFFIX, 8089 if variant == "backend" else 9999)
    elif variant == "cross-ns":
        route["spec"]["rules"][0]["backendRefs"].append({"name": svc_name, "namespace": "elsewhere", "port": 8089})
    elif variant == "forged":
        route["metadata"]["ownerReferences"] = []
    if draw(st.integers(0, 9)) == 0:
        route = o.deleting(route)
    return [route]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[JSON], Policy, bool]:
    policy = Policy(
        backend_mode=draw(st.sampled_from(list(BackendMode))), route_mode=draw(st.sampled_from(list(RouteMode)))
    )
    objs: list[JSON] = []
    for t, tenant in enumerate(TENANTS):
        namespace = f"{ORG}-{tenant}"
        project = draw(st.sampled_from(["cloud", "cloud", "cloud-by-convention", "public", "missing", "conflict"]))
        if project != "missing":
            network = "public" if project == "public" else "cloud"
            status_ns = None if project == "cloud-by-convention" else namespace
            objs.append(o.project(tenant, ORG, network, status_ns))
        if project == "conflict":
            objs.append(o.project(f"{tenant}-dup", "other-org", "public", namespace))
        for j in range(draw(st.integers(0, 2))):
            state = draw(st.sampled_from(["pending", "valid", "invalid"]))
            ch = o.challenge(f"ch-{j}", namespace, f"d{j}.{tenant}.example.com", f"tok-{j}", state)
            if draw(st.integers(0, 5)) > 0:  # sometimes the Challenge is gone from the cache
                objs.append(ch)
            ip = f"127.65.{t}.{10 + j}"
            svc = o.solver_service(ch, name=f"solver-{j}")
            ownership = draw(st.sampled_from(["genuine"] * 4 + ["no-owner", "forged-labels"]))
            if ownership == "no-owner":
                svc["metadata"]["ownerReferences"] = []
            elif ownership == "forged-labels":
                svc["metadata"]["labels"][o.DOMAIN_LABEL] = "1"
            if draw(st.integers(0, 7)) > 0:  # sometimes the Service is already gone
                objs.append(_service_state(draw, svc, ip))
            objs += _backend(draw, svc, ip)
            objs += _route(draw, ch, f"solver-{j}", namespace)
        for k in range(draw(st.integers(0, 2))):
            labels = {o.SOLVER_LABEL: "true"} if draw(st.booleans()) else {}
            app = o.plain_service(f"app-{k}", namespace, labels=labels)
            app = _service_state(draw, app, f"127.65.{t}.{100 + k}")
            objs.append(app)
            objs += _backend(draw, app, f"127.65.{t}.{100 + k}")
    return objs, policy, draw(st.booleans())


def cache_of(api: FakeAPI, policy: Policy) -> ClusterCache:
    return o.cache_of(api.objects.values(), policy)


def one_pass(cache: ClusterCache, policy: Policy) -> list[Write]:
    """Every reconciler over every key it could be asked about (as the shell's event handlers map them)."""
    writes: list[Write] = []
    service_keys = [svc.meta.key for svc in cache.services]
    for key in service_keys:
        writes += reconcile_service(key, cache, policy).writes
    backend_keys: set[Key] = set(service_keys)
    backend_keys |= {
        (b.meta.namespace, b.meta.name[: -len(SUFFIX)]) for b in cache.backends if b.meta.name.endswith(SUFFIX)
    }
    for key in sorted(backend_keys):
        writes += reconcile_backend(key, cache, policy).writes
    for route in cache.routes:
        writes += reconcile_route(route.meta.key, cache, policy).writes
    shadow_keys = set(service_keys) | {
        (r.meta.namespace, r.meta.name[: -len(SHADOW_SUFFIX)])
        for r in cache.shadows
        if r.meta.name.endswith(SHADOW_SUFFIX)
    }
    for key in sorted(shadow_keys):
        writes += reconcile_shadow(key, cache, policy).writes
    return writes


def give_addresses(api: FakeAPI) -> None:
    """Stand-in for kube-dc's service controller: LoadBalancer Services get a cloud-pool address."""
    for n, obj in enumerate(list(api.objects.values())):
        lb = obj.get("status", {}).get("loadBalancer", {})
        if obj["kind"] == "Service" and obj["spec"]["type"] == "LoadBalancer" and not lb.get("ingress"):
            api.update({**obj, "status": {"loadBalancer": {"ingress": [{"ip": f"127.65.250.{n}"}]}}})


def effective_network(svc: Service, cache: ClusterCache) -> str | None:
    """Written independently of reconciler.reconcile.network: the annotation, else the project's type."""
    types = {p.network_type for p in cache.projects_for(svc.meta.namespace)}
    if not types:
        return None
    override = svc.meta.annotations.get(o.NETWORK_ANNOTATION)
    if override:
        return override
    return types.pop() if len(types) == 1 else None


def ours(backend: Backend) -> bool:
    ref = backend.meta.controller_ref()
    return (
        backend.meta.labels.get(o.MANAGED_BY) == o.MANAGER
        and ref is not None
        and (ref.kind, ref.api_version) == ("Service", "v1")
        and backend.meta.name == ref.name + SUFFIX
    )


def check_shadow_write(write: Write, cache: ClusterCache, policy: Policy) -> None:
    """Companion routes: only our own are changed or deleted; one is made only for a cloud solver."""
    service_name = write.name[: -len(SHADOW_SUFFIX)]
    existing = cache.shadow_route(write.namespace, write.name)
    if not isinstance(write, Create):
        assert existing is not None
        assert is_managed_shadow(existing, service_name, policy), f"foreign route touched: {write}"
        if isinstance(write, Patch):
            assert write.resource_version == existing.meta.resource_version
        return
    svc = cache.service(write.namespace, service_name)
    assert svc is not None
    assert isinstance(solver_challenge(svc.meta, cache, policy, Kind.SERVICE), Challenge)
    assert effective_network(svc, cache) == "cloud", f"companion route outside a cloud network: {write}"
    assert write.body["metadata"]["ownerReferences"][0]["uid"] == svc.meta.uid
    solver_labels = {o.SOLVER_LABEL, o.DOMAIN_LABEL, o.TOKEN_LABEL}
    assert not set(write.body["metadata"]["labels"]) & solver_labels, "cert-manager would adopt it"


def check_claim_write(write: Write, cache: ClusterCache) -> None:
    """A claim is made only for a cloud project's own Challenge, and only when nobody holds the name."""
    if isinstance(write, Create):
        spec = write.body["spec"]
        assert cache.projects_for(spec["namespace"]), f"claim for a namespace without a project: {write}"
        hosts = {c.dns_name for c in cache.challenges if c.meta.namespace == spec["namespace"]}
        assert spec["hostname"] in hosts, f"claim for a name no Challenge of the project asks for: {write}"
        assert cache.claim(spec["hostname"]) is None, f"second claim for one name: {write}"
    else:
        assert isinstance(write, Patch)
        assert write.subresource == "status", f"only a claim's status is ever updated: {write}"
        assert cache.claims.get(("", write.name)) is not None


def check_write_is_allowed(write: Write, cache: ClusterCache, policy: Policy) -> None:
    namespace = write.namespace
    if write.kind is Kind.DOMAINCLAIM:
        check_claim_write(write, cache)
        return
    assert cache.projects_for(namespace), f"write in a namespace without a project: {write}"
    if write.kind is Kind.HTTPROUTE and cache.route(namespace, write.name) is None:
        check_shadow_write(write, cache, policy)
        return
    if isinstance(write, Patch | Delete):
        target = {Kind.SERVICE: cache.service, Kind.BACKEND: cache.backend, Kind.HTTPROUTE: cache.route}[write.kind](
            namespace, write.name
        )
        assert target is not None
        assert target.meta.deletion_timestamp is None, f"write to an object being deleted: {write}"
        assert write.resource_version == target.meta.resource_version
    if write.kind is Kind.SERVICE:
        svc = cache.service(namespace, write.name)
        assert svc is not None
        assert isinstance(solver_challenge(svc.meta, cache, policy, Kind.SERVICE), Challenge), "look-alike patched"
        assert effective_network(svc, cache) == "cloud", f"Service outside a cloud network patched: {write}"
    elif write.kind is Kind.BACKEND:
        service_name = write.name[: -len(SUFFIX)]
        existing = cache.backend(namespace, write.name)
        if not isinstance(write, Create):
            assert existing is not None
            assert ours(existing), f"unmanaged Backend touched: {write}"
        svc = cache.service(namespace, service_name)
        if svc is None:
            assert isinstance(write, Delete)
            assert {p.network_type for p in cache.projects_for(namespace)} == {"cloud"}
        else:
            assert effective_network(svc, cache) == "cloud", f"Backend outside a cloud network: {write}"
    else:
        assert isinstance(write, Patch)
        route = cache.route(namespace, write.name)
        assert route is not None
        assert isinstance(solver_challenge(route.meta, cache, policy, Kind.HTTPROUTE), Challenge)
        before = {r.get("name") for rule in route.rules for r in rule.get("backendRefs") or ()}
        after = {r["name"] for rule in write.body["spec"]["rules"] for r in rule.get("backendRefs") or ()}
        for name in after - before:
            if not name.endswith(SUFFIX):
                # Only ever back to the solver Service behind a Backend the route named (the Backend is not
                # ours to route to, or the name is another project's): never to anything new.
                assert name + SUFFIX in before, f"route pointed at a new Service: {write}"
                continue
            svc = cache.service(namespace, name[: -len(SUFFIX)])
            assert svc is not None
            assert effective_network(svc, cache) == "cloud", f"route to a Backend outside a cloud network: {write}"
            backend = cache.backend(namespace, name)
            if policy.backend_mode is BackendMode.NONE:
                # the platform's own Backend, but only one pointing at this very Service's address and port
                assert backend is not None
                ep = backend.endpoints
                assert len(ep) == 1, write
                assert (ep[0].ip, ep[0].port) == (svc.ingress[0], svc.ports[0].port), write
            else:
                assert backend is None or ours(backend), f"route to a Backend we did not make: {write}"


def converge(objs: Iterable[JSON], policy: Policy, platform: bool) -> FakeAPI:
    api = FakeAPI(objs)
    for _ in range(MAX_PASSES):
        cache = cache_of(api, policy)
        writes = one_pass(cache, policy)
        for write in writes:
            check_write_is_allowed(write, cache, policy)
        api.apply_all(writes)  # any 404/409/422 fails the test
        if platform:
            give_addresses(api)
        if not writes and not platform:
            break
    return api


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_reconcilers_converge_and_then_write_nothing(world: tuple[list[JSON], Policy, bool]) -> None:
    objs, policy, platform = world
    api = converge(objs, policy, platform)
    cache = cache_of(api, policy)
    assert one_pass(cache, policy) == []
    again = cache_of(api, policy)
    assert one_pass(again, policy) == []


@settings(max_examples=100, deadline=None)
@given(worlds())
def test_nothing_changes_outside_cloud_networks(world: tuple[list[JSON], Policy, bool]) -> None:
    """Objects in namespaces without a project or with a public project (and no cloud override) are
    exactly as they were, whatever the reconcilers did elsewhere."""
    objs, policy, _ = world
    api = converge(objs, policy, platform=False)
    before = FakeAPI(objs).objects
    cache = o.cache_of(objs, policy)
    for key, obj in before.items():
        kind, namespace, name = key
        types = {p.network_type for p in cache.projects_for(namespace)}
        overridden = any(s.meta.annotations.get(o.NETWORK_ANNOTATION) == "cloud" for s in cache.services_in(namespace))
        if not types or (types == {"public"} and not overridden):
            assert api.objects.get(key) == obj, f"{kind} {namespace}/{name} changed"


def test_the_whole_chain_converges_in_three_passes() -> None:
    """cert-manager's objects in a cloud project: Service patch, then (address given) Backend, then route."""
    ch = o.challenge(namespace="org-a")
    svc, route = o.solver_service(ch), o.solver_route(ch)
    api = FakeAPI([ch, svc, route, o.project("a", ORG, "cloud", "org-a")])
    policy = Policy(route_mode=RouteMode.PATCH)
    seen = []
    for _ in range(4):
        writes = one_pass(cache_of(api, policy), policy)
        seen.append([(type(w).__name__, w.kind.value) for w in writes])
        api.apply_all(writes)
        give_addresses(api)
    assert seen == [[("Patch", "Service")], [("Create", "Backend")], [("Patch", "HTTPRoute")], []]
    backend_ref = api.objects[("HTTPRoute", "org-a", route["metadata"]["name"])]["spec"]["rules"][0]["backendRefs"]
    assert backend_ref == [
        {
            "group": "gateway.envoyproxy.io",
            "kind": "Backend",
            "name": f"{svc['metadata']['name']}-backend",
            "port": 8089,
            "weight": 1,
        }
    ]


def test_shadow_mode_adds_a_companion_route_and_leaves_cert_managers_alone() -> None:
    ch = o.challenge(namespace="org-a")
    svc, route = o.solver_service(ch), o.solver_route(ch)
    api = FakeAPI([ch, svc, route, o.project("a", ORG, "cloud", "org-a")])
    policy = Policy()
    seen = []
    for _ in range(4):
        writes = one_pass(cache_of(api, policy), policy)
        seen.append([(type(w).__name__, w.kind.value) for w in writes])
        api.apply_all(writes)
        give_addresses(api)
    assert seen == [[("Patch", "Service")], [("Create", "Backend")], [("Create", "HTTPRoute")], []]
    assert api.objects[("HTTPRoute", "org-a", route["metadata"]["name"])] == route, "cert-manager's route untouched"
    shadow = api.objects[("HTTPRoute", "org-a", svc["metadata"]["name"] + "-acme")]
    [rule] = shadow["spec"]["rules"]
    assert rule["matches"] == [
        {"path": {"type": "Exact", "value": f"/.well-known/acme-challenge/{ch['spec']['token']}"}, "method": "GET"}
    ]
    assert rule["backendRefs"] == [
        {
            "group": "gateway.envoyproxy.io",
            "kind": "Backend",
            "name": svc["metadata"]["name"] + "-backend",
            "weight": 1,
            "port": 8089,
        }
    ]
    assert shadow["spec"]["hostnames"] == route["spec"]["hostnames"]
    assert shadow["spec"]["parentRefs"] == route["spec"]["parentRefs"]
