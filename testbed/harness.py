"""Test-facing helpers on top of the control plane: the reconciler as a process, its metrics, projects
with addresses, a cert-manager handle, namespace clean-up.

Kept out of conftest.py so tests can import the types and ``python -m testbed`` sub-commands can reuse
them without pytest.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import anyio.abc
import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from testbed import polling
from testbed.certmanager import (
    FINALIZER,
    SolverConfig,
    SolverLoop,
    SolverObjects,
    create_challenge,
    present,
)
from testbed.controlplane import RECONCILER_SA_NAMESPACE, ControlPlane
from testbed.kube import BY_KIND, CHALLENGES, DOMAINCLAIMS, NAMESPACES, Kube, Obj, load_manifests, wait_for
from testbed.kubedc import ensure_namespace
from testbed.paths import REPO_ROOT
from testbed.ports import free_loopback_ports

RBAC_MANIFEST = REPO_ROOT / "manifests" / "rbac.yaml"
READY_TIMEOUT = 30.0


# --- namespaces and projects -------------------------------------------------------------------------


async def forget_namespace(api: Kube, name: str) -> None:
    """Delete without waiting; first drop ACME finalizers, which no solver loop may be left to remove."""
    with contextlib.suppress(Exception):
        for ch in await api.list(CHALLENGES, name):
            finalizers = ch["metadata"].get("finalizers") or []
            if FINALIZER in finalizers:
                patch = {"metadata": {"finalizers": [f for f in finalizers if f != FINALIZER] or None}}
                await api.patch(CHALLENGES, ch["metadata"]["name"], patch, name)
    await api.delete(NAMESPACES, name, missing_ok=True)


async def forget_claims(api: Kube, namespace: str) -> None:
    """Delete the DomainClaims a project namespace holds (cluster-scoped, so they outlive the namespace),
    as an operator removing a project would: later tests may use the same names."""
    with contextlib.suppress(Exception):
        for claim in await api.list(DOMAINCLAIMS):
            if claim.get("spec", {}).get("namespace") == namespace:
                await api.delete(DOMAINCLAIMS, claim["metadata"]["name"], missing_ok=True)


class NamespaceFactory(Protocol):
    """``await namespaces("prefix")`` -> a fresh namespace name, deleted after the test."""

    async def __call__(self, prefix: str = "t", labels: Mapping[str, str] | None = None) -> str: ...


_address_counters = {"cloud": itertools.count(1), "public": itertools.count(1)}
_address_prefix = {"cloud": "127.65", "public": "127.66"}


def next_address(network_type: str) -> str:
    """A fresh loopback address per project: 127.65.x.y for cloud projects, 127.66.x.y for public."""
    n = next(_address_counters[network_type])
    return f"{_address_prefix[network_type]}.{n // 250}.{n % 250 + 1}"


@dataclass(frozen=True)
class Project:
    """A kube-dc project as a test sees it."""

    org_namespace: str
    name: str
    namespace: str
    network_type: str
    address: str
    obj: Obj


class ProjectFactory(Protocol):
    """``await project("cloud")`` -> a Project with its namespace and EIP address."""

    async def __call__(
        self, network_type: str = "cloud", *, name: str | None = None, address: str | None = None
    ) -> Project: ...


# --- cert-manager ------------------------------------------------------------------------------------


@dataclass
class CertManager:
    """Handle on the cert-manager stand-in: create Challenges, Present once, or run solver loops."""

    api: Kube
    stack: contextlib.AsyncExitStack
    loops: list[SolverLoop] = field(default_factory=list)

    async def challenge(self, namespace: str, dns_name: str, **kwargs: Any) -> Obj:
        """Create a Challenge (options as ``testbed.certmanager.create_challenge``)."""
        return await create_challenge(self.api, namespace, dns_name, **kwargs)

    async def present(self, ch: Obj) -> SolverObjects:
        """One Present (creates or reverts), without a loop."""
        return await present(self.api, ch)

    async def start(self, config: SolverConfig | None = None, namespaces: Sequence[str] | None = None) -> SolverLoop:
        """Run a solver loop in the background until ``stack`` closes."""
        loop = await self.stack.enter_async_context(SolverLoop(self.api, config, namespaces))
        self.loops.append(loop)
        return loop

    @property
    def errors(self) -> list[Exception]:
        """Unexpected failures in any loop."""
        return [err for loop in self.loops for err in loop.errors]


# --- the reconciler process --------------------------------------------------------------------------


class ReconcilerNotReady(AssertionError):
    """The reconciler exited or did not answer /readyz 200 in time; the message holds its log."""


class ReconcilerNotYetReady(Exception):
    """/readyz answered, but not 200 (yet): the answer is the message."""


@dataclass(frozen=True)
class Metrics:
    """Parsed /metrics samples."""

    samples: list[Sample]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        """Parse the Prometheus text format."""
        return cls([s for fam in text_string_to_metric_families(text) for s in fam.samples])

    def find(self, name: str, **labels: str) -> list[Sample]:
        """Samples with this exact sample name (e.g. ``x_total``) whose labels include ``labels``."""
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the single matching sample; ``None`` if there is none; error if ambiguous."""
        found = self.find(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{len(found)} samples match {name}{labels}: {found}")
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float:
        """Sum over all matching samples (0 when none)."""
        return sum(s.value for s in self.find(name, **labels))


@dataclass
class ReconcilerProcess:
    """``python -m reconciler run`` as a child process in its own session, with its log in a file."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    base_url: str
    process: anyio.abc.Process | None = None
    starts: int = 0

    async def start(self, wait_ready: bool = True) -> None:
        """Start (again) and, by default, wait for /readyz 200."""
        if self.alive:
            raise RuntimeError("reconciler already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start #{self.starts + 1}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = await anyio.open_process(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        if wait_ready:
            await self.wait_ready()

    async def wait_ready(self, within: float = READY_TIMEOUT) -> None:
        """Poll /readyz; raise ``ReconcilerNotReady`` with the log if it exits or is not ready in time."""
        async with httpx.AsyncClient(timeout=2) as http:

            async def ready() -> bool:
                if not self.alive:
                    raise ReconcilerNotReady(f"reconciler exited ({self.returncode}) before ready:\n{self.log()}")
                resp = await http.get(f"{self.base_url}/readyz")
                if resp.status_code != 200:
                    raise ReconcilerNotYetReady(f"{resp.status_code} {resp.text[:500]}")
                return True

            try:
                await polling.wait_for(
                    ready, within=within, what="/readyz 200", retry_on=(httpx.HTTPError, ReconcilerNotYetReady)
                )
            except polling.WaitTimeout as err:
                raise ReconcilerNotReady(f"reconciler not ready: {err}\n{self.log()}") from None

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        """Exit code once it has exited."""
        return None if self.process is None else self.process.returncode

    async def get(self, path: str) -> httpx.Response:
        """GET one of its HTTP endpoints (/metrics, /healthz, /readyz)."""
        async with httpx.AsyncClient(timeout=5) as http:
            return await http.get(f"{self.base_url}{path}")

    async def metrics(self) -> Metrics:
        """Scrape and parse /metrics."""
        resp = await self.get("/metrics")
        resp.raise_for_status()
        return Metrics.parse(resp.text)

    async def metrics_when(self, check: Callable[[Metrics], bool], what: str, within: float = 20.0) -> Metrics:
        """Scrape until ``check`` holds: the reconciler counts from its watch, a moment after the API."""

        async def probe() -> Metrics | None:
            m = await self.metrics()
            return m if check(m) else None

        return await wait_for(probe, within=within, what=what)

    async def _stop(self, sig: signal.Signals, grace: float) -> bool:
        if self.process is None:
            return True
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)  # the whole group: nothing it spawned survives
        with anyio.move_on_after(grace):
            await self.process.wait()
        return self.process.returncode is not None

    async def kill(self) -> None:
        """SIGKILL: a crash, no graceful shutdown."""
        await self._stop(signal.SIGKILL, 10)

    async def terminate(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if not await self._stop(signal.SIGTERM, grace):
            await self.kill()
        return self.returncode

    async def restart(self, *, crash: bool = False, wait_ready: bool = True) -> None:
        """Stop (SIGKILL with ``crash``, else SIGTERM) and start again with the same arguments."""
        if crash:
            await self.kill()
        else:
            await self.terminate()
        await self.start(wait_ready)

    def log(self) -> str:
        """Everything it logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"


Identity = Literal["serviceaccount", "admin"]


class StartReconciler(Protocol):
    """``await reconciler(identity=..., args=[...], env={...})`` -> a ready ``ReconcilerProcess``."""

    async def __call__(
        self,
        *,
        identity: Identity = "serviceaccount",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
    ) -> ReconcilerProcess: ...


async def apply_rbac(api: Kube, manifest: Path = RBAC_MANIFEST) -> bool:
    """Apply the reconciler's RBAC manifest (and the namespaces it needs) as admin; False if absent."""
    if not await anyio.Path(manifest).exists():
        return False
    await ensure_namespace(api, RECONCILER_SA_NAMESPACE)
    for doc in load_manifests(manifest):
        resource = BY_KIND.get(doc.get("kind", ""))
        if resource is None or doc.get("apiVersion") != resource.api_version:
            raise ValueError(f"{manifest}: cannot apply {doc.get('apiVersion')} {doc.get('kind')}")
        namespace = doc["metadata"].get("namespace")
        if resource.namespaced and namespace:
            await ensure_namespace(api, namespace)
        await api.apply(resource, doc)
    return True


async def start_reconciler(
    plane: ControlPlane,
    api: Kube,
    log_path: Path,
    *,
    identity: Identity = "serviceaccount",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
) -> ReconcilerProcess:
    """Start ``python -m reconciler run`` against ``plane`` as the ServiceAccount (RBAC applied first) or
    as admin, serving metrics on a free loopback port."""
    if identity == "serviceaccount":
        if not await apply_rbac(api):
            warnings.warn(f"{RBAC_MANIFEST} missing: the reconciler runs without RBAC", stacklevel=2)
        kubeconfig = plane.reconciler_kubeconfig
    else:
        kubeconfig = plane.admin_kubeconfig
    (port,) = free_loopback_ports(1)
    argv = [
        sys.executable,
        "-m",
        "reconciler",
        "run",
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-bind-address",
        f"127.0.0.1:{port}",
        *args,
    ]
    child_env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    child_env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)})
    child_env.update(env or {})
    proc = ReconcilerProcess(argv, child_env, log_path, f"http://127.0.0.1:{port}")
    await proc.start(wait_ready)
    return proc
