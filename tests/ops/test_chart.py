"""The Helm chart (charts/acme-gateway-reconciler): `helm lint` passes; with default values it renders the
objects `kustomize build manifests/` does, and with the monitoring switches on also those of
manifests/monitoring/ (compared object by object); every reconciler setting is a value and reaches the
reconciler as the environment variable it reads.

Helm and kustomize are built from the Go module proxy by hack/build-ops-tools.sh (cached by version). The
chart reads RBAC, rules and dashboard from manifests/ through the link files/manifests, so those cannot
drift; the rest is templated, which this test keeps equal.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from reconciler.config import Settings
from testbed.opstools import (
    CHART,
    MANIFESTS,
    MONITORING,
    Obj,
    OpsTools,
    find_ops_tools,
    helm_template,
    kustomize_build,
    run_tool,
)

MONITORING_ON = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    }
}
Key = tuple[str, str, str, str]


@pytest.fixture(scope="module")
def tools() -> OpsTools:
    return find_ops_tools()


def _normalise(obj: Obj) -> Obj:
    """What differs between the renderings without meaning: env order (no entry refers to another)."""
    obj = copy.deepcopy(obj)
    if obj.get("kind") == "Deployment":
        for container in obj["spec"]["template"]["spec"]["containers"]:
            container["env"] = sorted(container.get("env", []), key=lambda e: e["name"])
    return obj


def _by_key(objects: list[Obj]) -> dict[Key, Obj]:
    keyed: dict[Key, Obj] = {}
    for obj in objects:
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in keyed, f"rendered twice: {key}"
        keyed[key] = _normalise(obj)
    return keyed


def _diff(path: str, a: Any, b: Any) -> list[str]:
    """Paths where two parsed objects differ (a: kustomize, b: helm)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _diff(f"{path}.{k}", a.get(k), b.get(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(f"{path}[{i}]", x, y)]
    return [] if a == b else [f"{path}: kustomize {a!r} != helm {b!r}"]


def differences(kustomize: list[Obj], helm: list[Obj]) -> list[str]:
    """Every difference between two renderings, object by object (missing objects included)."""
    k, h = _by_key(kustomize), _by_key(helm)
    out = [f"only in kustomize: {key}" for key in k.keys() - h.keys()]
    out += [f"only in helm: {key}" for key in h.keys() - k.keys()]
    for key in sorted(k.keys() & h.keys()):
        out += [f"{key[1]}/{key[3]}{d}" for d in _diff("", k[key], h[key])]
    return out


def test_helm_lint(tools: OpsTools) -> None:
    for values in ({}, MONITORING_ON):
        args = [arg for key in _flatten(values) for arg in ("--set", key)]
        out = run_tool([tools.helm, "lint", "--strict", CHART, *args]).stdout
        assert "1 chart(s) linted, 0 chart(s) failed" in out


def _flatten(values: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={str(value).lower() if isinstance(value, bool) else value}")
    return out


def test_default_values_render_the_kustomize_manifests() -> None:
    assert differences(kustomize_build(MANIFESTS), helm_template()) == []


def test_monitoring_on_renders_the_kustomize_monitoring_kit_too() -> None:
    expected = kustomize_build(MANIFESTS) + kustomize_build(MONITORING)
    assert differences(expected, helm_template(MONITORING_ON)) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 3}, "Deployment/acme-gateway-reconciler.spec.replicas: kustomize 2 != helm 3"),
        ({"settings": {"logFormat": "text"}}, "env[2].value: kustomize 'json' != helm 'text'"),
        ({"rbac": {"create": False}}, "only in kustomize: ('rbac.authorization.k8s.io/v1', 'ClusterRole'"),
        ({"monitoring": {"serviceMonitor": {"enabled": True}}}, "only in helm: ('monitoring.coreos.com/v1'"),
    ],
)
def test_the_comparison_reports_a_drift(values: dict[str, Any], expected: str) -> None:
    """The drift test is live: a chart that renders something else is reported, with where."""
    found = differences(kustomize_build(MANIFESTS), helm_template(values))
    assert any(expected in d for d in found), found


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_every_reconciler_setting_is_a_chart_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["settings"]) == {_camel(name) for name in Settings.model_fields}


# A valid value for every setting, none of them the default: each must reach the reconciler's Settings.
NON_DEFAULT: dict[str, Any] = {
    "kubeconfig": "/etc/kube/config",
    "context": "other",
    "metrics_bind_address": "0.0.0.0:9090",
    "namespaces": ["team-a", "team-b"],
    "solver_port_range": "9000-9050",
    "service_workers": 3,
    "backend_workers": 4,
    "route_workers": 5,
    "qps": 12.5,
    "burst": 60,
    "resync_period": 1200,
    "watch_timeout": 120,
    "leader_elect": False,
    "leader_election_namespace": "elsewhere",
    "leader_election_id": "other-lease",
    "lease_duration": 30,
    "renew_deadline": 20,
    "retry_period": 4,
    "log_level": "DEBUG",
    "log_format": "text",
    "solver_label": "x/solver",
    "domain_label": "x/domain",
    "token_label": "x/token",
    "network_type_annotation": "x/network",
    "bind_on_eip_annotation": "x/bind",
    "create_backend_annotation": "x/create",
    "route_port_annotation": "x/port",
    "bind_on_default_gw_annotation": "x/default-gw",
    "eip_name": "other-eip",
    "managed_by_label": "x/managed-by",
    "managed_by_value": "someone",
    "backend_mode": "acme",
    "route_mode": "patch",
    "max_challenges_per_project": 3,
    "dry_run": True,
    "probe": False,
    "probe_address": "gateway.example:8080",
    "address_timeout": 45.0,
    "challenge_workers": 6,
    "startup_timeout": 12.0,
    "watch_idle_timeout": 45.0,
}


def _deployment(objects: list[Obj]) -> Obj:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    return deployment


def test_every_setting_reaches_the_reconciler(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = set(Settings.model_fields) - set(NON_DEFAULT)
    assert not missing, f"add a non-default value for {missing} to NON_DEFAULT"
    rendered = helm_template({"settings": {_camel(k): v for k, v in NON_DEFAULT.items()}})
    [container] = _deployment(rendered)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for name in list(env):
        if name.startswith("RECONCILER_"):
            monkeypatch.setenv(name, env[name])
    settings = Settings()
    for name, value in NON_DEFAULT.items():
        got = getattr(settings, name)
        assert str(got) == str(value) or got == value, f"{name}: set {value!r}, reconciler read {got!r}"
    # The metrics port follows metricsBindAddress everywhere the pod is reached.
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    annotations = _deployment(rendered)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9090"


def test_unset_settings_leave_the_reconcilers_defaults() -> None:
    [container] = _deployment(helm_template())["spec"]["template"]["spec"]["containers"]
    names = sorted(e["name"] for e in container["env"])
    # What manifests/deployment.yaml sets, nothing more.
    assert names == [
        "POD_NAMESPACE",
        "RECONCILER_LEADER_ELECT",
        "RECONCILER_LOG_FORMAT",
        "RECONCILER_METRICS_BIND_ADDRESS",
    ]


def test_namespace_and_service_account_move_together() -> None:
    rendered = helm_template(
        {"namespace": {"name": "ops", "create": False}, "serviceAccount": {"name": "agr"}, **MONITORING_ON}
    )
    assert not [o for o in rendered if o["kind"] == "Namespace"]
    for obj in rendered:
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}:
            assert obj["metadata"]["namespace"] == "ops", obj["kind"]
        for subject in obj.get("subjects", []):
            assert (subject["name"], subject["namespace"]) == ("agr", "ops")
    assert _deployment(rendered)["spec"]["template"]["spec"]["serviceAccountName"] == "agr"
    [monitor] = [o for o in rendered if o["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["ops"]


def test_runbook_base_url_prefixes_every_runbook() -> None:
    base = "https://git.example.com/platform/acme-gateway-reconciler/blob/v0.1.0/"
    rendered = helm_template({"monitoring": {"prometheusRule": {"enabled": True, "runbookBaseURL": base}}})
    [rule] = [o for o in rendered if o["kind"] == "PrometheusRule"]
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert urls
    assert all(re.fullmatch(re.escape(base) + r"docs/operators\.md#[a-z]+", u) for u in urls), urls
