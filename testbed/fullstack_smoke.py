"""``python -m testbed.fullstack_smoke``: prove the real data plane and ACME server work end to end.

Builds (or reuses) the control plane and the full-stack binaries, re-executes itself in a private network
namespace (only ``lo``), then with a real kube-apiserver, Envoy Gateway (host mode) + Envoy, Pebble and
challtestsrv checks:

1. an HTTPRoute to an Envoy Gateway ``Backend`` (IP endpoint 127.65.0.9:8089) answers through Envoy;
2. an HTTPRoute to a Service without endpoints answers 503;
3. for one hostname and one Exact path, the route with a ``method: GET`` match wins over the one without,
   whichever was created first (a POST still goes to the one without);
4. Pebble validates a real HTTP-01 challenge through Envoy and issues a certificate (ACME client: ``acme``).

Exit status 0 when every check passed. ``--keep`` keeps the temp dirs (logs) of every component.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from cryptography import x509

from testbed.binaries import find_binaries, find_fullstack_binaries
from testbed.controlplane import ControlPlane
from testbed.errors import FullstackError
from testbed.gateway import DEFAULT_LISTENER_PORT, EnvoyGateway, backend, backend_ref, http_route
from testbed.httpservers import BackendServer
from testbed.kube import BACKENDS, HTTPROUTES, NAMESPACES, SERVICES
from testbed.netns import in_private_netns, reexec_in_private_netns
from testbed.paths import REPO_ROOT
from testbed.pebble import AcmeAccount, acme_stack
from testbed.synckube import SyncKube, condition

NAMESPACE = "smoke"
SOLVER_PORT = 8089
TOKEN_PATH = "/.well-known/acme-challenge/smoke-token"


class Report:
    """Collects (check, outcome, seconds) lines and prints them as they complete."""

    def __init__(self) -> None:
        self.failures = 0
        self.lines: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Time one check; record failure instead of stopping the run."""
        start = time.monotonic()
        try:
            yield
        except Exception as err:  # reported, then the next check runs
            self.failures += 1
            self._line(f"FAIL {name} ({time.monotonic() - start:.1f}s): {err}")
        else:
            self._line(f"ok   {name} ({time.monotonic() - start:.1f}s)")

    def note(self, text: str) -> None:
        """An informational line."""
        self._line(f"     {text}")

    def _line(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)


def _status(code: int) -> Callable[[httpx.Response], bool]:
    return lambda resp: resp.status_code == code


def _body(code: int, text: str) -> Callable[[httpx.Response], bool]:
    return lambda resp: resp.status_code == code and resp.text == text


def check_backend_route(kube: SyncKube, eg: EnvoyGateway, app: BackendServer, report: Report) -> None:
    """HTTPRoute x.example.test -> Backend -> the app server, through Envoy."""
    kube.apply(BACKENDS, backend("app", NAMESPACE, app.address, app.port))
    kube.apply(
        HTTPROUTES, http_route("app", NAMESPACE, "x.example.test", [backend_ref("app", app.port)], eg.parent_ref)
    )
    start = time.monotonic()
    resp = eg.wait_for_response("x.example.test", "/hello", check=_body(200, app.default_body.decode()))
    report.note(f"route programmed after {time.monotonic() - start:.2f}s; {resp.status_code} {resp.text!r}")
    seen = app.requests[-1]
    if "x-request-id" not in seen.headers or seen.headers.get("host") != "x.example.test":
        raise FullstackError(f"request did not come through Envoy: {seen}")


def check_service_without_endpoints(kube: SyncKube, eg: EnvoyGateway, report: Report) -> None:
    """HTTPRoute y.example.test -> Service with no endpoints: 503."""
    kube.apply(
        SERVICES,
        {
            "kind": "Service",
            "metadata": {"name": "nobody", "namespace": NAMESPACE},
            "spec": {"selector": {"app": "nobody"}, "ports": [{"name": "http", "port": SOLVER_PORT}]},
        },
    )
    ref = {"group": "", "kind": "Service", "name": "nobody", "port": SOLVER_PORT}
    kube.apply(HTTPROUTES, http_route("nobody", NAMESPACE, "y.example.test", [ref], eg.parent_ref))
    resp = eg.wait_for_response("y.example.test", "/", check=_status(503))
    route = kube.get(HTTPROUTES, "nobody", NAMESPACE)
    resolved = condition(route, "ResolvedRefs", parents=True) or {}
    report.note(f"503 body {resp.text!r}; route ResolvedRefs={resolved.get('status')} ({resolved.get('reason')})")


def check_method_precedence(
    kube: SyncKube, eg: EnvoyGateway, plain: BackendServer, with_method: BackendServer, report: Report
) -> None:
    """Same hostname + Exact path: the route with ``method: GET`` wins for GET, in both creation orders."""
    for b in (plain, with_method):
        kube.apply(BACKENDS, backend(b.default_body.decode(), NAMESPACE, b.address, b.port))

    def route(host: str, suffix: str, to: BackendServer, method: str | None = None) -> dict[str, Any]:
        ref = backend_ref(to.default_body.decode(), to.port)
        name = f"{host.split('.', maxsplit=1)[0]}-{suffix}"
        return http_route(name, NAMESPACE, host, [ref], eg.parent_ref, path=("Exact", TOKEN_PATH), method=method)

    for host, method_first in (("p1.example.test", False), ("p2.example.test", True)):
        plain_route, method_route = route(host, "plain", plain), route(host, "get", with_method, "GET")
        first, second = (method_route, plain_route) if method_first else (plain_route, method_route)
        kube.apply(HTTPROUTES, first)
        time.sleep(1.1)  # creationTimestamp has one-second resolution
        kube.apply(HTTPROUTES, second)
        # Wait until both routes are in Envoy (POST only matches the plain one), then compare.
        eg.wait_for_response(host, TOKEN_PATH, method="POST", check=_body(200, "plain"))
        get = eg.wait_for_response(host, TOKEN_PATH, check=lambda r: r.status_code == 200)
        order = "method route older" if method_first else "method route newer"
        report.note(f"{host} ({order}): GET -> {get.text!r}, POST -> 'plain'")
        if get.text != "with-method":
            raise FullstackError(f"{host}: GET went to {get.text!r}, expected the method-matching route")


def check_acme(eg: EnvoyGateway, app: BackendServer, report: Report) -> None:
    """Pebble validates HTTP-01 for x.example.test through Envoy (route -> Backend -> app) and issues."""
    with acme_stack(eg.address, eg.listener_port, eg.binaries) as (_dns, pebble):
        start = time.monotonic()
        account = AcmeAccount(pebble)
        issued = account.issue(["x.example.test"], app.set_body)
        report.note(f"certificate issued {time.monotonic() - start:.2f}s after account creation")
        if issued.dns_names != ["x.example.test"]:
            raise FullstackError(f"unexpected SANs {issued.dns_names}")
        token_path = issued.challenges[0][0]
        fetches = [r for r in app.requests if r.path == token_path]
        if not fetches or "x-request-id" not in fetches[0].headers:
            raise FullstackError(f"Pebble's validation request did not reach the backend through Envoy: {fetches}")
        report.note(
            f"validation requests through Envoy: {len(fetches)}, user-agent {fetches[0].headers.get('user-agent')!r}"
        )
        chain = issued.certificates
        root = x509.load_pem_x509_certificate(pebble.roots_pem().encode())
        chain[0].verify_directly_issued_by(chain[1])
        chain[-1].verify_directly_issued_by(root)
        report.note(
            f"chain: {' <- '.join(c.subject.rfc4514_string() for c in chain)} <- {root.subject.rfc4514_string()}"
        )


def run(listener_port: int, keep: bool) -> int:
    """All checks, inside the network namespace."""
    report = Report()
    timings: dict[str, Any] = {}
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        plane = stack.enter_context(ControlPlane(keep_data_dir=keep))
        timings["control plane"] = str(plane.timings)
        eg = stack.enter_context(EnvoyGateway(plane.admin_kubeconfig, listener_port=listener_port, keep_data_dir=keep))
        timings["envoy gateway"] = str(eg.timings)
        print(f"control plane: {timings['control plane']}\nenvoy gateway: {timings['envoy gateway']}", flush=True)
        kube = stack.enter_context(SyncKube.from_kubeconfig(plane.admin_kubeconfig))
        app = stack.enter_context(BackendServer("127.65.0.9", SOLVER_PORT))
        plain = stack.enter_context(BackendServer("127.65.0.10", SOLVER_PORT, default_body="plain"))
        with_method = stack.enter_context(BackendServer("127.65.0.11", SOLVER_PORT, default_body="with-method"))
        kube.apply(NAMESPACES, {"kind": "Namespace", "metadata": {"name": NAMESPACE}})
        try:
            with report.check("HTTPRoute -> Backend(127.65.0.9) answers through Envoy"):
                check_backend_route(kube, eg, app, report)
            with report.check("HTTPRoute -> Service without endpoints answers 503"):
                check_service_without_endpoints(kube, eg, report)
            with report.check("Exact path + method: GET wins over Exact path alone"):
                check_method_precedence(kube, eg, plain, with_method, report)
            with report.check("Pebble validates HTTP-01 through Envoy and issues a certificate"):
                check_acme(eg, app, report)
        finally:
            if report.failures:
                print("--- envoy-gateway log tail ---\n" + eg.log_tail(60), flush=True)
    print(f"{'FAILED' if report.failures else 'PASSED'}: {report.failures} failure(s), {time.monotonic() - t0:.1f}s")
    return 1 if report.failures else 0


def main(argv: list[str] | None = None) -> int:
    """Build outside the namespace (needs the registries), then run everything inside one."""
    parser = argparse.ArgumentParser(prog="python -m testbed.fullstack_smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--listener-port", type=int, default=DEFAULT_LISTENER_PORT)
    parser.add_argument("--keep", action="store_true", help="keep every component's temp dir (logs)")
    args = parser.parse_args(argv)
    if not in_private_netns():
        t0 = time.monotonic()
        find_binaries()
        find_fullstack_binaries()
        print(f"binaries ready in {time.monotonic() - t0:.1f}s; entering a private network namespace", flush=True)
        os.environ.setdefault("PYTHONPATH", str(REPO_ROOT))
        reexec_in_private_netns()
    return run(args.listener_port, args.keep)


if __name__ == "__main__":
    sys.exit(main())
