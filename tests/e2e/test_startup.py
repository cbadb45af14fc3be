"""Start-up that explains itself, on the test bed: each way the reconciler cannot run (no kubeconfig, no
context, no API server, no permissions, a CRD missing) ends the process within a bound time with a
non-zero exit code and exactly one ERROR line naming the cause and the fix, and no traceback; a CRD
removed at run time keeps /readyz at 503 with the reason, logged once, until it is back.

The missing-CRD cases run on a second, small control plane whose CRD directory lacks the Backend CRD,
so the session's control plane keeps every CRD for the other tests.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from reconciler.kube.diagnosis import SERVICE_ACCOUNT_USER
from testbed.controlplane import RECONCILER_SA_NAMESPACE, ControlPlane
from testbed.harness import NamespaceFactory, ReconcilerProcess, apply_rbac, start_reconciler
from testbed.kube import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    CRDS,
    LEASES,
    ROLEBINDINGS,
    SERVICEACCOUNTS,
    Kube,
    load_manifests,
    wait_for,
)
from testbed.kubedc import ensure_namespace
from testbed.paths import BUNDLED_CRDS, OWN_CRDS, REPO_ROOT
from testbed.pki import write_kubeconfig
from testbed.ports import free_loopback_ports
from testbed.synckube import load_crds

pytestmark = pytest.mark.anyio

EXIT_WITHIN = 30.0
"""Seconds a failing start may take (Python start-up on a busy 2-core machine included)."""
BACKENDS_CRD = "gateway.envoyproxy.io_backends.yaml"
DOMAINCLAIMS_CRD = "domainclaims.acme-gateway.kube-dc.com"
RBAC_FIX = "apply manifests/rbac.yaml (ClusterRole acme-gateway-reconciler and its ClusterRoleBinding)"


@dataclass(frozen=True)
class Exited:
    code: int
    log: str
    seconds: float

    @property
    def errors(self) -> list[str]:
        """The messages of the ERROR lines (the log is JSON, one object per line)."""
        found = []
        for line in self.log.splitlines():
            doc = json.loads(line)  # every line is one JSON object: no stray output, no traceback
            if doc["level"] == "error":
                found.append(doc["msg"])
        return found


async def run_to_exit(kubeconfig: Path | str, args: Sequence[str] = (), env: dict[str, str] | None = None) -> Exited:
    """`python -m reconciler run` with JSON logs until it exits (failing the test after `EXIT_WITHIN`)."""
    (port,) = free_loopback_ports(1)
    argv = [sys.executable, "-m", "reconciler", "run", "--kubeconfig", str(kubeconfig)]
    argv += ["--metrics-bind-address", f"127.0.0.1:{port}", "--log-format", "json", *args]
    child_env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    child_env |= {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.monotonic()
    with anyio.fail_after(EXIT_WITHIN):
        done = await anyio.run_process(argv, cwd=REPO_ROOT, env=child_env, check=False, stderr=subprocess.STDOUT)
    log = done.stdout.decode(errors="replace")
    assert "Traceback" not in log, log
    return Exited(done.returncode, log, time.monotonic() - started)


def assert_one_line(exited: Exited, code: int, line: str) -> None:
    assert (exited.code, exited.errors) == (code, [line]), exited.log


def kubeconfig_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


# --- configuration: exit 2 ------------------------------------------------------------------------------


async def test_a_missing_kubeconfig_says_so(tmp_path: Path) -> None:
    exited = await run_to_exit(tmp_path / "missing.kubeconfig")
    assert_one_line(
        exited,
        2,
        f"kubeconfig {tmp_path / 'missing.kubeconfig'} (--kubeconfig / RECONCILER_KUBECONFIG) does not exist: "
        "pass the path of a kubeconfig file",
    )
    assert "current-context" not in exited.log


async def test_a_missing_kubeconfig_in_text_logs_is_one_line_too(tmp_path: Path) -> None:
    exited = await run_to_exit(tmp_path / "missing", ["--log-format", "text"])
    assert exited.code == 2
    [line] = exited.log.splitlines()
    assert " ERROR " in line
    assert line.endswith("does not exist: pass the path of a kubeconfig file")


async def test_a_kubeconfig_without_current_context_lists_its_contexts(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    doc = kubeconfig_doc(control_plane.admin_kubeconfig)
    del doc["current-context"]
    path = tmp_path / "no-context.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    assert_one_line(
        await run_to_exit(path),
        2,
        f"kubeconfig {path} has no current-context and no --context / RECONCILER_CONTEXT is set (contexts: testbed): "
        "pass --context NAME, or run kubectl config use-context NAME",
    )


async def test_an_unknown_context(control_plane: ControlPlane) -> None:
    assert_one_line(
        await run_to_exit(control_plane.admin_kubeconfig, ["--context", "prod"]),
        2,
        f"context 'prod' (--context / RECONCILER_CONTEXT) is not in kubeconfig {control_plane.admin_kubeconfig} "
        "(contexts: testbed): pass one of those",
    )


# --- the cluster: exit 1 --------------------------------------------------------------------------------


async def test_an_api_server_that_does_not_answer(control_plane: ControlPlane, tmp_path: Path) -> None:
    (port,) = free_loopback_ports(1)  # nothing listens there
    path = write_kubeconfig(
        tmp_path / "nowhere.kubeconfig",
        server=f"https://127.0.0.1:{port}",
        ca_file=control_plane.ca_file,
        token="unused",
        user="nobody",
    )
    exited = await run_to_exit(path, env={"RECONCILER_STARTUP_TIMEOUT": "3"})
    [line] = exited.errors
    assert exited.code == 1
    assert line.startswith(f"the API server at https://127.0.0.1:{port} did not answer within 3 s (")
    assert line.endswith(
        "last: connection refused): check that it is running and that this is its address (kubeconfig server, "
        "or raise RECONCILER_STARTUP_TIMEOUT for a slow start)"
    )
    assert exited.seconds < 3 + 15, "gives up after the wait it announced"
    assert "API server not answering yet; retrying" in exited.log
    assert '"waiting_up_to": "3s"' in exited.log


async def test_rejected_credentials(control_plane: ControlPlane, tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "bad-token.kubeconfig",
        server=control_plane.server_url,
        ca_file=control_plane.ca_file,
        token="not-a-token",
        user="nobody",
    )
    assert_one_line(
        await run_to_exit(path),
        1,
        f"the API server at {control_plane.server_url} rejected our credentials (401 Unauthorized): the token or "
        "client certificate in the kubeconfig (or the ServiceAccount token) is invalid or expired: renew it",
    )


async def service_account_kubeconfig(api: Kube, plane: ControlPlane, namespace: str, name: str, path: Path) -> Path:
    """A ServiceAccount and a kubeconfig with a token for it (TokenRequest): an identity the test bed's
    token file does not know, with whatever RBAC the test gives it (none to begin with)."""
    await ensure_namespace(api, namespace)
    await api.apply(
        SERVICEACCOUNTS,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
    )
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    answer = await api.request("POST", SERVICEACCOUNTS.path(namespace, name, "token"), body=request)
    return write_kubeconfig(
        path, server=plane.server_url, ca_file=plane.ca_file, token=answer["status"]["token"], user=name
    )


async def test_an_identity_without_rbac_is_one_line(
    control_plane: ControlPlane, api: Kube, namespaces: NamespaceFactory, tmp_path: Path
) -> None:
    name = f"nobody-{secrets.token_hex(3)}"
    namespace = await namespaces("startup")
    user = f"system:serviceaccount:{namespace}:{name}"
    path = await service_account_kubeconfig(api, control_plane, namespace, name, tmp_path / "nobody.kubeconfig")
    exited = await run_to_exit(path)
    [line] = exited.errors
    assert exited.code == 1
    assert line.startswith(f"{user} has none of the ")
    assert line.endswith(
        f"permissions the reconciler needs (e.g. list projects.kube-dc.com): bind ClusterRole "
        f"acme-gateway-reconciler (manifests/rbac.yaml) to {user}: the manifest binds it to ServiceAccount "
        "acme-gateway-reconciler/acme-gateway-reconciler"
    )


@pytest.fixture
async def partial_role(api: Kube) -> AsyncIterator[str]:
    """The name of a ServiceAccount in the reconciler's namespace, bound to a copy of `manifests/rbac.yaml`'s
    ClusterRole without `create` on DomainClaims (same name) and to its leader-election Role."""
    await apply_rbac(api)
    name = f"partial-{secrets.token_hex(3)}"
    [cluster_role] = [
        d
        for d in load_manifests(REPO_ROOT / "manifests" / "rbac.yaml")
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "acme-gateway-reconciler"
    ]
    for rule in cluster_role["rules"]:
        if rule["resources"] == ["domainclaims"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "create"]
    cluster_role["metadata"] = {"name": name}
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": RECONCILER_SA_NAMESPACE}]
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": name}, "subjects": subject}
    await api.apply(CLUSTERROLES, cluster_role)
    await api.apply(
        CLUSTERROLEBINDINGS,
        binding
        | {
            "kind": "ClusterRoleBinding",
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        },
    )
    await api.apply(
        ROLEBINDINGS,
        binding
        | {
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": RECONCILER_SA_NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "acme-gateway-reconciler-leader-election",
            },
        },
    )
    yield name
    await api.delete(ROLEBINDINGS, name, RECONCILER_SA_NAMESPACE, missing_ok=True)
    await api.delete(CLUSTERROLEBINDINGS, name, missing_ok=True)
    await api.delete(CLUSTERROLES, name, missing_ok=True)
    await api.delete(SERVICEACCOUNTS, name, RECONCILER_SA_NAMESPACE, missing_ok=True)


async def test_one_missing_verb_is_one_line_and_stops_before_the_election(
    control_plane: ControlPlane, api: Kube, tmp_path: Path, partial_role: str
) -> None:
    name = partial_role
    user = f"system:serviceaccount:{RECONCILER_SA_NAMESPACE}:{name}"
    path = await service_account_kubeconfig(
        api, control_plane, RECONCILER_SA_NAMESPACE, name, tmp_path / "p.kubeconfig"
    )
    lease = f"startup-{secrets.token_hex(3)}"
    env = {"RECONCILER_LEADER_ELECTION_NAMESPACE": RECONCILER_SA_NAMESPACE, "RECONCILER_LEADER_ELECTION_ID": lease}
    assert_one_line(
        await run_to_exit(path, ["--leader-elect"], env),
        1,
        f"not allowed to create domainclaims.acme-gateway.kube-dc.com (as {user}): bind ClusterRole "
        f"acme-gateway-reconciler (manifests/rbac.yaml) to {user}: the manifest binds it to ServiceAccount "
        "acme-gateway-reconciler/acme-gateway-reconciler",
    )
    assert await api.get_or_none(LEASES, lease, RECONCILER_SA_NAMESPACE) is None, "the election never started"


async def test_the_service_account_with_the_manifest_passes(
    control_plane: ControlPlane, api: Kube, tmp_path: Path
) -> None:
    """The control: `manifests/rbac.yaml` grants everything the checks ask for, election included."""
    proc = await start_reconciler(
        control_plane,
        api,
        tmp_path / "sa.log",
        args=["--leader-elect"],
        env={
            "RECONCILER_LEADER_ELECTION_NAMESPACE": RECONCILER_SA_NAMESPACE,
            "RECONCILER_LEADER_ELECTION_ID": f"ok-{secrets.token_hex(3)}",
        },
    )
    try:
        log = proc.log()
        assert " ERROR " not in log, log
        assert f"user={SERVICE_ACCOUNT_USER}" in log
    finally:
        await proc.terminate()


# --- missing CRDs: a second control plane ---------------------------------------------------------------


@pytest.fixture(scope="module")
def plane_without_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A small control plane with every bundled CRD but Envoy Gateway's Backend."""
    crds = tmp_path_factory.mktemp("crds-without-backends")
    for path in BUNDLED_CRDS.glob("*.yaml"):
        if path.name != BACKENDS_CRD:
            shutil.copy(path, crds / path.name)
    plane = ControlPlane(crd_directory=crds)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


async def test_missing_crds_at_start_and_at_run_time(plane_without_backends: ControlPlane, tmp_path: Path) -> None:
    plane = plane_without_backends
    assert_one_line(
        await run_to_exit(plane.admin_kubeconfig),
        1,
        "CRD for backends.gateway.envoyproxy.io/v1alpha1 is not installed: install Envoy Gateway's CRDs "
        "(the Backend API, gateway.envoyproxy.io_backends.yaml)",
    )

    with plane.sync_api(timeout=60) as sync:
        sync.install_crds(load_crds([BUNDLED_CRDS / BACKENDS_CRD]))
    async with Kube.from_kubeconfig(plane.admin_kubeconfig) as admin:
        proc = await start_reconciler(
            plane, admin, tmp_path / "runtime.log", identity="admin", args=["--log-format", "json"]
        )
        try:
            await crd_removed_at_run_time(plane, admin, proc)
        finally:
            await proc.terminate()

        await admin.delete(CRDS, DOMAINCLAIMS_CRD)
        await wait_for(lambda: gone(admin, DOMAINCLAIMS_CRD), within=30, what="DomainClaim CRD deleted")
        assert_one_line(
            await run_to_exit(plane.admin_kubeconfig),
            1,
            "CRD for domainclaims.acme-gateway.kube-dc.com/v1alpha1 is not installed: apply manifests/crds/ "
            "(kubectl apply -k manifests/)",
        )


async def gone(api: Kube, crd: str) -> bool:
    return await api.get_or_none(CRDS, crd) is None


async def crd_removed_at_run_time(plane: ControlPlane, admin: Kube, proc: ReconcilerProcess) -> None:
    """DomainClaim CRD deleted under a ready reconciler: 503 with the reason, one ERROR line however many
    retries, ready again once the CRD is back."""
    reason = (
        "domainclaims.acme-gateway.kube-dc.com/v1alpha1 is not served by the API server (is its CRD installed?): "
        "apply manifests/crds/ (kubectl apply -k manifests/)"
    )
    await admin.delete(CRDS, DOMAINCLAIMS_CRD)

    async def not_ready() -> bool:
        resp = await proc.get("/readyz")
        return resp.status_code == 503 and resp.text == f"{reason}\n"

    await wait_for(not_ready, within=30, what="/readyz 503 naming the DomainClaim CRD")
    await proc.metrics_when(
        lambda m: m.total("acme_gateway_watch_restarts_total", resource="domainclaims", reason="error") >= 4,
        "several retries",
        within=30,
    )
    assert (await proc.get("/readyz")).status_code == 503
    errors = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    errors = [doc["msg"] for doc in errors if doc["level"] == "error"]
    assert errors == [f"{reason}; not ready, retrying"], "logged once, not on every retry"

    with plane.sync_api(timeout=60) as sync:
        sync.install_crds(load_crds(sorted(OWN_CRDS.glob("*.yaml"))))
    await proc.wait_ready(within=60)
    assert "list/watch works again" in proc.log()
