"""Fixtures for end-to-end tests against a real control plane (``testbed``).

One control plane, admin client and kube-dc stand-in per session (start-up costs seconds); namespaces,
projects, cert-manager stand-ins and reconciler processes per test. Async fixtures run on anyio's pytest
plugin with a session-scoped asyncio backend, so session fixtures and tests share one event loop and the
background stand-ins keep running while a test awaits. Helper types live in ``testbed.harness``.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from testbed.controlplane import ControlPlane
from testbed.harness import (
    CertManager,
    Identity,
    NamespaceFactory,
    Project,
    ProjectFactory,
    ReconcilerNotReady,
    ReconcilerProcess,
    StartReconciler,
    forget_claims,
    forget_namespace,
    next_address,
    start_reconciler,
)
from testbed.kube import Kube
from testbed.kubedc import KubeDC, create_project, ensure_namespace


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Session scope so session-scoped async fixtures (api, kubedc) can exist."""
    return "asyncio"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The real control plane; builds the binaries on first use and fails (never skips) if it cannot."""
    plane = ControlPlane()
    plane.start()
    sys.stderr.write(f"\ntestbed control plane at {plane.server_url}: {plane.timings}\n")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
async def api(control_plane: ControlPlane) -> AsyncIterator[Kube]:
    """Admin (system:masters) client: the test oracle."""
    async with Kube.from_kubeconfig(control_plane.admin_kubeconfig) as kube:
        yield kube


@pytest.fixture
async def namespaces(api: Kube) -> AsyncIterator[NamespaceFactory]:
    """Unique namespaces per test, so tests never see each other's objects; deleted afterwards."""
    created: list[str] = []

    async def make(prefix: str = "t", labels: Mapping[str, str] | None = None) -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        await ensure_namespace(api, name, labels)
        created.append(name)
        return name

    yield make
    for name in created:
        await forget_namespace(api, name)


@pytest.fixture(scope="session")
async def kubedc(api: Kube) -> AsyncIterator[KubeDC]:
    """The kube-dc service-controller stand-in, for the whole session (projects register addresses)."""
    async with KubeDC(api) as standin:
        yield standin
    assert not standin.errors, f"kube-dc stand-in failed: {standin.errors!r}"


@pytest.fixture
def kubedc_backends(kubedc: KubeDC) -> Iterator[KubeDC]:
    """The same stand-in, also creating ``<svc>-backend`` Backends as the platform does, for one test."""
    kubedc.create_backends = True
    try:
        yield kubedc
    finally:
        kubedc.create_backends = False


@pytest.fixture
async def project(api: Kube, kubedc: KubeDC, namespaces: NamespaceFactory) -> AsyncIterator[ProjectFactory]:
    """Factory: org namespace + Project + project namespace + address registered with kube-dc."""
    made: list[str] = []

    async def make(network_type: str = "cloud", *, name: str | None = None, address: str | None = None) -> Project:
        org = await namespaces("org")
        name = name or f"p{secrets.token_hex(3)}"
        obj = await create_project(api, org, name, network_type)
        namespace = obj["status"]["namespace"]
        made.append(namespace)
        address = address or next_address(network_type)
        kubedc.assign(namespace, address)
        return Project(org, name, namespace, network_type, address, obj)

    yield make
    for namespace in made:
        await forget_namespace(api, namespace)
        await forget_claims(api, namespace)


@pytest.fixture
async def cert_manager(api: Kube) -> AsyncIterator[CertManager]:
    """The cert-manager stand-in for one test; its solver loops stop at teardown."""
    async with contextlib.AsyncExitStack() as stack:
        handle = CertManager(api, stack)
        yield handle
    assert not handle.errors, f"cert-manager stand-in failed: {handle.errors!r}"


@pytest.fixture
async def reconciler(control_plane: ControlPlane, api: Kube, tmp_path: Path) -> AsyncIterator[StartReconciler]:
    """Factory starting ``python -m reconciler run`` (ServiceAccount identity by default, RBAC applied);
    every process is stopped at teardown and its log printed (pytest shows it when the test fails)."""
    processes: list[ReconcilerProcess] = []

    async def start(
        *,
        identity: Identity = "serviceaccount",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
    ) -> ReconcilerProcess:
        log_path = tmp_path / f"reconciler-{len(processes)}.log"
        try:
            proc = await start_reconciler(
                control_plane, api, log_path, identity=identity, args=args, env=env, wait_ready=False
            )
            processes.append(proc)
            if wait_ready:
                await proc.wait_ready()
        except ReconcilerNotReady as err:
            pytest.fail(str(err))
        return proc

    try:
        yield start
    finally:
        for proc in processes:
            code = await proc.terminate()
            print(f"\n--- reconciler log {proc.log_path} (exit {code}) ---\n{proc.log()}")
