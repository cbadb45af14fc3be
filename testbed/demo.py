"""`python -m testbed demo`: the README's run command when no cluster is given.

Starts the local control plane, the kube-dc and cert-manager stand-ins and the reconciler (as its
ServiceAccount, with `manifests/rbac.yaml`), then creates a cloud project and one ACME challenge and shows
each step of the wiring as it happens, with the reconciler's metrics URL.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import anyio

from testbed.certmanager import SolverConfig, SolverLoop, create_challenge
from testbed.controlplane import ControlPlane
from testbed.gatewaycheck import RoutedToBackend, backend_refs, ingress_ip, solver_route, solver_service
from testbed.harness import start_reconciler
from testbed.kube import BACKENDS, CHALLENGES, HTTPROUTES, Kube, Obj, wait_for
from testbed.kubedc import KubeDC, create_project

ORG, PROJECT, ADDRESS, DOMAIN = "shalb", "demo", "127.65.0.10", "app.shalb-demo.example.test"


def say(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:6.2f}s] {text}", flush=True)


async def demo(keep_running: bool) -> int:
    """Run the walk-through; with ``keep_running`` leave everything up until Ctrl-C."""
    with ControlPlane() as plane, tempfile.TemporaryDirectory(prefix="reconciler-demo-") as tmp:
        print(f"control plane: {plane.server_url} ({plane.timings})")
        print(f"admin kubeconfig: {plane.admin_kubeconfig}")
        async with Kube.from_kubeconfig(plane.admin_kubeconfig) as api, KubeDC(api) as kubedc:
            project = await create_project(api, ORG, PROJECT, "cloud")
            namespace = project["status"]["namespace"]
            kubedc.assign(namespace, ADDRESS)
            print(f"cloud project {ORG}/{PROJECT} -> namespace {namespace}, default-gw EIP {ADDRESS}")

            rec = await start_reconciler(plane, api, Path(tmp) / "reconciler.log")
            print(f"reconciler running; metrics: {rec.base_url}/metrics  log: {rec.log_path}")
            config = SolverConfig(self_check=RoutedToBackend(api), pass_interval=0.5, retry_period=2.0)
            async with SolverLoop(api, config, namespaces=[namespace]):
                started = time.monotonic()
                ch = await create_challenge(api, namespace, DOMAIN)
                say(started, f"cert-manager (stand-in) created Challenge {ch['metadata']['name']} for {DOMAIN}")
                await _show_wiring(api, ch, started)
                await wait_for(lambda: _state(api, ch, "valid"), within=60, what="challenge valid")
                say(started, "challenge valid: the self-check reached the solver through the Backend")
                metrics = await rec.metrics()
                for name in ("acme_gateway_challenge_outcomes_total", "acme_gateway_writes_total"):
                    for sample in metrics.find(name):
                        print(f"    {name}{sample.labels} {sample.value:g}")
                if keep_running:
                    print(f"running; metrics at {rec.base_url}/metrics; Ctrl-C to stop", flush=True)
                    with contextlib.suppress(KeyboardInterrupt, anyio.get_cancelled_exc_class()):
                        await anyio.sleep_forever()
            await rec.terminate()
    return 0


async def _state(api: Kube, ch: Obj, state: str) -> bool:
    fresh = await api.get(CHALLENGES, ch["metadata"]["name"], ch["metadata"]["namespace"])
    return bool(fresh.get("status", {}).get("state") == state)


async def _show_wiring(api: Kube, ch: Obj, started: float) -> None:
    ns = ch["metadata"]["namespace"]

    async def lb() -> Obj | None:
        svc = await solver_service(api, ch)
        return svc if svc and svc["spec"]["type"] == "LoadBalancer" else None

    svc = await wait_for(lb, within=30, what="solver Service patched")
    say(
        started,
        f"reconciler: Service {svc['metadata']['name']} -> LoadBalancer, annotations "
        f"{ {k: v for k, v in svc['metadata']['annotations'].items() if 'kube-dc' in k} }",
    )

    async def addressed() -> Obj | None:
        fresh = await solver_service(api, ch)
        return fresh if fresh and ingress_ip(fresh) else None

    svc = await wait_for(addressed, within=30, what="load-balancer address")
    say(started, f"kube-dc (stand-in): address {ingress_ip(svc)} on EIP default-gw")
    name = f"{svc['metadata']['name']}-backend"
    backend = await wait_for(lambda: api.get_or_none(BACKENDS, name, ns), within=30, what="Backend")
    say(started, f"reconciler: Backend {name} -> {backend['spec']['endpoints']}")

    companion = f"{svc['metadata']['name']}-acme"
    route = await wait_for(lambda: api.get_or_none(HTTPROUTES, companion, ns), within=30, what="companion route")
    match = route["spec"]["rules"][0]["matches"][0]
    say(
        started,
        f"reconciler: HTTPRoute {companion} ({match['path']['value']}, method {match['method']}) "
        f"-> {backend_refs(route)}",
    )
    cert_managers = await solver_route(api, ch)
    assert cert_managers is not None
    say(
        started,
        f"cert-manager's HTTPRoute {cert_managers['metadata']['name']} untouched -> {backend_refs(cert_managers)}",
    )
