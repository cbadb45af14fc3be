"""The Helm chart as the API server sees it: everything it renders (the monitoring kit and its CRDs
included) is accepted by a server-side dry run (`dryRun=All`, strict field validation) on the test bed.

The ServiceMonitor and PrometheusRule kinds need prometheus-operator's CRDs, which the test bed does not
carry: they are installed for real first (copied from the prometheus-operator module by
hack/build-ops-tools.sh). CRDs the chart ships are only dry-run.
"""

from __future__ import annotations

import anyio
import pytest

from testbed.controlplane import ControlPlane
from testbed.kube import Kube, Obj, Resource
from testbed.kubedc import ensure_namespace
from testbed.opstools import find_ops_tools, helm_template
from testbed.synckube import load_crds

pytestmark = pytest.mark.anyio

EVERYTHING_ON = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    }
}


async def _resource(api: Kube, obj: Obj) -> Resource:
    """The REST resource of an object's kind, from discovery (any kind the server serves)."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    group, _, version = api_version.rpartition("/")
    listing = await api.request("GET", f"/apis/{api_version}" if group else f"/api/{version}")
    [found] = [r for r in listing["resources"] if r["kind"] == kind and "/" not in r["name"]]
    return Resource(group, version, found["name"], namespaced=found["namespaced"], kind=kind)


async def _dry_run_apply(api: Kube, obj: Obj) -> Obj:
    res = await _resource(api, obj)
    meta = obj["metadata"]
    params = {"fieldManager": "helm-dry-run", "force": "true", "dryRun": "All", "fieldValidation": "Strict"}
    path = res.path(meta.get("namespace") if res.namespaced else None, meta["name"])
    answer: Obj = await api.request("PATCH", path, body=obj, params=params, content_type="application/apply-patch+yaml")
    return answer


async def test_rendered_chart_is_accepted_by_a_server_side_dry_run(control_plane: ControlPlane, api: Kube) -> None:
    tools = await anyio.to_thread.run_sync(find_ops_tools)

    def install_monitoring_crds() -> None:
        with control_plane.sync_api() as sync:
            sync.install_crds(load_crds(tools.monitoring_crds), keep_existing=True)

    await anyio.to_thread.run_sync(install_monitoring_crds)
    rendered = await anyio.to_thread.run_sync(lambda: helm_template(EVERYTHING_ON))
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "ClusterRole", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    # Namespaced objects need their namespace to exist (a dry-run Namespace is not created).
    await ensure_namespace(api, "acme-gateway-reconciler")
    for obj in sorted(rendered, key=lambda o: (o["kind"] != "CustomResourceDefinition", o["kind"] != "Namespace")):
        answer = await _dry_run_apply(api, obj)
        assert answer["kind"] == obj["kind"]
        assert answer["metadata"]["name"] == obj["metadata"]["name"]
        if obj["kind"] == "PrometheusRule":  # nothing pruned by the CRD's schema
            assert answer["spec"] == obj["spec"]
    # A dry run persists nothing.
    [monitor] = [o for o in rendered if o["kind"] == "ServiceMonitor"]
    res = await _resource(api, monitor)
    assert await api.get_or_none(res, monitor["metadata"]["name"], monitor["metadata"]["namespace"]) is None
