"""Fixtures for the full-stack suite: real API server, Envoy Gateway + Envoy, Pebble, the real cert-manager
controllers, and the reconciler.

Run it inside a private network namespace (Envoy Gateway binds fixed ports on every interface)::

    .venv/bin/python -m testbed.gateway netns -- .venv/bin/python -m pytest tests/fullstack

Session-wide (start-up costs ~15 s): the control plane, Envoy Gateway with Gateway ``eg``, challtestsrv
(every name resolves to the gateway's address) + Pebble (validating on the gateway's listener port), one
real cert-manager (upstream cadence; its self-check resolves through challtestsrv), the kube-dc stand-in,
the solver servers (``testbed.solvers``: solver Pods, kube-dc's EIP forwarding, and the reachable pod
network of baseline projects), a ``Timeline`` of every Challenge, route and Certificate, and a ClusterIssuer
on first use. Per test: projects (each with its own 127.65.x.y / 127.66.x.y address) with an Issuer,
reconciler processes (ServiceAccount identity, scoped with ``--namespaces`` so their metrics are the test's
own), and a ``timings`` record that is printed and merged into ``fullstack-times.json`` under
``testbed.paths.results_dir()`` (``.test-results/``, ignored by git, or ``$RECONCILER_TEST_RESULTS``), so a
test run leaves the work tree as it was; time to Ready per scenario, cloud project against the baseline
project measured at the same time, also goes to ``fullstack-time-to-ready.json`` there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testbed import issuance
from testbed.certificates import acme_issuer, certificate
from testbed.certmanager_controller import CertManagerController
from testbed.controlplane import ControlPlane
from testbed.gateway import EnvoyGateway
from testbed.harness import (
    Project,
    ReconcilerNotReady,
    ReconcilerProcess,
    forget_claims,
    forget_namespace,
    start_reconciler,
)
from testbed.issuance import Issuance
from testbed.kube import Kube, Obj
from testbed.kubedc import KubeDC
from testbed.netns import in_private_netns, network_interfaces
from testbed.paths import results_dir
from testbed.pebble import ChallTestSrv, Pebble, acme_stack
from testbed.solvers import FAST_POD_START, SolverServers
from testbed.stack import EG_CRDS, create_issuer, make_project
from testbed.timeline import Timeline

TIMES_FILE = results_dir() / "fullstack-times.json"
READY_FILE = results_dir() / "fullstack-time-to-ready.json"
READY_WITHIN = 240.0  # seconds; ~20 s at upstream cadence, each lost self-check round costs 10 s more
CLUSTER_ISSUER = "pebble-cluster"
_recorded: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture(scope="session", autouse=True)
def private_netns() -> None:
    """Fail (never skip) outside a private network namespace: Envoy Gateway would bind 0.0.0.0 here."""
    if not in_private_netns():
        pytest.fail(
            f"the full-stack suite must run in a private network namespace (interfaces here: "
            f"{network_interfaces()}); run: .venv/bin/python -m testbed.gateway netns -- "
            f".venv/bin/python -m pytest tests/fullstack"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so the timings record says whether the test passed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show every scenario's timings at the end of the run, even when all passed (output is captured)."""
    if _recorded:
        terminalreporter.section("full-stack timings (seconds)")
        for name, entry in _recorded:
            terminalreporter.write_line(f"{name}: {json.dumps(entry)}")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Session scope so session-scoped async fixtures share the tests' event loop."""
    return "asyncio"


# --- session: the components -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """kube-apiserver, etcd, kube-controller-manager (garbage collector) with the upstream CRDs."""
    with ControlPlane() as plane:
        sys.stderr.write(f"\ntestbed control plane at {plane.server_url}: {plane.timings}\n")
        yield plane


@pytest.fixture(scope="session")
def gateway(control_plane: ControlPlane) -> Iterator[EnvoyGateway]:
    """The shared gateway: Envoy Gateway (host mode) and Envoy, Gateway ``eg`` listening on port 80."""
    with EnvoyGateway(control_plane.admin_kubeconfig, eg_crd_plurals=EG_CRDS) as eg:
        sys.stderr.write(f"testbed Envoy Gateway at {eg.base_url}: {eg.timings}\n")
        yield eg


@pytest.fixture(scope="session")
def acme_server(gateway: EnvoyGateway) -> Iterator[tuple[ChallTestSrv, Pebble]]:
    """challtestsrv resolving every name to the gateway, and Pebble validating through it."""
    with acme_stack(gateway.address, gateway.listener_port, gateway.binaries) as stack:
        yield stack


@pytest.fixture(scope="session")
def pebble(acme_server: tuple[ChallTestSrv, Pebble]) -> Pebble:
    """The ACME server."""
    return acme_server[1]


@pytest.fixture(scope="session")
def cert_manager(
    control_plane: ControlPlane, acme_server: tuple[ChallTestSrv, Pebble]
) -> Iterator[CertManagerController]:
    """The real cert-manager controllers at upstream defaults (10 s check retry period, 60 concurrent
    challenges), their self-check resolving every name to the gateway through challtestsrv."""
    dns, _ = acme_server
    with CertManagerController(control_plane.admin_kubeconfig, solver_nameservers=[dns.dns_address]) as cm:
        sys.stderr.write(f"testbed cert-manager at {cm.base_url}: {cm.timings}\n")
        yield cm


@pytest.fixture(scope="session")
async def api(control_plane: ControlPlane) -> AsyncIterator[Kube]:
    """Admin client: the test oracle, and the identity of the stand-ins."""
    async with Kube.from_kubeconfig(control_plane.admin_kubeconfig) as kube:
        yield kube


@pytest.fixture(scope="session")
async def kubedc(api: Kube) -> AsyncIterator[KubeDC]:
    """kube-dc's service controller stand-in (EIP addresses for LoadBalancer Services)."""
    async with KubeDC(api) as standin:
        yield standin
    assert not standin.errors, f"kube-dc stand-in failed: {standin.errors!r}"


@pytest.fixture(scope="session")
async def solvers(api: Kube) -> AsyncIterator[SolverServers]:
    """The solver Pods' servers on the solver Services' EIP address and port (or ClusterIP in a baseline
    project), each serving 1 s after its Pod appeared, as a fast kubelet would."""
    async with SolverServers(api, FAST_POD_START) as servers:
        yield servers
    assert not servers.errors, f"solver servers failed: {servers.errors!r}"


@pytest.fixture(scope="session")
async def timeline(api: Kube) -> AsyncIterator[Timeline]:
    """Every Challenge, solver route, EndpointSlice and Certificate, with the times they changed."""
    async with Timeline(api) as tl:
        yield tl


@pytest.fixture(scope="session")
async def cluster_issuer(api: Kube, gateway: EnvoyGateway, pebble: Pebble, cert_manager: CertManagerController) -> str:
    """The PRD's platform-wide issuer: one ClusterIssuer for every project (its account Secret lives in
    cert-manager's cluster resource namespace)."""
    body = acme_issuer(pebble.directory_url, pebble.ca_file.read_bytes(), gateway.parent_ref, name=CLUSTER_ISSUER)
    await create_issuer(api, body)
    return CLUSTER_ISSUER


# --- per test ----------------------------------------------------------------------------------------


@dataclass
class Env:
    """Everything a scenario needs, in one fixture."""

    api: Kube
    plane: ControlPlane
    gateway: EnvoyGateway
    pebble: Pebble
    cm: CertManagerController
    kubedc: KubeDC
    solvers: SolverServers
    timeline: Timeline
    log_dir: Path
    namespaces: list[str] = field(default_factory=list)
    reconcilers: list[ReconcilerProcess] = field(default_factory=list)

    async def project(self, network_type: str = "cloud") -> Project:
        """Org namespace + Project + project namespace, with a fresh address registered with kube-dc;
        both namespaces go at teardown."""
        org = f"org-{secrets.token_hex(4)}"
        self.namespaces.append(org)
        p = await make_project(self.api, self.kubedc, network_type, org)
        self.namespaces.append(p.namespace)
        return p

    async def baseline(self) -> Project:
        """The reference: a public project whose solver Services the gateway reaches, as in a cluster
        without kube-dc's isolation (``SolverServers.reach_services``). No reconciler acts on it."""
        p = await self.project("public")
        await self.solvers.reach_services(p.namespace)
        self.timeline.reachable.add(p.namespace)
        return p

    async def issuer(self, p: Project, *, wait_instead_of_self_check: float | None = None) -> Obj:
        """An ACME Issuer ``pebble`` in the project's namespace, Ready (account registered at Pebble)."""
        body = acme_issuer(
            self.pebble.directory_url,
            self.pebble.ca_file.read_bytes(),
            self.gateway.parent_ref,
            namespace=p.namespace,
            wait_instead_of_self_check=wait_instead_of_self_check,
        )
        return await create_issuer(self.api, body)

    async def reconciler(self, namespaces: Sequence[str], args: Sequence[str] = ()) -> ReconcilerProcess:
        """``python -m reconciler run`` as its ServiceAccount (``manifests/rbac.yaml``), scoped to
        ``namespaces``; stopped at teardown, its log printed."""
        log_path = self.log_dir / f"reconciler-{len(self.reconcilers)}.log"
        proc = await start_reconciler(
            self.plane, self.api, log_path, args=["--namespaces", ",".join(namespaces), *args], wait_ready=False
        )
        self.reconcilers.append(proc)
        try:
            await proc.wait_ready()
        except ReconcilerNotReady as err:
            pytest.fail(str(err))
        return proc

    async def cloud_and_baseline(
        self, args: Sequence[str] = (), *, issuers: bool = True, wait_instead_of_self_check: float | None = None
    ) -> tuple[Project, Project, ReconcilerProcess]:
        """The usual set-up: a cloud project with a reconciler scoped to it (``args`` added), a baseline
        project, and (unless ``issuers`` is false) an Issuer in each."""
        p, baseline = await self.project(), await self.baseline()
        rec = await self.reconciler([p.namespace], args)
        if issuers:
            for q in (p, baseline):
                await self.issuer(q, wait_instead_of_self_check=wait_instead_of_self_check)
        return p, baseline, rec

    async def start(
        self,
        p: Project,
        *,
        name: str = "app",
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        issuer_kind: str = "Issuer",
        issuer_name: str = "pebble",
    ) -> Issuance:
        """Create a Certificate in the project; its issuance starts now."""
        cert = certificate(
            name,
            p.namespace,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            issuer_kind=issuer_kind,
            issuer_name=issuer_name,
        )
        return await issuance.create(self.api, cert)

    async def ready(self, *started: Issuance, within: float = READY_WITHIN) -> list[Issuance]:
        """Wait until issuances started together are all Ready, then report their Challenges from the
        timeline and cert-manager's log (also on a timeout, so the failure shows how far each got)."""
        try:
            await issuance.wait_all_ready(self.timeline, started, within)
        finally:
            rounds = self.cm.rounds()
            for one in started:
                issuance.report(one, self.timeline, rounds, self.cm.check_retry_period)
                if one.ready_at is None:
                    print(f"not Ready: {json.dumps(one.as_dict())}")
        return list(started)

    def solvers_made(self, *projects: Project) -> tuple[int, int]:
        """(Challenges, solver Services cert-manager made for them) in these projects so far. Under load
        cert-manager sometimes makes a second Service for a Challenge from a stale cache, deletes both and
        makes a third; the reconciler wires each one it sees."""
        challenges = self.timeline.in_namespaces([p.namespace for p in projects])
        return len(challenges), sum(len(self.timeline.solver_services.get(uid, [])) for uid in challenges)

    async def renew(self, p: Project, name: str = "app") -> Issuance:
        """Trigger a re-issuance as ``cmctl renew`` does."""
        return await issuance.trigger_renewal(self.api, self.timeline, p.namespace, name)


@pytest.fixture
async def env(
    control_plane: ControlPlane,
    api: Kube,
    gateway: EnvoyGateway,
    pebble: Pebble,
    cert_manager: CertManagerController,
    kubedc: KubeDC,
    solvers: SolverServers,
    timeline: Timeline,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    """One test's world on the shared components; its namespaces and reconcilers go at teardown."""
    world = Env(api, control_plane, gateway, pebble, cert_manager, kubedc, solvers, timeline, tmp_path)
    try:
        yield world
    finally:
        for proc in world.reconcilers:
            code = await proc.terminate()
            print(f"\n--- reconciler log {proc.log_path} (exit {code}) ---\n{proc.log()}")
        for name in world.namespaces:
            await forget_claims(api, name)  # cluster-scoped: they would outlive the project
            await forget_namespace(api, name)


@dataclass
class Timings:
    """Seconds (and a few counts) one scenario measured, for the report and the results files."""

    values: dict[str, Any] = field(default_factory=dict)
    time_to_ready: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = round(value, 3) if isinstance(value, float) else value

    def issued(self, label: str, cloud: Issuance, baseline: Issuance | None = None) -> None:
        """Record an issuance in full, and its time to Ready next to the baseline's, measured together."""
        self.values[label] = cloud.as_dict()
        entry: dict[str, Any] = {"cloud_s": round(cloud.seconds, 3), "cloud_lost_checks": cloud.lost}
        if baseline is not None:
            self.values[f"{label}_baseline"] = baseline.as_dict()
            entry |= {
                "baseline_s": round(baseline.seconds, 3),
                "baseline_lost_checks": baseline.lost,
                "ratio": round(cloud.seconds / baseline.seconds, 3),
            }
        self.time_to_ready[label] = entry


def _merge_json(path: Path, test: str, entry: Mapping[str, Any]) -> None:
    """Replace this test's entry in a results file, keeping every other test's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[test] = entry
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    tmp.replace(path)


@pytest.fixture
def timings(request: pytest.FixtureRequest) -> Iterator[Timings]:
    """Record a scenario's timings; printed and merged into ``TIMES_FILE``."""
    record = Timings()
    started = time.monotonic()
    yield record
    if not record.values:
        return
    report = getattr(request.node, "report_call", None)
    outcome = report.outcome if report is not None else "unknown"
    entry = {
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "outcome": outcome,
        "test_seconds": round(time.monotonic() - started, 3),
        "cpus": os.cpu_count(),
        **record.values,
    }
    print(f"\n[timings] {request.node.name}: {json.dumps(entry)}")
    _recorded.append((request.node.name, record.time_to_ready or entry))
    with contextlib.suppress(OSError):
        _merge_json(TIMES_FILE, request.node.name, entry)
        if record.time_to_ready:
            ready = {k: entry[k] for k in ("measured_at", "outcome", "cpus")} | record.time_to_ready
            _merge_json(READY_FILE, request.node.name, ready)
