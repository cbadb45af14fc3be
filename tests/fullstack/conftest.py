"""Fixtures for the full-stack suite: real API server, Envoy Gateway + Envoy, Pebble, and the reconciler.

Run it inside a private network namespace (Envoy Gateway binds fixed ports on every interface)::

    .venv/bin/python -m testbed.gateway netns -- .venv/bin/python -m pytest tests/fullstack

Session-wide (start-up costs ~15 s): the control plane, Envoy Gateway with Gateway ``eg``, challtestsrv
(every name resolves to the gateway's address) + Pebble (validating on the gateway's listener port), the
kube-dc stand-in and the solver servers (``testbed.solvers``). Per test: projects (each with its own
127.65.x.y / 127.66.x.y address), an ACME account, reconciler processes (ServiceAccount identity, scoped
with ``--namespaces`` so their metrics are the test's own), and a ``timings`` record that is printed and
merged into ``fullstack-times.json`` under ``testbed.paths.results_dir()`` (``.test-results/``, ignored
by git, or ``$RECONCILER_TEST_RESULTS``), so a test run leaves the work tree as it was.
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

import anyio
import anyio.to_thread
import pytest

from testbed.certmanager import SolverConfig
from testbed.controlplane import ControlPlane
from testbed.gateway import EnvoyGateway
from testbed.harness import (
    Project,
    ReconcilerNotReady,
    ReconcilerProcess,
    forget_namespace,
    next_address,
    start_reconciler,
)
from testbed.issuer import GatewaySelfCheck
from testbed.kube import Kube
from testbed.kubedc import KubeDC, create_project
from testbed.netns import in_private_netns, network_interfaces
from testbed.paths import results_dir
from testbed.pebble import AcmeAccount, ChallTestSrv, Pebble, acme_stack
from testbed.solvers import SolverServers

TIMES_FILE = results_dir() / "fullstack-times.json"
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
    with EnvoyGateway(control_plane.admin_kubeconfig) as eg:
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
    """The solver Pods' servers on the solver Services' EIP address and port."""
    async with SolverServers(api) as servers:
        yield servers
    assert not servers.errors, f"solver servers failed: {servers.errors!r}"


# --- per test ----------------------------------------------------------------------------------------


@dataclass
class Env:
    """Everything a scenario needs, in one fixture."""

    api: Kube
    plane: ControlPlane
    gateway: EnvoyGateway
    pebble: Pebble
    kubedc: KubeDC
    solvers: SolverServers
    account: AcmeAccount
    log_dir: Path
    self_check: GatewaySelfCheck
    namespaces: list[str] = field(default_factory=list)
    reconcilers: list[ReconcilerProcess] = field(default_factory=list)

    async def project(self, network_type: str = "cloud") -> Project:
        """Org namespace + Project + project namespace, with a fresh address registered with kube-dc."""
        org = f"org-{secrets.token_hex(4)}"
        name = f"p{secrets.token_hex(3)}"
        self.namespaces.append(org)
        obj = await create_project(self.api, org, name, network_type)
        namespace = obj["status"]["namespace"]
        self.namespaces.append(namespace)
        address = next_address(network_type)
        self.kubedc.assign(namespace, address)
        return Project(org, name, namespace, network_type, address, obj)

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

    def solver_config(self, **overrides: Any) -> SolverConfig:
        """cert-manager's cadence compressed (5 passes 0.2 s apart, retry every 1 s), self-check through
        the gateway (one per test, so its record covers every order); gives up after 60 s unless told
        otherwise (cert-manager never does)."""
        base: dict[str, Any] = {
            "self_check": self.self_check,
            "required_passes": 5,
            "pass_interval": 0.2,
            "retry_period": 1.0,
            "give_up_after": 60.0,
        }
        return SolverConfig(**{**base, **overrides})


@pytest.fixture
async def env(
    control_plane: ControlPlane,
    api: Kube,
    gateway: EnvoyGateway,
    pebble: Pebble,
    kubedc: KubeDC,
    solvers: SolverServers,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    """One test's world on the shared components; its namespaces and reconcilers go at teardown."""
    account = await anyio.to_thread.run_sync(AcmeAccount, pebble)
    check = GatewaySelfCheck(gateway.address, gateway.listener_port)
    world = Env(api, control_plane, gateway, pebble, kubedc, solvers, account, tmp_path, check)
    try:
        yield world
    finally:
        for proc in world.reconcilers:
            code = await proc.terminate()
            print(f"\n--- reconciler log {proc.log_path} (exit {code}) ---\n{proc.log()}")
        for name in world.namespaces:
            await forget_namespace(api, name)


@dataclass
class Timings:
    """Seconds (and a few counts) one scenario measured, for the report and the results file."""

    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = round(value, 3) if isinstance(value, float) else value


def _merge_times(test: str, entry: Mapping[str, Any]) -> None:
    """Replace this test's entry in the results file, keeping every other test's."""
    TIMES_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        data: dict[str, Any] = json.loads(TIMES_FILE.read_text())
    except (OSError, ValueError):
        data = {}
    data[test] = entry
    tmp = TIMES_FILE.with_name(TIMES_FILE.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    tmp.replace(TIMES_FILE)


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
    _recorded.append((request.node.name, entry))
    with contextlib.suppress(OSError):
        _merge_times(request.node.name, entry)
