"""External ports for solver Services on the project's shared EIP (`ports.py`, applied by `services.py`).

kube-dc puts every LoadBalancer Service bound to an EIP on its one address, so two of them cannot share a
port, and cert-manager gives every solver port 8089 (see the notes). Each solver gets its own port from
`Policy.solver_ports`; targetPort stays 8089.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.model import JSON, Key
from reconciler.policy import Policy
from reconciler.reconcile.intents import Kind, Patch
from reconciler.reconcile.ports import solver_port
from reconciler.reconcile.reasons import Refused
from reconciler.reconcile.services import reconcile_service
from tests.unit import objects as o
from tests.unit.fake_api import FakeAPI

NO_FREE_PORT = Refused.NO_FREE_PORT

DEFAULT_GW_FLAG = "service.nlb.kube-dc.com/bind-on-default-gw-eip"
T0 = "2026-08-01T10:00:00Z"
T1 = "2026-08-01T10:00:05Z"
T2 = "2026-08-01T10:00:09Z"
CLOUD = o.project()
ON_EIP = {o.BIND_ANNOTATION: "default-gw"}
ON_DEFAULT_GW = {DEFAULT_GW_FLAG: "true"}
SOLVER_PORT: JSON = {"name": "http", "port": 8089, "targetPort": 8089, "protocol": "TCP", "nodePort": 31234}


def challenge(n: int | str, namespace: str = o.NS) -> JSON:
    return o.challenge(name=f"ch-{n}", namespace=namespace, dns_name=f"d{n}.example.com", token=f"tok-{n}")


def solver(
    n: int | str,
    *,
    bound: bool = False,
    port: int = 8089,
    created: str = T0,
    name: str | None = None,
    namespace: str = o.NS,
) -> tuple[JSON, JSON]:
    """A Challenge and its solver Service: cert-manager's NodePort, or (`bound`) already on the EIP."""
    ch = challenge(n, namespace)
    svc = o.solver_service(ch, name=name or f"cm-acme-http-solver-{n}")
    if bound:
        svc = o.patched(svc)
    svc["spec"]["ports"][0]["port"] = port
    svc["metadata"]["creationTimestamp"] = created
    return ch, svc


def lb(
    name: str,
    ports: list[int],
    annotations: dict[str, str] | None = None,
    *,
    type_: str = "LoadBalancer",
    namespace: str = o.NS,
    created: str = T1,
    labels: dict[str, str] | None = None,
) -> JSON:
    """A project's own Service (not a solver); by default a LoadBalancer on the solvers' EIP."""
    svc = o.plain_service(
        name=name,
        namespace=namespace,
        type_=type_,
        labels=labels,
        annotations=dict(ON_EIP if annotations is None else annotations),
        ports=ports,
    )
    svc["metadata"]["creationTimestamp"] = created
    return svc


def key_of(svc: JSON) -> Key:
    return (svc["metadata"]["namespace"], svc["metadata"]["name"])


CH1, S1 = solver(1)
KEY1 = key_of(S1)
CH1B, S1B = solver(1, bound=True)
CH2, S2 = solver(2, created=T1)
KEY2 = key_of(S2)
CUSTOM = Policy(solver_ports=(9000, 9001))
ACME_EIP = Policy(eip_name="acme-eip")


@dataclass
class Case:
    id: str
    world: list[JSON]
    port: int | None  # the port the solver should get; None = the range is full
    key: Key = KEY1
    policy: Policy = field(default_factory=Policy)


def _two(older: tuple[JSON, JSON], younger: tuple[JSON, JSON]) -> list[JSON]:
    return [*older, *younger, CLOUD]


CASES = [
    Case("first-solver-keeps-8089", [CH1, S1, CLOUD], 8089),
    Case("first-solver-bound-keeps-8089", [CH1B, S1B, CLOUD], 8089),
    # a second concurrent Challenge in the project
    Case("second-solver-gets-8090", [CH1B, S1B, CH2, S2, CLOUD], 8090, key=KEY2),
    Case("first-solver-keeps-8089-next-to-second", [CH1B, S1B, CH2, S2, CLOUD], 8089),
    Case(
        "third-solver-gets-8091",
        [CH1B, S1B, *solver(2, bound=True, port=8090, created=T1), *solver(3, created=T2), CLOUD],
        8091,
        key=(o.NS, "cm-acme-http-solver-3"),
    ),
    Case(
        "older-unbound-solver-yields-to-bound-younger",  # cert-manager made both in the same second
        _two(solver("b", created=T0), solver("a", bound=True, created=T1)),
        8090,
        key=(o.NS, "cm-acme-http-solver-b"),
    ),
    Case(
        "bound-younger-keeps-port-over-unbound-older",
        _two(solver("b", created=T0), solver("a", bound=True, created=T1)),
        8089,
        key=(o.NS, "cm-acme-http-solver-a"),
    ),
    # the project's own LoadBalancer Services on the EIP
    Case("project-lb-on-eip-by-name", [CH1, S1, CLOUD, lb("web", [8089, 8090])], 8091),
    Case("project-lb-on-default-gw-flag", [CH1, S1, CLOUD, lb("web", [8089, 8090], ON_DEFAULT_GW)], 8091),
    Case("project-lb-both-annotations", [CH1, S1, CLOUD, lb("web", [8089], {**ON_EIP, **ON_DEFAULT_GW})], 8090),
    Case("project-lbs-fill-a-gap", [CH1, S1, CLOUD, lb("web", [8089]), lb("api", [8090, 8092])], 8091),
    Case("default-gw-flag-false", [CH1, S1, CLOUD, lb("web", [8089], {DEFAULT_GW_FLAG: "false"})], 8089),
    Case("lb-on-other-eip", [CH1, S1, CLOUD, lb("web", [8089], {o.BIND_ANNOTATION: "tenant-eip"})], 8089),
    Case("lb-without-eip-annotation", [CH1, S1, CLOUD, lb("web", [8089], {})], 8089),
    Case("cluster-ip-with-eip-annotation", [CH1, S1, CLOUD, lb("web", [8089], type_="ClusterIP")], 8089),
    Case("node-port-with-eip-annotation", [CH1, S1, CLOUD, lb("web", [8089], type_="NodePort")], 8089),
    Case("lb-in-other-namespace", [CH1, S1, CLOUD, lb("web", [8089], namespace="shalb-other")], 8089),
    Case(
        "solver-in-other-namespace",
        [CH1, S1, CLOUD, *solver(2, bound=True, namespace="shalb-other", created=T0)],
        8089,
    ),
    Case(
        "custom-eip-ignores-default-gw-flag",
        [CH1, S1, CLOUD, lb("web", [8089], ON_DEFAULT_GW)],
        8089,
        policy=ACME_EIP,
    ),
    Case(
        "custom-eip-by-name",
        [CH1, S1, CLOUD, lb("web", [8089], {o.BIND_ANNOTATION: "acme-eip"})],
        8090,
        policy=ACME_EIP,
    ),
    Case("custom-eip-ignores-default-gw-name", [CH1, S1, CLOUD, lb("web", [8089])], 8089, policy=ACME_EIP),
    # no churn
    Case("bound-solver-on-free-port-keeps-it", [*solver(1, bound=True, port=8095), CLOUD, lb("web", [8089])], 8095),
    Case(  # only a port held on the EIP is a claim; cert-manager's NodePort port is none
        "unbound-solver-port-is-no-claim",
        [*solver(1, port=8095), CLOUD, lb("web", [8089])],
        8090,
    ),
    Case("top-of-range-kept", [*solver(1, bound=True, port=8188), CLOUD], 8188),
    Case("above-range-moves-to-lowest-free", [*solver(1, bound=True, port=8189), CLOUD, lb("web", [8089])], 8090),
    Case("below-range-moves-to-lowest-free", [*solver(1, bound=True, port=8088), CLOUD], 8089),
    # two solvers on one port: only the younger moves
    Case(
        "same-port-older-keeps",
        _two(solver(1, bound=True, created=T0), solver(2, bound=True, created=T1)),
        8089,
    ),
    Case(
        "same-port-younger-moves",
        _two(solver(1, bound=True, created=T0), solver(2, bound=True, created=T1)),
        8090,
        key=KEY2,
    ),
    Case(
        "same-port-same-second-name-decides-keep",
        _two(solver("a", bound=True), solver("b", bound=True)),
        8089,
        key=(o.NS, "cm-acme-http-solver-a"),
    ),
    Case(
        "same-port-same-second-name-decides-move",
        _two(solver("a", bound=True), solver("b", bound=True)),
        8090,
        key=(o.NS, "cm-acme-http-solver-b"),
    ),
    Case(
        "moving-solver-skips-younger-solvers-port",
        [CH1B, S1B, CLOUD, lb("web", [8089], created=T2), *solver(2, bound=True, port=8090, created=T1)],
        8091,
    ),
    # anything but a solver forces the solver to move, whatever its age
    Case("younger-non-solver-on-port-forces-move", [CH1B, S1B, CLOUD, lb("web", [8089], created=T2)], 8090),
    Case("older-non-solver-on-port-forces-move", [*solver(1, bound=True, created=T2), CLOUD, lb("web", [8089])], 8090),
    Case(
        "younger-look-alike-with-solver-label-forces-move",  # a tenant's LB carrying the solver label, no Challenge
        [CH1B, S1B, CLOUD, lb("web", [8089], created=T2, labels={o.SOLVER_LABEL: "true"})],
        8090,
    ),
    # deleting Services no longer count
    Case("deleting-lb-ignored", [CH1, S1, CLOUD, o.deleting(lb("web", [8089]))], 8089),
    Case(
        "deleting-older-solver-ignored",
        [*solver(1, bound=True, created=T1), CLOUD, CH2, o.deleting(solver(2, bound=True, created=T0)[1])],
        8089,
    ),
    # a full range
    Case("default-range-full", [CH1, S1, CLOUD, lb("web", list(range(8089, 8189)))], None),
    Case(
        "default-range-full-but-one",
        [CH1, S1, CLOUD, lb("web", list(range(8089, 8188)))],
        8188,
    ),
    # a custom range
    Case("custom-range-first", [CH1, S1, CLOUD], 9000, policy=CUSTOM),
    Case("custom-range-second", [CH1, S1, CLOUD, lb("web", [9000])], 9001, policy=CUSTOM),
    Case(
        "custom-range-next-to-a-solver",
        [*solver(2, bound=True, port=9000, created=T0), CH1, S1, CLOUD],
        9001,
        policy=CUSTOM,
    ),
    Case("custom-range-full", [CH1, S1, CLOUD, lb("web", [9000, 9001])], None, policy=CUSTOM),
    Case(
        "custom-range-full-but-solver-holds-one",
        [*solver(1, bound=True, port=9001), CLOUD, lb("web", [9000])],
        9001,
        policy=CUSTOM,
    ),
]


def _raw(world: list[JSON], key: Key) -> JSON:
    return next(x for x in world if x["kind"] == "Service" and key_of(x) == key)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_solver_port(case: Case) -> None:
    cache = o.cache_of(case.world, case.policy)
    svc = cache.service(*case.key)
    assert svc is not None
    assert solver_port(svc, cache, case.policy) == case.port


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reconcile_service_port(case: Case) -> None:
    decision = reconcile_service(case.key, o.cache_of(case.world, case.policy), case.policy)
    raw = _raw(case.world, case.key)
    if case.port is None:
        assert decision.writes == ()
        assert [(r.kind, r.namespace, r.name, r.reason) for r in decision.refusals] == [
            (Kind.SERVICE, *case.key, NO_FREE_PORT)
        ]
        return
    assert decision.refusals == ()
    ports = raw["spec"]["ports"]
    if ports[0]["port"] == case.port:
        assert all("ports" not in w.body.get("spec", {}) for w in decision.writes if isinstance(w, Patch))
        return
    (write,) = decision.writes
    assert isinstance(write, Patch)
    assert (write.kind, write.namespace, write.name, write.resource_version) == (Kind.SERVICE, *case.key, "1")
    # a merge patch replaces the list: every port is sent, only the first one's external port changes
    assert write.body["spec"]["ports"] == [{**ports[0], "port": case.port}, *ports[1:]]


WITH_PORT = [c for c in CASES if c.port is not None]


@pytest.mark.parametrize("case", WITH_PORT, ids=[c.id for c in WITH_PORT])
def test_applied_port_is_stable(case: Case) -> None:
    api = FakeAPI(case.world)
    api.apply_all(reconcile_service(case.key, o.cache_of(case.world, case.policy), case.policy).writes)
    stored = api.get("Service", *case.key)
    assert stored is not None
    assert stored["spec"]["type"] == "LoadBalancer"
    assert stored["spec"]["ports"][0] == {**SOLVER_PORT, "port": case.port}  # targetPort and nodePort kept
    cache = o.cache_of(api.objects.values(), case.policy)
    again = reconcile_service(case.key, cache, case.policy)
    assert again.writes == ()
    assert again.refusals == ()
    svc = cache.service(*case.key)
    assert svc is not None
    assert solver_port(svc, cache, case.policy) == case.port


def test_second_solver_patch_keeps_every_port_field() -> None:
    """The whole ports list is sent; name, targetPort, protocol and nodePort survive, only port moves."""
    ch2, s2 = solver(2, created=T1)
    s2["spec"]["ports"].append({"name": "metrics", "port": 9402, "targetPort": "metrics", "protocol": "UDP"})
    world = [CH1B, S1B, ch2, s2, CLOUD]
    (write,) = reconcile_service(KEY2, o.cache_of(world), Policy()).writes
    assert isinstance(write, Patch)
    assert write.body["spec"] == {
        "type": "LoadBalancer",
        "ports": [
            {"name": "http", "port": 8090, "targetPort": 8089, "protocol": "TCP", "nodePort": 31234},
            {"name": "metrics", "port": 9402, "targetPort": "metrics", "protocol": "UDP"},
        ],
    }
    api = FakeAPI(world)
    api.apply(write)
    stored = api.get("Service", *KEY2)
    assert stored is not None
    assert stored["spec"]["ports"] == write.body["spec"]["ports"]
    assert reconcile_service(KEY2, o.cache_of(api.objects.values()), Policy()).writes == ()


def test_full_range_writes_nothing_at_all() -> None:
    """Not even the LoadBalancer type: a solver without a port of its own would collide on the EIP."""
    decision = reconcile_service(KEY1, o.cache_of([CH1, S1, CLOUD, lb("web", [9000, 9001])], CUSTOM), CUSTOM)
    assert decision.writes == ()
    (refusal,) = decision.refusals
    assert refusal.reason == NO_FREE_PORT
    assert refusal.uid == S1["metadata"]["uid"]
    assert "9000-9001" in refusal.message


# -- concurrent solvers in one project, processed the way the shell does it --------------------------

LOW, HIGH = Policy().solver_ports


@st.composite
def projects(draw: st.DrawFn) -> tuple[list[JSON], list[Key], set[int]]:
    """N fresh solvers (cert-manager's NodePort on 8089, creation within a few seconds, so ties happen),
    the project's own LoadBalancers on the EIP, and Services that must not count."""
    n = draw(st.integers(1, 12))
    seconds = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    suffixes = draw(st.lists(st.text("abcdefghjk", min_size=3, max_size=3), min_size=n, max_size=n, unique=True))
    world: list[JSON] = [CLOUD]
    keys: list[Key] = []
    for i, (second, suffix) in enumerate(zip(seconds, suffixes, strict=True)):
        ch, svc = solver(i, created=f"2026-08-01T10:00:0{second}Z", name=f"cm-acme-http-solver-{suffix}")
        world += [ch, svc]
        keys.append(key_of(svc))
    taken: set[int] = set()
    for j in range(draw(st.integers(0, 3))):
        ports = draw(st.lists(st.integers(LOW, LOW + 15), min_size=1, max_size=4, unique=True))
        annotations = draw(st.sampled_from([ON_EIP, ON_DEFAULT_GW]))
        world.append(lb(f"own-{j}", ports, annotations, created=f"2026-08-01T10:00:0{draw(st.integers(0, 3))}Z"))
        taken |= set(ports)
    # never counted: another EIP, not a LoadBalancer, another namespace
    world += [
        lb("other-eip", [8089, 8090], {o.BIND_ANNOTATION: "tenant-eip"}),
        lb("internal", [8089, 8090], type_="ClusterIP"),
        lb("elsewhere", [8089, 8090], namespace="shalb-other"),
    ]
    order = draw(st.permutations(keys))
    return world, list(order), taken


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(projects())
def test_concurrent_solvers_get_distinct_ports(world_order_taken: tuple[list[JSON], list[Key], set[int]]) -> None:
    """One at a time, the cache updated after each write: every solver ends on its own in-range port that
    no LoadBalancer of the project already holds on the EIP."""
    world, order, taken = world_order_taken
    policy = Policy(max_challenges_per_project=100)  # ports, not the concurrency limit (test_reconcile_limits)
    api = FakeAPI(world)
    for key in order:
        decision = reconcile_service(key, o.cache_of(api.objects.values(), policy), policy)
        assert decision.refusals == ()
        api.apply_all(decision.writes)
    solvers = [api.objects[("Service", *key)] for key in order]
    assert all(s["spec"]["type"] == "LoadBalancer" for s in solvers)
    ports = [s["spec"]["ports"][0]["port"] for s in solvers]
    assert all(s["spec"]["ports"][0]["targetPort"] == 8089 for s in solvers)
    assert all(LOW <= p <= HIGH for p in ports), ports
    assert not set(ports) & taken, (ports, taken)
    assert len(set(ports)) == len(ports), f"two solvers share a port on the EIP: {ports} (processed {order})"
    # and a second round changes nothing
    for key in order:
        assert reconcile_service(key, o.cache_of(api.objects.values(), policy), policy).writes == ()


def test_same_second_solvers_processed_in_name_order_reversed() -> None:
    """The smallest world the property above needs: cert-manager creates two solvers in the same second;
    the one whose name sorts last happens to be processed first and is bound to 8089. The other one is
    then the "older" by (creationTimestamp, name) and keeps 8089 too, though it is not yet on the EIP."""
    ch_z, s_z = solver("z", created=T0)
    ch_a, s_a = solver("a", created=T0)
    api = FakeAPI([ch_z, s_z, ch_a, s_a, CLOUD])
    for svc in (s_z, s_a):
        api.apply_all(reconcile_service(key_of(svc), o.cache_of(api.objects.values()), Policy()).writes)
    ports = [api.objects[("Service", *key_of(s))]["spec"]["ports"][0]["port"] for s in (s_z, s_a)]
    types = {api.objects[("Service", *key_of(s))]["spec"]["type"] for s in (s_z, s_a)}
    assert types == {"LoadBalancer"}
    assert len(set(ports)) == 2, f"both solvers bound to the EIP on {ports}"
