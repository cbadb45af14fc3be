"""A real kube-apiserver, etcd and kube-controller-manager on loopback, for end-to-end tests.

Real components rather than fakes because the reconciler's writes must pass the upstream CRD schemas (CEL
included), RBAC, and the garbage collector's owner-reference cascade, none of which a fake reproduces.
Everything binds to 127.0.0.1 on ports picked by the kernel, lives in a fresh temp dir, and is torn down
(process groups killed, dir removed) on ``stop()``, at interpreter exit and on SIGINT/SIGTERM/SIGHUP.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime as dt
import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"

RECONCILER_SA_NAMESPACE = "acme-gateway-reconciler"
RECONCILER_SA_NAME = "acme-gateway-reconciler"
RECONCILER_USER = f"system:serviceaccount:{RECONCILER_SA_NAMESPACE}:{RECONCILER_SA_NAME}"
RECONCILER_GROUPS = (
    "system:serviceaccounts",
    f"system:serviceaccounts:{RECONCILER_SA_NAMESPACE}",
    "system:authenticated",
)

# Service ClusterIPs are only data here (no kube-proxy, nothing routes to them). A loopback range keeps even
# that data inside 127.0.0.0/8; kube-apiserver v1.36 accepts it (checked when this was written).
SERVICE_CLUSTER_IP_RANGE = "127.96.0.0/16"

STOP_GRACE_SECONDS = 5.0
DATA_DIR_PREFIX = "testbed-"
OWNER_FILE = "owner.pid"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or made ready."""


def crd_dir() -> Path:
    """Where the upstream CRDs live: ``$RECONCILER_CRD_DIR`` or ``<repo>/../shared/crds``."""
    return Path(os.environ.get("RECONCILER_CRD_DIR", str(REPO_ROOT.parent / "shared" / "crds")))


def free_loopback_ports(count: int) -> list[int]:
    """Ports the kernel considers free on 127.0.0.1; all sockets are held until every port is picked so
    the same port is never returned twice (another process may still grab one before we bind: rare)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_build_script(script: Path, env: Mapping[str, str] | None = None) -> Path:
    """Run one of the ``hack/build-*.sh`` scripts (immediate when its cache is warm) and return the
    directory it prints last. Progress lines are echoed to stderr because a cold build takes minutes."""
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            sys.stderr.write(f"[{script.stem}] {line}")

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    assert proc.stdout is not None
    out = proc.stdout.read()  # stderr belongs to the pump thread: communicate() would race it
    proc.wait()
    pumper.join(timeout=5)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(f"{script} failed (exit {proc.returncode}); last output:\n{''.join(tail)}")
    return Path(lines[-1])


def find_binaries() -> Path:
    """The control-plane binaries' directory (built on first use, then cached by version)."""
    path = run_build_script(BUILD_SCRIPT)
    for binary in ("etcd", "kube-apiserver", "kube-controller-manager"):
        if not os.access(path / binary, os.X_OK):
            raise ControlPlaneError(f"{path / binary} missing after {BUILD_SCRIPT}")
    return path


# --- PKI ---------------------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


@dataclass(frozen=True)
class Pki:
    """Paths of the generated key material (ECDSA P-256: fast to generate, accepted everywhere here)."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_public_key: Path
    sa_private_key: Path

    @classmethod
    def generate(cls, directory: Path) -> Pki:
        """Write a CA, a serving cert for 127.0.0.1/localhost signed by it, and a service-account key."""
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=7)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "testbed-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )

        srv_key = ec.generate_private_key(ec.SECP256R1())
        srv_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(srv_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )

        sa_key = ec.generate_private_key(ec.SECP256R1())
        sa_pub = sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(
            ca_cert=_write(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), 0o644),
            serving_cert=_write(directory / "serving.crt", srv_cert.public_bytes(serialization.Encoding.PEM), 0o644),
            serving_key=_write(directory / "serving.key", _pem_key(srv_key)),
            sa_public_key=_write(directory / "sa.pub", sa_pub, 0o644),
            sa_private_key=_write(directory / "sa.key", _pem_key(sa_key)),
        )


def write_kubeconfig(path: Path, *, server: str, ca_file: Path, token: str, user: str) -> Path:
    """A single-context kubeconfig with inline CA data, so it still works if copied elsewhere."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
        "current-context": "testbed",
    }
    return _write(path, yaml.safe_dump(config, sort_keys=False))


# --- processes ---------------------------------------------------------------------------------------


_PR_SET_PDEATHSIG = 1
_prctl: Any = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL the child when the parent dies, so a SIGKILLed test run leaks nothing.

    Runs between fork and exec: it only calls the already-resolved libc function.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


@dataclass
class Process:
    """A child in its own session (so terminal signals reach only us and we can kill its whole group)."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start the child with stdout and stderr going to its log file."""
        with self.log_path.open("ab") as log:
            # PDEATHSIG fires when the forking *thread* exits, so only use it from the main thread.
            in_main = threading.current_thread() is threading.main_thread()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(env) if env is not None else None,
                # Safe despite threads: the hook does no allocation-heavy work, only one libc call.
                preexec_fn=_die_with_parent if in_main else None,  # noqa: PLW1509
            )

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the process group, SIGKILL it if still there after ``grace`` seconds."""
        if self.popen is None:
            return
        pgid = self.popen.pid  # session leader: its pid is the group id
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            try:
                self.popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children of the leader (none expected) may outlive it: make sure the group is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


# --- exit handling -----------------------------------------------------------------------------------

_LIVE: set[ControlPlane] = set()
_LIVE_LOCK = threading.Lock()
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_previous_handlers: dict[int, Any] = {}


def _stop_all() -> None:
    with _LIVE_LOCK:
        planes = list(_LIVE)
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Tear everything down first, then behave as the process would have without us."""
    _stop_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. SIGINT's default raises KeyboardInterrupt
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@functools.cache
def _install_exit_hooks() -> None:
    """Once per process: atexit, and signal handlers when called from the main thread."""
    atexit.register(_stop_all)
    if threading.current_thread() is threading.main_thread():
        for sig in _HANDLED_SIGNALS:
            previous = signal.getsignal(sig)
            if previous == signal.SIG_IGN:  # e.g. SIGINT in a background job: the parent wants it ignored
                continue
            if previous is signal.default_int_handler:
                # KeyboardInterrupt already unwinds through stop() (context manager, fixture, atexit);
                # stopping first would only make the unwinding code fail against a dead API server.
                continue
            _previous_handlers[sig] = previous
            signal.signal(sig, _on_signal)


def _sweep_stale_data_dirs() -> None:
    """Remove data dirs left by runs that were SIGKILLed (their children died with them, see above)."""
    for owner in Path(tempfile.gettempdir()).glob(f"{DATA_DIR_PREFIX}*/{OWNER_FILE}"):
        try:
            pid = int(owner.read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(owner.parent, ignore_errors=True)
        except (OSError, ValueError):
            continue


# --- the control plane -------------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds spent in each start-up phase, reported so slow set-ups get noticed."""

    binaries: float = 0.0
    apiserver_ready: float = 0.0
    crds_established: float = 0.0
    controller_manager_ready: float = 0.0

    @property
    def total(self) -> float:
        """Sum of all phases."""
        return self.binaries + self.apiserver_ready + self.crds_established + self.controller_manager_ready

    def __str__(self) -> str:
        return (
            f"binaries {self.binaries:.1f}s, apiserver ready {self.apiserver_ready:.1f}s, "
            f"CRDs established {self.crds_established:.1f}s, "
            f"controller-manager ready {self.controller_manager_ready:.1f}s, total {self.total:.1f}s"
        )


@dataclass(eq=False)
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (garbagecollector, namespace) with the CRDs installed.

    Use as a context manager, or call ``start()``/``stop()``; ``stop()`` is idempotent and also runs at exit.
    """

    crd_directory: Path = field(default_factory=crd_dir)
    keep_data_dir: bool = field(default_factory=lambda: os.environ.get("TESTBED_KEEP_DATA") == "1")
    ready_timeout: float = 90.0

    data_dir: Path = field(init=False)
    server_url: str = field(init=False)
    ca_file: Path = field(init=False)
    admin_token: str = field(init=False)
    reconciler_token: str = field(init=False)
    admin_kubeconfig: Path = field(init=False)
    reconciler_kubeconfig: Path = field(init=False)
    binaries_dir: Path = field(init=False)
    timings: Timings = field(init=False, default_factory=Timings)
    processes: list[Process] = field(init=False, default_factory=list)
    crd_names: list[str] = field(init=False, default_factory=list)
    _stopped: bool = field(init=False, default=True)

    # lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Build/find the binaries, start everything, install the CRDs; stops what it started on failure."""
        _install_exit_hooks()
        t0 = time.monotonic()
        self.binaries_dir = find_binaries()
        self.timings.binaries = time.monotonic() - t0

        _sweep_stale_data_dirs()
        self.data_dir = Path(tempfile.mkdtemp(prefix=DATA_DIR_PREFIX))
        (self.data_dir / OWNER_FILE).write_text(str(os.getpid()))
        self._stopped = False
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            t1 = time.monotonic()
            self._prepare()
            self._start_etcd()
            self._start_apiserver()
            self.timings.apiserver_ready = time.monotonic() - t1

            t2 = time.monotonic()
            self.install_crds()
            self.timings.crds_established = time.monotonic() - t2

            # After the CRDs: the garbage collector discovers resources at start and only every 30 s
            # afterwards, so starting it now makes owner references between custom resources cascade
            # from the first test on.
            t3 = time.monotonic()
            self._start_controller_manager()
            self.timings.controller_manager_ready = time.monotonic() - t3
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and remove the data dir unless asked to keep it."""
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
        self.processes.clear()
        if self.keep_data_dir:
            sys.stderr.write(f"testbed: kept data dir {self.data_dir}\n")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    # set-up

    def _prepare(self) -> None:
        (self.data_dir / "logs").mkdir()
        pki = Pki.generate(self.data_dir / "pki")
        self._pki = pki
        self.ca_file = pki.ca_cert
        (
            self._etcd_client_port,
            self._etcd_peer_port,
            self._apiserver_port,
            self._kcm_port,
        ) = free_loopback_ports(4)
        self.server_url = f"https://127.0.0.1:{self._apiserver_port}"
        self.admin_token = secrets.token_urlsafe(32)
        self.reconciler_token = secrets.token_urlsafe(32)
        # --token-auth-file lines: token,user,uid,"group1,group2"
        self._token_file = _write(
            self.data_dir / "tokens.csv",
            f'{self.admin_token},testbed-admin,testbed-admin,"system:masters"\n'
            f"{self.reconciler_token},{RECONCILER_USER},{RECONCILER_USER},"
            f'"{",".join(RECONCILER_GROUPS)}"\n',
        )
        self.admin_kubeconfig = write_kubeconfig(
            self.data_dir / "admin.kubeconfig",
            server=self.server_url,
            ca_file=self.ca_file,
            token=self.admin_token,
            user="testbed-admin",
        )
        self.reconciler_kubeconfig = write_kubeconfig(
            self.data_dir / "reconciler.kubeconfig",
            server=self.server_url,
            ca_file=self.ca_file,
            token=self.reconciler_token,
            user="acme-gateway-reconciler",
        )

    def _spawn(self, name: str, argv: list[str]) -> Process:
        proc = Process(name, argv, self.data_dir / "logs" / f"{name}.log")
        self.processes.append(proc)
        proc.start()
        return proc

    def _wait_until(self, proc: Process, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ControlPlaneError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if check():
                    return
            time.sleep(0.1)
        raise ControlPlaneError(f"timed out waiting for {what}:\n{proc.log_tail()}")

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self._etcd_client_port}"
        peer = f"http://127.0.0.1:{self._etcd_peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(self.binaries_dir / "etcd"),
                "--name=testbed",
                f"--data-dir={self.data_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=testbed={peer}",
                # Metrics are served on the client URL; no extra listener, so nothing binds 0.0.0.0.
                # Throw-away data: skip fsync, which dominates etcd latency on slow disks.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            resp = httpx.get(f"{client}/health", timeout=2)
            return resp.status_code == 200 and json.loads(resp.text).get("health") == "true"

        self._wait_until(proc, "etcd /health", healthy)

    def _start_apiserver(self) -> None:
        pki = self._pki
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self._etcd_client_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self._apiserver_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--cert-dir={self.data_dir / 'apiserver-certs'}",
                f"--token-auth-file={self._token_file}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://127.0.0.1",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # ServiceAccount admission rejects pods until the token controller has created the
                # namespace's "default" ServiceAccount; we run no such controller, and the only pods
                # (cert-manager's solver pods) are inert data that never mount a token.
                "--disable-admission-plugins=ServiceAccount",
                # The endpoint reconciler would publish 127.0.0.1 as the `kubernetes` Service's endpoint,
                # which Endpoints validation refuses (loopback), logging an error every 10 s.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )

        def ready() -> bool:
            with self.http_client(timeout=2) as http:
                return http.get("/readyz").status_code == 200

        self._wait_until(proc, "kube-apiserver /readyz", ready)

    def _start_controller_manager(self) -> None:
        pki = self._pki
        kubeconfig = str(self.admin_kubeconfig)
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                # No --authentication/authorization-kubeconfig: delegated authn would wait for the
                # extension-apiserver-authentication ConfigMap, which a token-only apiserver never writes;
                # /healthz is served anyway (it is in the always-allowed paths).
                "--controllers=garbagecollector,namespace",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._kcm_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--cert-dir={self.data_dir / 'kcm-certs'}",
                "--profiling=false",
            ],
        )
        url = f"https://127.0.0.1:{self._kcm_port}/healthz"

        def healthy() -> bool:
            return httpx.get(url, verify=self.ssl_context(), timeout=2).status_code == 200

        self._wait_until(proc, "kube-controller-manager /healthz", healthy)

    # API access used during start-up

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting only the test bed's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def http_client(self, timeout: float = 30.0) -> httpx.Client:
        """A sync admin client for the API server (the async one for tests is ``testbed.kube``)."""
        return httpx.Client(
            base_url=self.server_url,
            verify=self.ssl_context(),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=timeout,
        )

    def install_crds(self) -> None:
        """Server-side apply every CRD in ``crd_directory``; wait until each is Established and served."""
        docs: list[dict[str, Any]] = []
        for path in sorted(self.crd_directory.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    docs.append(doc)
        if not docs:
            raise ControlPlaneError(f"no CRDs found in {self.crd_directory}")
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        with self.http_client(timeout=60) as http:
            for doc in docs:
                name = doc["metadata"]["name"]
                resp = http.patch(
                    f"{base}/{name}",
                    params={"fieldManager": "testbed", "force": "true"},
                    headers={"Content-Type": "application/apply-patch+yaml"},
                    content=json.dumps(doc),
                )
                if resp.status_code >= 300:
                    raise ControlPlaneError(f"applying CRD {name}: {resp.status_code} {resp.text}")
            self.crd_names = [d["metadata"]["name"] for d in docs]
            deadline = time.monotonic() + self.ready_timeout
            pending = list(docs)
            while pending:
                pending = [d for d in pending if not self._crd_ready(http, d)]
                if not pending:
                    break
                if time.monotonic() > deadline:
                    names = ", ".join(d["metadata"]["name"] for d in pending)
                    raise ControlPlaneError(f"CRDs not established and served in time: {names}")
                time.sleep(0.1)

    @staticmethod
    def _crd_ready(http: httpx.Client, doc: dict[str, Any]) -> bool:
        name = doc["metadata"]["name"]
        crd = http.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}").json()
        conditions = (crd.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return False
        group, plural = doc["spec"]["group"], doc["spec"]["names"]["plural"]
        for version in doc["spec"]["versions"]:
            if not version.get("served", True):
                continue
            resp = http.get(f"/apis/{group}/{version['name']}")
            if resp.status_code != 200:
                return False
            if plural not in {r.get("name") for r in resp.json().get("resources", [])}:
                return False
        return True

    def logs(self) -> Iterator[tuple[str, str]]:
        """(component, last log lines) for every process, to attach to failure reports."""
        for proc in self.processes:
            yield proc.name, proc.log_tail()
