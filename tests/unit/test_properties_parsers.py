"""Bad input for every view parser (issue 13): arbitrary, truncated and type-confused objects.

The informer projects each listed or watched object with the resource's parser and skips (counts as
`INVALID`) only what raises one of `ALLOWED` (`Informer._project`). Anything else would escape the informer's
handling: a list that always fails never syncs, and a watch event that always fails is read again from the
same resourceVersion forever. So: a parser returns a view or raises one of `ALLOWED`, whatever the object;
for most shapes it returns a view (a wrong field type becomes the field's default, not a dropped object).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reconciler.gateways import EnvoyProxy, Gateway, GatewayClass
from reconciler.hostnames import DomainClaim, ServedRoute
from reconciler.model import Backend, Challenge, HTTPRoute, Meta, Project, Service, View
from reconciler.policy import Policy
from reconciler.watches import watches
from tests.unit import objects as o

ALLOWED = (ValidationError, KeyError, TypeError, ValueError)
"""What `Informer._project` catches (and counts as an INVALID event)."""

Parser = Callable[..., Any]
PARSERS: dict[str, Parser] = {
    "Service": Service.from_raw,
    "Backend": Backend.from_raw,
    "HTTPRoute": HTTPRoute.from_raw,
    "Challenge": Challenge.from_raw,
    "Project": Project.from_raw,
    "DomainClaim": DomainClaim.from_raw,
    "Gateway": Gateway.from_raw,
    "GatewayClass": GatewayClass.from_raw,
    "EnvoyProxy": EnvoyProxy.from_raw,
    "ServedRoute(HTTPRoute)": ServedRoute.parser("HTTPRoute"),
    "ServedRoute(TLSRoute)": ServedRoute.parser("TLSRoute"),
    "Meta": Meta.from_raw,
}
KEEP = Policy().annotation_keys()

# The keys the parsers read, so random mappings reach their branches (and some they never read).
KEYS = [
    "metadata", "spec", "status", "name", "namespace", "uid", "resourceVersion", "creationTimestamp",
    "deletionTimestamp", "labels", "annotations", "ownerReferences", "apiVersion", "kind", "controller", "ports",
    "port", "targetPort", "protocol", "nodePort", "type", "clusterIP", "loadBalancer", "ingress", "ip", "hostname",
    "endpoints", "fqdn", "unix", "address", "path", "conditions", "reason", "message", "parentRefs", "hostnames",
    "rules", "backendRefs", "parents", "parentRef", "dnsName", "token", "key", "state", "egressNetworkType",
    "externalNetworkType", "project", "organization", "refusedChallenges", "recentContenders",
    "lastTransitionTime", "gatewayClassName", "infrastructure", "parametersRef", "group", "listeners", "addresses",
    "value", "preserveRouteOrder", *sorted(KEEP),
]  # fmt: skip
HUGE = "9" * 200_000

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "None", "8089", "http", "HTTP-01", "cloud", "true", "127.0.0.1", HUGE, "é" * 5000])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=24,
)
mappings = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)


def _realistic() -> list[dict[str, Any]]:
    ch = o.challenge()
    svc = o.solver_service(ch)
    route = o.solver_route(ch)
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "eg", "namespace": "envoy-gateway-system", "uid": "g1", "resourceVersion": "3"},
        "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                 "infrastructure": {"parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                      "name": "proxy"}}},
        "status": {"addresses": [{"type": "IPAddress", "value": "10.0.0.1"}]},
    }  # fmt: skip
    envoy_proxy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyProxy",
        "metadata": {"name": "proxy", "namespace": "envoy-gateway-system"}, "spec": {"preserveRouteOrder": True},
    }  # fmt: skip
    envoy_proxy_ref = gateway["spec"]["infrastructure"]["parametersRef"]
    return [
        ch, svc, o.patched(svc), route, o.backend_route(route, "x-backend"), o.managed_backend(svc),
        o.platform_backend(svc), o.project(), o.domain_claim("my-app.example.com"), gateway, envoy_proxy,
        {**gateway, "kind": "GatewayClass", "spec": {"parametersRef": envoy_proxy_ref}},
    ]  # fmt: skip


REALISTIC = _realistic()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A realistic object with one to four fields replaced by any JSON value, deleted or truncated."""
    obj = copy.deepcopy(draw(st.sampled_from(REALISTIC)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(obj) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        how = draw(st.sampled_from(["replace", "replace", "delete", "truncate"]))
        if how == "replace":
            parent[last] = draw(json_values)
        elif how == "delete":
            del parent[last]
        elif isinstance(parent[last], str | list):
            parent[last] = parent[last][: draw(st.integers(0, max(0, len(parent[last]) - 1)))]
    return obj


def parse(name: str, raw: Any, keep: frozenset[str] | None) -> object | None:
    """The parser's view, or None when it refused with one of the errors the informer catches."""
    parser = PARSERS[name]
    try:
        return parser(raw, keep)
    except ALLOWED:
        return None


names = st.sampled_from(sorted(PARSERS))
keeps = st.sampled_from([None, KEEP])
quick = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, st.one_of(mappings, mutated()), keeps)
def test_any_object_parses_or_is_refused_with_an_error_the_informer_catches(
    name: str, raw: dict[str, Any], keep: frozenset[str] | None
) -> None:
    """Random mappings over the keys the parsers read, and real shapes type-confused or truncated."""
    view = parse(name, raw, keep)
    assert view is None or isinstance(view, View)


@quick
@given(mutated())
def test_a_parsed_view_keeps_only_the_annotations_asked_for(raw: dict[str, Any]) -> None:
    view = parse("Service", raw, KEEP)
    if isinstance(view, Service):
        assert set(view.meta.annotations) <= KEEP
        assert all(isinstance(v, str) for v in view.meta.annotations.values())


@pytest.mark.parametrize("raw", REALISTIC, ids=lambda r: str(r["kind"]))
def test_every_watch_parser_accepts_the_real_shapes(raw: dict[str, Any]) -> None:
    """The counterpart: realistic objects are never refused (the properties above would pass vacuously if
    every parser refused everything)."""
    table = [w for w in watches(o.cache_of([]), Policy()) if w.resource.kind == raw["kind"]]
    assert table, raw["kind"]
    for watch in table:
        assert isinstance(watch.parse(raw, KEEP), View)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_huge_strings_everywhere_are_parsed_or_refused_cleanly(name: str) -> None:
    for raw in REALISTIC:
        swollen = copy.deepcopy(raw)
        for path in _paths(swollen):
            if not path:
                continue
            parent = swollen
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent[path[-1]], str):
                parent[path[-1]] = HUGE
        view = parse(name, swollen, KEEP)
        assert view is None or isinstance(view, View)
