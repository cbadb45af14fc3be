"""Fault injection between the reconciler and the API server.

The path a faulty reconciler talks through is ``reconciler -> Toxiproxy (TCP) -> fault proxy (HTTPS) ->
kube-apiserver``:

- **Toxiproxy** (``github.com/Shopify/toxiproxy/v2``, built and cached by ``hack/build-toxiproxy.sh``) passes
  TLS through untouched and makes the network faults: latency, connection resets (``reset_peer``), a path that
  is down (every connection cut, new ones refused), streams that stall (``latency`` of an hour on the
  downstream holds every byte without losing one).
- **The fault proxy** (``testbed.faultproxy``, our own) makes what TCP cannot: 429 with Retry-After, 500 and
  503 answers to a fraction of the requests, and cuts or stalls of the watch streams alone. Its request counts
  are the storm's measure of how much the reconciler asked for, across its restarts.

Both serve certificates the test bed's CA trusts for 127.0.0.1 (Toxiproxy passes the fault proxy's through,
which is the API server's own serving certificate), so the reconciler's kubeconfig only changes its server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from testbed.binaries import run_build_script
from testbed.controlplane import ControlPlane
from testbed.errors import ComponentError
from testbed.faultproxy import FaultProxy
from testbed.harness import ReconcilerProcess, apply_rbac
from testbed.kube import Kube
from testbed.paths import REPO_ROOT
from testbed.pki import write_kubeconfig
from testbed.ports import free_loopback_ports
from testbed.process import Component

TOXIPROXY_BUILD_SCRIPT = REPO_ROOT / "hack" / "build-toxiproxy.sh"
HOUR_MS = 3_600_000


class ToxiproxyError(ComponentError):
    """Toxiproxy could not be built or started, or its API refused a change."""


def find_toxiproxy() -> Path:
    """``toxiproxy-server`` (built on first use, then cached by version)."""
    path = run_build_script(TOXIPROXY_BUILD_SCRIPT, error=ToxiproxyError) / "toxiproxy-server"
    if not os.access(path, os.X_OK):
        raise ToxiproxyError(f"{path} missing after {TOXIPROXY_BUILD_SCRIPT}")
    return path


@dataclass(eq=False)
class Toxiproxy(Component):
    """A ``toxiproxy-server`` on loopback and a client for its HTTP API (one proxy per ``create``)."""

    name: ClassVar[str] = "toxiproxy"
    error: ClassVar[type[ComponentError]] = ToxiproxyError

    api_url: str = field(init=False, default="")

    def _start(self) -> None:
        binary = find_toxiproxy()
        (port,) = free_loopback_ports(1)
        self.api_url = f"http://127.0.0.1:{port}"
        proc = self.spawn("toxiproxy", [str(binary), "-host", "127.0.0.1", "-port", str(port), "-seed", "13"])
        self.wait_ready(proc, "toxiproxy /version", lambda: httpx.get(f"{self.api_url}/version").is_success, 30)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        resp = httpx.request(method, f"{self.api_url}{path}", json=body, timeout=10)
        if not resp.is_success:
            raise ToxiproxyError(f"toxiproxy {method} {path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None

    def create(self, name: str, upstream: str) -> ToxicProxy:
        """A proxy listening on a free loopback port, forwarding to ``upstream`` (HOST:PORT)."""
        (port,) = free_loopback_ports(1)
        listen = f"127.0.0.1:{port}"
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        return ToxicProxy(self, name, listen)


@dataclass(frozen=True)
class ToxicProxy:
    """One Toxiproxy proxy: toxics on it apply to its open connections and to every new one."""

    server: Toxiproxy
    name: str
    listen: str

    def add(self, toxic: str, kind: str, stream: str = "downstream", toxicity: float = 1.0, **attributes: int) -> None:
        """Add toxic ``toxic`` of type ``kind`` (``latency``, ``reset_peer``, ``timeout``, ``bandwidth``,
        ``limit_data``, ``slow_close``, ``slicer``) on ``stream`` (``downstream`` = server to client)."""
        body = {"name": toxic, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        self.server._call("POST", f"/proxies/{self.name}/toxics", body)

    def remove(self, toxic: str) -> None:
        self.server._call("DELETE", f"/proxies/{self.name}/toxics/{toxic}")

    def enable(self, enabled: bool) -> None:
        """Disabled: every open connection is cut and new ones are refused (the path is down)."""
        self.server._call("POST", f"/proxies/{self.name}", {"enabled": enabled})

    def stall(self) -> None:
        """Hold every byte the server sends, on open and new connections (the connections stay open)."""
        self.add("stall", "latency", latency=HOUR_MS)

    def unstall(self) -> None:
        """Deliver what was held (Toxiproxy's latency toxic drops nothing when removed) and flow again."""
        self.remove("stall")


@dataclass
class FaultyPath:
    """``reconciler -> Toxiproxy -> fault proxy -> kube-apiserver`` for one control plane, with a kubeconfig
    for the reconciler's ServiceAccount that points at the Toxiproxy end."""

    plane: ControlPlane
    toxiproxy: Toxiproxy
    proxy: FaultProxy
    toxic: ToxicProxy
    kubeconfig: Path

    @classmethod
    def start(cls, plane: ControlPlane, name: str = "apiserver", seed: int = 13) -> FaultyPath:
        proxy = FaultProxy(
            upstream=plane.server_url, upstream_ca=plane.ca_file, cert=plane.pki.serving_cert,
            key=plane.pki.serving_key, seed=seed,
        )  # fmt: skip
        toxiproxy = Toxiproxy()
        proxy.start()
        try:
            toxiproxy.start()
            toxic = toxiproxy.create(name, proxy.url.removeprefix("https://"))
        except BaseException:
            proxy.stop()
            raise
        kubeconfig = write_kubeconfig(
            plane.data_dir / f"{name}-via-faults.kubeconfig",
            server=f"https://{toxic.listen}",
            ca_file=plane.ca_file,
            token=plane.reconciler_token,
            user="acme-gateway-reconciler",
        )
        return cls(plane, toxiproxy, proxy, toxic, kubeconfig)

    def stop(self) -> None:
        self.toxiproxy.stop()
        self.proxy.stop()

    def requests(self) -> int:
        """Every request the reconciler sent through this path (answered, injected or dropped)."""
        return int(self.proxy.stats()["counts"].get("requests", 0))


async def start_reconciler_via(
    kubeconfig: Path, api: Kube, log_path: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> ReconcilerProcess:
    """``python -m reconciler run`` as the ServiceAccount (RBAC applied) through ``kubeconfig``; not yet
    started: call ``start()``."""
    await apply_rbac(api)
    (port,) = free_loopback_ports(1)
    argv = [
        sys.executable, "-m", "reconciler", "run", "--kubeconfig", str(kubeconfig),
        "--metrics-bind-address", f"127.0.0.1:{port}", *args,
    ]  # fmt: skip
    child_env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    child_env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})})
    return ReconcilerProcess(argv, child_env, log_path, f"http://127.0.0.1:{port}")
