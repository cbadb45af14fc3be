"""The whole full stack with the real cert-manager, for commands that run outside pytest
(``python -m testbed.certmanager_smoke``, ``python -m bench.renewal_storm``), and the project and issuer
set-up the full-stack tests share with them.

Order matters: the control plane (CRDs) first, then Envoy Gateway (Gateway ``eg``), challtestsrv + Pebble,
then cert-manager (it needs the Gateway API served at start and challtestsrv's DNS for its self-check),
then the in-process stand-ins (kube-dc, solver servers) and the ``Timeline``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from testbed.binaries import find_binaries, find_fullstack_binaries
from testbed.certificates import acme_issuer, is_ready, issuer_resource
from testbed.certmanager_controller import CertManagerController, find_cert_manager
from testbed.controlplane import ControlPlane
from testbed.gateway import EnvoyGateway
from testbed.harness import Project, next_address
from testbed.kube import Kube, Obj, wait_for
from testbed.kubedc import KubeDC, create_project
from testbed.netns import in_private_netns, reexec_in_private_netns
from testbed.paths import REPO_ROOT
from testbed.pebble import ChallTestSrv, Pebble, acme_stack
from testbed.solvers import FAST_POD_START, SolverServers
from testbed.timeline import Timeline

# Envoy Gateway's CRDs the full stack needs: its Backend, EnvoyProxy (host mode) and BackendTrafficPolicy
# (the baseline's Service routing).
EG_CRDS = ("envoyproxies", "backends", "backendtrafficpolicies")


def build_then_enter_netns() -> None:
    """Outside the private network namespace: build (or reuse) every binary, which needs the registries,
    then re-execute this command inside a fresh namespace. Inside one: nothing to do."""
    if in_private_netns():
        return
    t0 = time.monotonic()
    find_binaries()
    find_fullstack_binaries()
    find_cert_manager()
    print(f"binaries ready in {time.monotonic() - t0:.1f}s; entering a private network namespace", flush=True)
    os.environ.setdefault("PYTHONPATH", str(REPO_ROOT))
    reexec_in_private_netns()


async def create_issuer(api: Kube, issuer: Obj, within: float = 60.0) -> Obj:
    """Create an Issuer or ClusterIssuer and wait until cert-manager registered its ACME account."""
    res, meta = issuer_resource(issuer), issuer["metadata"]
    await api.create(res, issuer, meta.get("namespace"))

    async def ready() -> Obj | None:
        obj = await api.get(res, meta["name"], meta.get("namespace"))
        return obj if is_ready(obj) else None

    return await wait_for(ready, within=within, what=f"{issuer['kind']} {meta['name']} Ready")


async def make_project(api: Kube, kubedc: KubeDC, network_type: str = "cloud", org: str | None = None) -> Project:
    """Org namespace + Project + project namespace, with a fresh address registered with kube-dc."""
    org = org or f"org-{secrets.token_hex(4)}"
    name = f"p{secrets.token_hex(3)}"
    obj = await create_project(api, org, name, network_type)
    namespace = obj["status"]["namespace"]
    address = next_address(network_type)
    kubedc.assign(namespace, address)
    return Project(org, name, namespace, network_type, address, obj)


@dataclass
class FullStack:
    """The running components."""

    plane: ControlPlane
    gateway: EnvoyGateway
    dns: ChallTestSrv
    pebble: Pebble
    cm: CertManagerController
    api: Kube
    kubedc: KubeDC
    solvers: SolverServers
    timeline: Timeline

    async def project(self, network_type: str = "cloud") -> Project:
        """A project; ``"baseline"`` is a public project whose solver Services the gateway reaches
        (``SolverServers.reach_services``: no reconciler involved)."""
        if network_type == "baseline":
            p = await make_project(self.api, self.kubedc, "public")
            await self.solvers.reach_services(p.namespace)
            self.timeline.reachable.add(p.namespace)
            return p
        return await make_project(self.api, self.kubedc, network_type)

    def issuer_body(self, namespace: str | None, **options: Any) -> Obj:
        """An ACME Issuer (ClusterIssuer when ``namespace`` is None) on Pebble, solving on Gateway ``eg``."""
        return acme_issuer(
            self.pebble.directory_url,
            self.pebble.ca_file.read_bytes(),
            self.gateway.parent_ref,
            namespace=namespace,
            **options,
        )


@contextlib.asynccontextmanager
async def full_stack(
    *, keep: bool = False, pod_start: float = FAST_POD_START, **cert_manager: Any
) -> AsyncIterator[FullStack]:
    """Start everything (inside a private network namespace); ``pod_start`` is how long a solver Pod takes
    to serve (``SolverServers``), ``cert_manager`` are options of ``CertManagerController``."""
    with contextlib.ExitStack() as stack:
        plane = stack.enter_context(ControlPlane(keep_data_dir=keep))
        eg = stack.enter_context(EnvoyGateway(plane.admin_kubeconfig, eg_crd_plurals=EG_CRDS, keep_data_dir=keep))
        dns, pebble = stack.enter_context(acme_stack(eg.address, eg.listener_port, eg.binaries))
        cm = stack.enter_context(
            CertManagerController(
                plane.admin_kubeconfig, solver_nameservers=[dns.dns_address], keep_data_dir=keep, **cert_manager
            )
        )
        print(f"control plane: {plane.timings}\nenvoy gateway: {eg.timings}\ncert-manager: {cm.timings}", flush=True)
        async with (
            Kube.from_kubeconfig(plane.admin_kubeconfig) as api,
            KubeDC(api) as kubedc,
            SolverServers(api, pod_start) as solvers,
            Timeline(api) as timeline,
        ):
            yield FullStack(plane, eg, dns, pebble, cm, api, kubedc, solvers, timeline)
