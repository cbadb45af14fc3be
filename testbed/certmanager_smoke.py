"""``python -m testbed.certmanager_smoke``: the real cert-manager issues a certificate through the shared gateway.

Builds (or reuses) the control plane, the full-stack binaries and cert-manager, re-executes itself in a
private network namespace, then starts the control plane, Envoy Gateway + Envoy (Gateway ``eg``),
challtestsrv + Pebble, the kube-dc stand-in, the solver servers and the reconciler (ServiceAccount,
shadow mode), and the real cert-manager controllers (``testbed.certmanager_controller``). For each run it
creates a cloud project with an ACME Issuer (Pebble's directory, Pebble's CA in ``caBundle``, a
``gatewayHTTPRoute`` solver on Gateway ``eg``) and a Certificate, waits for it to be Ready, checks the
Secret's chain against Pebble's root, and reports time to Ready, cert-manager's self-check rounds and GETs
(from its log), its route reverts, and which requests reached the solver through Envoy.

Exit status 0 when every run issued. ``--retry-period`` (default: upstream's 10 s) sets cert-manager's
``--dns01-check-retry-period``; ``--keep`` keeps every component's temp dir (logs).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from cryptography import x509

from testbed.certmanager_controller import (
    MSG_GET_FAILED,
    MSG_GET_OK,
    MSG_ROUND,
    MSG_ROUTE_REVERT,
    UPSTREAM_CHECK_RETRY_PERIOD,
    CertManagerController,
    find_cert_manager,
    parse_log,
)
from testbed.controlplane import REPO_ROOT, ControlPlane, find_binaries
from testbed.gateway import EnvoyGateway, find_fullstack_binaries, in_private_netns, reexec_in_private_netns
from testbed.harness import next_address, start_reconciler
from testbed.kube import CERTIFICATES, CHALLENGES, HTTPROUTES, ISSUERS, Kube, Obj, wait_for
from testbed.kubedc import KubeDC, create_project
from testbed.pebble import Pebble, acme_stack
from testbed.solvers import SolverServers

READY_WITHIN = 180.0  # seconds; a lost self-check costs one retry period, several would be a finding


def issuer(namespace: str, pebble: Pebble, parent_ref: dict[str, Any]) -> Obj:
    """An ACME Issuer on Pebble whose HTTP-01 solver attaches cert-manager's routes to the shared Gateway."""
    return {
        "apiVersion": ISSUERS.api_version,
        "kind": "Issuer",
        "metadata": {"name": "pebble", "namespace": namespace},
        "spec": {
            "acme": {
                "server": pebble.directory_url,
                "caBundle": base64.b64encode(pebble.ca_file.read_bytes()).decode(),
                "email": "smoke@example.test",
                "privateKeySecretRef": {"name": "pebble-account"},
                "solvers": [{"http01": {"gatewayHTTPRoute": {"parentRefs": [parent_ref]}}}],
            }
        },
    }


def certificate(namespace: str, dns_names: list[str]) -> Obj:
    """A Certificate for ``dns_names`` from the ``pebble`` Issuer."""
    return {
        "apiVersion": CERTIFICATES.api_version,
        "kind": "Certificate",
        "metadata": {"name": "app", "namespace": namespace},
        "spec": {
            "secretName": "app-tls",
            "dnsNames": dns_names,
            "issuerRef": {"name": "pebble", "kind": "Issuer"},
            "privateKey": {"algorithm": "ECDSA", "size": 256},
        },
    }


@dataclass
class World:
    """The shared components one run uses."""

    plane: ControlPlane
    api: Kube
    kubedc: KubeDC
    solvers: SolverServers
    cm: CertManagerController
    pebble: Pebble
    parent_ref: dict[str, Any]
    log_dir: Path


def ready(obj: Obj | None) -> bool:
    """The object's Ready condition is True."""
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def klog_offset(clock: str, wall_zero: dt.datetime) -> float:
    """Seconds from ``wall_zero`` (local time) to a klog ``HH:MM:SS.micro`` of the same day."""
    parsed = dt.datetime.strptime(clock, "%H:%M:%S.%f").time()
    return (dt.datetime.combine(wall_zero.date(), parsed) - wall_zero).total_seconds()


async def wait_ready(api: Kube, namespace: str, t0: float) -> dict[str, float]:
    """Poll (50 ms) until the Certificate is Ready; returns when each step first appeared, from ``t0``."""
    seen: dict[str, float] = {}

    async def progress() -> Obj | None:
        now = time.monotonic() - t0
        if "challenge" not in seen and await api.list(CHALLENGES, namespace):
            seen["challenge"] = now
        routes = [r["metadata"]["name"] for r in await api.list(HTTPROUTES, namespace)]
        if "cert-manager route" not in seen and any(r.startswith("cm-acme-http-solver-") for r in routes):
            seen["cert-manager route"] = now
        if "companion route" not in seen and any(r.endswith("-acme") for r in routes):
            seen["companion route"] = now
        cert = await api.get(CERTIFICATES, "app", namespace)
        return cert if ready(cert) else None

    await wait_for(progress, within=READY_WITHIN, interval=0.05, what="Certificate Ready")
    return {k: round(v, 2) for k, v in seen.items()}


async def verify_secret(api: Kube, pebble: Pebble, namespace: str, dns_name: str) -> str:
    """The Secret's chain verifies to Pebble's root and names exactly ``dns_name``."""
    secret = await api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/app-tls")
    chain = x509.load_pem_x509_certificates(base64.b64decode(secret["data"]["tls.crt"]))
    root = x509.load_pem_x509_certificate((await anyio.to_thread.run_sync(pebble.roots_pem)).encode())
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        child.verify_directly_issued_by(parent)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if san.get_values_for_type(x509.DNSName) != [dns_name]:
        raise AssertionError(f"leaf SANs {san}")
    return f"{len(chain)} certificates, verified to Pebble's root"


def self_check_report(cm: CertManagerController, namespace: str, wall_zero: dt.datetime) -> dict[str, Any]:
    """cert-manager's own account (its log) of the self-checks and route reverts in ``namespace``."""
    timeline: list[str] = []
    counts: Counter[str] = Counter()
    for line in parse_log(cm.log()):
        if line.fields.get("resource_namespace") != namespace:
            continue
        at = klog_offset(line.time, wall_zero)
        if line.message == MSG_ROUND:
            counts["rounds"] += 1
            timeline.append(f"{at:6.2f}s round {counts['rounds']}")
        elif line.message == MSG_GET_OK:
            counts["gets_passed"] += 1
        elif line.message in MSG_GET_FAILED:
            counts["gets_failed"] += 1
            timeline.append(f"{at:6.2f}s GET failed: {line.message} {line.fields.get('code', '')}".rstrip())
        elif line.message == MSG_ROUTE_REVERT:
            counts["route_reverts"] += 1
            timeline.append(f"{at:6.2f}s route reverted")
    return {
        "self_check_rounds": counts["rounds"],
        "self_check_gets_passed": counts["gets_passed"],
        "self_check_gets_failed": counts["gets_failed"],
        "route_reverts": counts["route_reverts"],
        "timeline": timeline,
    }


async def one_run(n: int, world: World) -> dict[str, Any]:
    """One cloud project, Issuer, Certificate; returns the measurements."""
    api = world.api
    project = await create_project(api, f"org-{secrets.token_hex(3)}", f"p{n}", "cloud")
    namespace = project["status"]["namespace"]
    address = next_address("cloud")
    world.kubedc.assign(namespace, address)
    dns_name = f"app.{namespace}.example.test"
    rec = await start_reconciler(
        world.plane, api, world.log_dir / f"reconciler-{n}.log", args=["--namespaces", namespace]
    )
    result: dict[str, Any] = {"namespace": namespace, "address": address, "dns_name": dns_name}
    try:
        t_issuer = time.monotonic()
        await api.create(ISSUERS, issuer(namespace, world.pebble, world.parent_ref), namespace)
        await wait_for(lambda: _get(api, ISSUERS, "pebble", namespace, ready), within=60, what="Issuer Ready")
        result["issuer_ready_s"] = round(time.monotonic() - t_issuer, 2)

        hits_before = len(world.solvers.hits)
        wall_zero = dt.datetime.now()
        t0 = time.monotonic()
        await api.create(CERTIFICATES, certificate(namespace, [dns_name]), namespace)
        try:
            seen = await wait_ready(api, namespace, t0)
        except TimeoutError:
            print(
                f"--- cert-manager log tail ---\n{world.cm.log_tail(80)}\n--- reconciler log ---\n{rec.log()[-4000:]}"
            )
            raise
        result["time_to_ready_s"] = round(time.monotonic() - t0, 2)
        result["first_seen_s"] = seen
        result["chain"] = await verify_secret(api, world.pebble, namespace, dns_name)
        result.update(self_check_report(world.cm, namespace, wall_zero))
        result["solver_hits"] = dict(
            Counter(
                f"{h.status} via {'envoy' if h.via_envoy else 'direct'} ua={h.headers.get('user-agent', '')[:40]}"
                for h in world.solvers.hits[hits_before:]
            )
        )
        metrics = await rec.metrics()
        result["reconciler_wiring_s"] = metrics.total("acme_gateway_route_wiring_seconds_sum")
        result["reconciler_outcomes"] = {
            f"{s.labels['outcome']}/{s.labels['state']}": s.value
            for s in metrics.find("acme_gateway_challenge_outcomes_total")
        }
    finally:
        await rec.terminate()
    return result


async def _get(api: Kube, res: Any, name: str, namespace: str, check: Any) -> Obj | None:
    obj = await api.get_or_none(res, name, namespace)
    return obj if check(obj) else None


async def run(runs: int, retry_period: float, keep: bool) -> int:
    """Everything, inside the network namespace."""
    results: list[dict[str, Any]] = []
    failures = 0
    with contextlib.ExitStack() as stack:
        log_dir = Path(tempfile.mkdtemp(prefix="testbed-cm-smoke-"))
        plane = stack.enter_context(ControlPlane(keep_data_dir=keep))
        eg = stack.enter_context(EnvoyGateway(plane.admin_kubeconfig, keep_data_dir=keep))
        dns, pebble = stack.enter_context(acme_stack(eg.address, eg.listener_port, eg.binaries))
        cm = stack.enter_context(
            CertManagerController(
                plane.admin_kubeconfig,
                solver_nameservers=[dns.dns_address],
                check_retry_period=retry_period,
                keep_data_dir=keep,
            )
        )
        print(f"control plane: {plane.timings}\nenvoy gateway: {eg.timings}", flush=True)
        print(f"cert-manager ready in {cm.ready_seconds:.2f}s: {' '.join(cm.argv()[1:])}", flush=True)
        async with (
            Kube.from_kubeconfig(plane.admin_kubeconfig) as api,
            KubeDC(api) as kubedc,
            SolverServers(api) as solvers,
        ):
            world = World(plane, api, kubedc, solvers, cm, pebble, eg.parent_ref, log_dir)
            for n in range(1, runs + 1):
                try:
                    result = await one_run(n, world)
                except Exception as err:  # reported; the next run still goes
                    failures += 1
                    print(f"FAIL run {n}: {err!r}", flush=True)
                    continue
                results.append(result)
                print(f"run {n}: {json.dumps(result, indent=2)}", flush=True)
        errors = [ln for ln in cm.errors() if "ListenerSet" in ln or "could not find the requested resource" in ln]
        acme_requests = sum(
            float(line.rsplit(" ", 1)[1])
            for line in cm.metrics().splitlines()
            if line.startswith("certmanager_http_acme_client_request_count{")
        )
        print(f"cert-manager ACME requests to Pebble (all runs): {acme_requests:g}")
        print(f"cert-manager error lines: {len(cm.errors())} (missing-API lines: {len(errors)})")
        for line in cm.errors()[:20]:
            print(f"  {line[:300]}")
        if keep:  # copied: the control plane's sweeper removes testbed-* dirs of dead processes, kept or not
            shutil.copy(cm.log_path, log_dir / "cert-manager.log")
            print(f"logs kept in {log_dir} (cert-manager, reconcilers)")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    ttr = [r["time_to_ready_s"] for r in results]
    print(f"{'FAILED' if failures else 'PASSED'}: {len(results)}/{runs} issued; time to Ready {ttr}")
    return 1 if failures or not results else 0


def main(argv: list[str] | None = None) -> int:
    """Build outside the namespace (needs the registries), then run everything inside one."""
    parser = argparse.ArgumentParser(prog="python -m testbed.certmanager_smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="certificates to issue, one project each, in turn")
    parser.add_argument("--retry-period", type=float, default=UPSTREAM_CHECK_RETRY_PERIOD, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep every component's temp dir (logs)")
    args = parser.parse_args(argv)
    if not in_private_netns():
        t0 = time.monotonic()
        find_binaries()
        find_fullstack_binaries()
        find_cert_manager()
        print(f"binaries ready in {time.monotonic() - t0:.1f}s; entering a private network namespace", flush=True)
        os.environ.setdefault("PYTHONPATH", str(REPO_ROOT))
        reexec_in_private_netns()
    return anyio.run(run, args.runs, args.retry_period, args.keep)


if __name__ == "__main__":
    sys.exit(main())
