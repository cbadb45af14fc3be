"""A real Envoy Gateway (v1.9, host mode) and Envoy (1.40) against the test bed's API server.

Envoy Gateway runs as a host process with ``provider.type: Custom``: its resource provider is Kubernetes (it
watches Gateway API and Envoy Gateway objects through the kubeconfig it is given and writes their status),
its infrastructure provider is Host (it runs Envoy as its own child process through the func-e library).
That combination binds fixed ports on every interface and reads its xDS certificates from ``/certs``, so it
runs in private network and mount namespaces (``testbed.netns``). docs/envoy-gateway.md has the host-mode
facts this module relies on: where func-e looks for Envoy, listener ports used as they are, loopback
Backend endpoints accepted only in host mode.

``python -m testbed.gateway netns -- CMD`` builds what the full stack needs, then runs CMD in a fresh
network namespace (``hack/test`` runs the full-stack suite that way).
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import httpx
import yaml

from testbed.binaries import FullstackBinaries, find_binaries, find_fullstack_binaries
from testbed.certmanager_controller import find_cert_manager
from testbed.errors import ComponentError, FullstackError
from testbed.kube import ENVOYPROXIES, GATEWAYCLASSES, GATEWAYS, NAMESPACES, SECRETS, Resource
from testbed.netns import netns_command, require_private_netns, with_certs_mounted
from testbed.polling import WaitTimeout, wait_until
from testbed.process import Component, Process
from testbed.synckube import SyncKube, condition, load_crds

ENVOY_VERSION: Final = "1.40.0"
CONTROLLER_NAME: Final = "gateway.envoyproxy.io/gatewayclass-controller"
EG_NAMESPACE: Final = "envoy-gateway-system"
GATEWAY_CLASS: Final = "eg"
GATEWAY_NAME: Final = "eg"
ENVOY_PROXY_NAME: Final = "eg-host"
# Where tests say the gateway is. Envoy listens on 0.0.0.0 inside the namespace, so every 127.0.0.0/8 address
# reaches it on the listener port; this one is outside the ranges the harness hands to projects (127.65/16,
# 127.66/16) and to Service ClusterIPs (127.96/16).
DEFAULT_GATEWAY_ADDRESS: Final = "127.64.0.1"
DEFAULT_LISTENER_PORT: Final = 80

# Fixed by Envoy Gateway v1.9.0 (constants in its source).
XDS_PORT: Final = 18000
ENVOY_READY_PORT: Final = 19003
EG_HEALTH_PORT: Final = 8081
EG_ADMIN_PORT: Final = 19000  # configurable; kept at its default


@dataclass(eq=False)
class EnvoyGateway(Component):
    """Envoy Gateway + Envoy in host mode, with GatewayClass ``eg`` and Gateway ``eg`` (one HTTP listener).

    Needs a private network namespace (``testbed.netns``). ``kubeconfig`` must be an admin one: Envoy
    Gateway reads cluster-wide and installs nothing itself, but CRDs and the Gateway objects are applied
    with it too. Use as a context manager, or ``start()``/``stop()``.
    """

    name: ClassVar[str] = "envoy-gateway"
    error: ClassVar[type[ComponentError]] = FullstackError
    stop_grace: ClassVar[float] = 10.0

    kubeconfig: Path
    listener_port: int = DEFAULT_LISTENER_PORT
    address: str = DEFAULT_GATEWAY_ADDRESS
    binaries: FullstackBinaries | None = None
    log_level: str = "info"
    # The EnvoyProxy CRD is needed (it pins the host Envoy version) and Backend; Envoy Gateway watches its
    # policy kinds only when their CRDs exist. None = all eight (about 3x slower to install: ~2.5 MB of schema).
    eg_crd_plurals: Sequence[str] | None = ("envoyproxies", "backends")
    ready_timeout: float = 120.0

    def _start(self) -> None:
        """Install Envoy Gateway's CRDs if missing, start it, create the Gateway and wait for Envoy."""
        require_private_netns("Envoy Gateway")
        with self.timings.phase("binaries"):
            binaries = self.binaries = self.binaries or find_fullstack_binaries()
        with SyncKube.from_kubeconfig(self.kubeconfig) as kube:
            with self.timings.phase("crds"):
                kube.install_crds(load_crds(binaries.eg_crds(self.eg_crd_plurals)), keep_existing=True)
            with self.timings.phase("certgen"):
                self._prepare()
            self.apply_secrets(kube)
            proc = self._start_process()
            with self.timings.phase("eg_ready"):
                self.wait_ready(proc, "Envoy Gateway's controller health probe", self._eg_ready, self.ready_timeout)
            self.apply_gateway(kube)
            with self.timings.phase("gateway_accepted"):
                self.wait_ready(proc, "Gateway eg Accepted", lambda: self._gateway_accepted(kube), self.ready_timeout)
            with self.timings.phase("envoy_ready"):
                self.wait_ready(proc, "Envoy ready and listening", self._envoy_ready, 60)

    @property
    def process(self) -> Process | None:
        """The ``envoy-gateway`` process; Envoy runs as its child, in its process group, and logs to its log."""
        return self.processes[0] if self.processes else None

    # set-up

    @property
    def config_home(self) -> Path:
        """The host provider's configHome: certificates under ``certs/``."""
        return self.data_dir / "config"

    @property
    def data_home(self) -> Path:
        """The host provider's dataHome: func-e's Envoy installs under ``envoy-versions/``."""
        return self.data_dir / "data"

    def config(self) -> dict[str, Any]:
        """The EnvoyGateway configuration file's content."""
        return {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyGateway",
            "gateway": {"controllerName": CONTROLLER_NAME},
            "provider": {
                "type": "Custom",
                "custom": {
                    "resource": {
                        "type": "Kubernetes",
                        # One instance per API server: no Lease, no 15 s wait after a restart.
                        "kubernetes": {"leaderElection": {"disable": True}},
                    },
                    "infrastructure": {
                        "type": "Host",
                        # Four different paths: equal ones switch func-e to its legacy layout.
                        "host": {
                            "configHome": str(self.config_home),
                            "dataHome": str(self.data_home),
                            "stateHome": str(self.data_dir / "state"),
                            "runtimeDir": str(self.data_dir / "run"),
                        },
                    },
                },
            },
            "logging": {"level": {"default": self.log_level}},
            "admin": {"address": {"host": "127.0.0.1", "port": EG_ADMIN_PORT}},
            # Its metrics server would listen on 0.0.0.0:19001; nothing here reads it.
            "telemetry": {"metrics": {"prometheus": {"disable": True}}},
            "extensionApis": {"enableBackend": True},
        }

    def _prepare(self) -> None:
        assert self.binaries is not None
        for sub in ("state", "run", "home", "root"):
            (self.data_dir / sub).mkdir(mode=0o700)
        (self.data_dir / "envoy-gateway.yaml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        envoy_dir = self.data_home / "envoy-versions" / ENVOY_VERSION / "bin"
        envoy_dir.mkdir(parents=True)
        (envoy_dir / "envoy").symlink_to(self.binaries.envoy)

        result = subprocess.run(
            [str(self.binaries.envoy_gateway), "certgen", "--local", "--config-home", str(self.config_home)],
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
        )
        if result.returncode != 0:
            raise FullstackError(f"envoy-gateway certgen --local failed:\n{result.stdout}{result.stderr}")
        for sub in ("envoy-gateway", "envoy"):
            for name in ("ca.crt", "tls.crt", "tls.key"):
                if not (self.config_home / "certs" / sub / name).is_file():
                    raise FullstackError(f"certgen wrote no {sub}/{name} under {self.config_home}/certs")

    def secrets(self) -> list[dict[str, Any]]:
        """The Secrets ``envoy-gateway certgen`` (without ``--local``) would create in the controller
        namespace, made from the local certificates: with the Kubernetes resource provider Envoy Gateway
        reads ``envoy`` and ``envoy-oidc-hmac`` from the API (translation errors and no wasm cache without)."""
        certs = self.config_home / "certs"

        def data(sub: str, names: Sequence[str]) -> dict[str, str]:
            return {n: base64.b64encode((certs / sub / n).read_bytes()).decode() for n in names}

        tls = ("ca.crt", "tls.crt", "tls.key")
        return [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": EG_NAMESPACE},
                "type": "kubernetes.io/tls" if name != "envoy-oidc-hmac" else "Opaque",
                "data": data(name, tls if name != "envoy-oidc-hmac" else ("hmac-secret",)),
            }
            for name in ("envoy-gateway", "envoy", "envoy-rate-limit", "envoy-oidc-hmac")
        ]

    def apply_secrets(self, kube: SyncKube) -> None:
        """Create the controller namespace and the certificate Secrets (see ``secrets``)."""
        kube.apply(NAMESPACES, {"kind": "Namespace", "metadata": {"name": EG_NAMESPACE}})
        for secret in self.secrets():
            kube.apply(SECRETS, secret)

    def _env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
        return {
            **keep,
            "HOME": str(self.data_dir / "home"),
            "KUBECONFIG": str(self.kubeconfig),
            "ENVOY_GATEWAY_NAMESPACE": EG_NAMESPACE,
        }

    def _start_process(self) -> Process:
        assert self.binaries is not None
        argv = [str(self.binaries.envoy_gateway), "server", "--config-path", str(self.data_dir / "envoy-gateway.yaml")]
        command = with_certs_mounted(
            self.config_home / "certs" / "envoy-gateway", self.data_dir / "root", self.data_dir, argv
        )
        return self.spawn("envoy-gateway", command, self._env())

    def _eg_ready(self) -> bool:
        resp = httpx.get(f"http://127.0.0.1:{EG_HEALTH_PORT}/readyz", timeout=2, trust_env=False)
        return resp.status_code == 200

    def _envoy_ready(self) -> bool:
        resp = httpx.get(f"http://127.0.0.1:{ENVOY_READY_PORT}/ready", timeout=2, trust_env=False)
        if resp.status_code != 200:
            return False
        with socket.create_connection((self.address, self.listener_port), timeout=2):
            return True

    def _gateway_accepted(self, kube: SyncKube) -> bool:
        cond = condition(kube.get(GATEWAYS, GATEWAY_NAME, EG_NAMESPACE), "Accepted")
        return cond is not None and cond.get("status") == "True"

    def gateway_objects(self) -> list[tuple[Resource, dict[str, Any]]]:
        """Namespace, EnvoyProxy (pins the host Envoy version), GatewayClass and Gateway, in apply order."""
        return [
            (NAMESPACES, {"kind": "Namespace", "metadata": {"name": EG_NAMESPACE}}),
            (
                ENVOYPROXIES,
                {
                    "kind": "EnvoyProxy",
                    "metadata": {"name": ENVOY_PROXY_NAME, "namespace": EG_NAMESPACE},
                    "spec": {
                        "provider": {"type": "Host", "host": {"envoyVersion": ENVOY_VERSION}},
                        "logging": {"level": {"default": "warn"}},
                    },
                },
            ),
            (
                GATEWAYCLASSES,
                {
                    "kind": "GatewayClass",
                    "metadata": {"name": GATEWAY_CLASS},
                    "spec": {
                        "controllerName": CONTROLLER_NAME,
                        "parametersRef": {
                            "group": "gateway.envoyproxy.io",
                            "kind": "EnvoyProxy",
                            "name": ENVOY_PROXY_NAME,
                            "namespace": EG_NAMESPACE,
                        },
                    },
                },
            ),
            (
                GATEWAYS,
                {
                    "kind": "Gateway",
                    "metadata": {"name": GATEWAY_NAME, "namespace": EG_NAMESPACE},
                    "spec": {
                        "gatewayClassName": GATEWAY_CLASS,
                        # Only shows up in status.addresses: host mode has no Service, so Envoy Gateway never
                        # sets Programmed=True (AddressNotAssigned without this, AddressNotUsable with it).
                        "addresses": [{"type": "IPAddress", "value": self.address}],
                        "listeners": [
                            {
                                "name": "http",
                                "protocol": "HTTP",
                                "port": self.listener_port,
                                "allowedRoutes": {"namespaces": {"from": "All"}},
                            }
                        ],
                    },
                },
            ),
        ]

    def apply_gateway(self, kube: SyncKube) -> None:
        """(Re)apply the Gateway objects."""
        for res, obj in self.gateway_objects():
            kube.apply(res, obj)

    # using it

    @property
    def parent_ref(self) -> dict[str, Any]:
        """What an HTTPRoute puts in ``spec.parentRefs`` to attach to this Gateway."""
        return {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": GATEWAY_NAME,
            "namespace": EG_NAMESPACE,
            "sectionName": "http",
        }

    @property
    def base_url(self) -> str:
        """``http://<address>:<port>`` of the Gateway listener."""
        return f"http://{self.address}:{self.listener_port}"

    def request(self, host: str, path: str = "/", method: str = "GET", timeout: float = 5.0) -> httpx.Response:
        """One request through Envoy with ``Host: host``."""
        return httpx.request(method, self.base_url + path, headers={"Host": host}, timeout=timeout, trust_env=False)

    def wait_for_response(
        self,
        host: str,
        path: str = "/",
        *,
        method: str = "GET",
        check: Callable[[httpx.Response], bool],
        timeout: float = 30.0,
    ) -> httpx.Response:
        """Poll until a response passes ``check`` (route changes reach Envoy asynchronously)."""
        last: list[httpx.Response] = []

        def probe() -> bool:
            resp = self.request(host, path, method)
            last[:] = [resp]
            return check(resp)

        try:
            wait_until(f"{method} {host}{path} through Envoy", probe, timeout, interval=0.2)
        except WaitTimeout as err:
            seen = f"{last[0].status_code} {last[0].text[:200]!r}" if last else "no response"
            raise FullstackError(f"{err}; last response: {seen}") from None
        return last[0]


def http_route(
    name: str,
    namespace: str,
    hostname: str,
    backend_refs: Sequence[Mapping[str, Any]],
    parent_ref: Mapping[str, Any],
    *,
    path: tuple[str, str] = ("PathPrefix", "/"),
    method: str | None = None,
) -> dict[str, Any]:
    """An HTTPRoute with one rule: ``path`` = (match type, value), optional ``method`` match."""
    match: dict[str, Any] = {"path": {"type": path[0], "value": path[1]}}
    if method is not None:
        match["method"] = method
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [dict(parent_ref)],
            "hostnames": [hostname],
            "rules": [{"matches": [match], "backendRefs": [dict(r) for r in backend_refs]}],
        },
    }


def backend(name: str, namespace: str, address: str, port: int) -> dict[str, Any]:
    """An Envoy Gateway Backend with one IP endpoint."""
    return {
        "kind": "Backend",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"endpoints": [{"ip": {"address": address, "port": port}}]},
    }


def backend_ref(name: str, port: int) -> dict[str, Any]:
    """An HTTPRoute backendRef to a Backend in the route's namespace."""
    return {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name, "port": port}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testbed.gateway netns -- CMD...``: build what the full stack needs (outside: it downloads),
    then run CMD in a fresh network namespace, e.g. a pytest session using ``EnvoyGateway``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m testbed.gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("netns", help="build the binaries, then exec CMD in a private network namespace")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("netns needs a command")
    find_binaries()
    find_fullstack_binaries()
    find_cert_manager()  # the full-stack suite runs the real cert-manager too
    command = netns_command(cmd)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
