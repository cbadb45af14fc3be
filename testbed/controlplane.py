"""A real kube-apiserver, etcd and kube-controller-manager on loopback, for end-to-end tests.

Real components rather than fakes because the reconciler's writes must pass the upstream CRD schemas (CEL
included), RBAC, and the garbage collector's owner-reference cascade, none of which a fake reproduces.
Everything binds to 127.0.0.1 on ports picked by the kernel and lives in a fresh temp dir; the lifecycle
(teardown at ``stop()``, at exit and on signals) is ``testbed.process.Component``'s.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx

from testbed.binaries import find_binaries
from testbed.errors import ComponentError, ControlPlaneError
from testbed.paths import OWN_CRDS, crd_dir
from testbed.pki import Pki, write_file, write_kubeconfig
from testbed.ports import free_loopback_ports
from testbed.process import Component
from testbed.synckube import SyncKube, load_crds

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


@dataclass(eq=False)
class ControlPlane(Component):
    """etcd + kube-apiserver + kube-controller-manager (garbagecollector, namespace) with the CRDs installed.

    Use as a context manager, or call ``start()``/``stop()``; ``stop()`` is idempotent and also runs at exit.
    """

    name: ClassVar[str] = "control-plane"
    error: ClassVar[type[ComponentError]] = ControlPlaneError

    crd_directory: Path = field(default_factory=crd_dir)
    ready_timeout: float = 90.0
    audit: bool = False
    """Write an audit log of the reconciler identity's writes, with their bodies (``audit_log``): how the
    fault tests check that every write carried a precondition."""
    apiserver_flags: tuple[str, ...] = ()

    server_url: str = field(init=False)
    ca_file: Path = field(init=False)
    admin_token: str = field(init=False)
    reconciler_token: str = field(init=False)
    admin_kubeconfig: Path = field(init=False)
    reconciler_kubeconfig: Path = field(init=False)
    binaries_dir: Path = field(init=False)
    crd_names: list[str] = field(init=False, default_factory=list)
    audit_log: Path = field(init=False, default_factory=Path)

    def _start(self) -> None:
        """Build/find the binaries, start everything, install the CRDs."""
        with self.timings.phase("binaries"):
            self.binaries_dir = find_binaries()
        with self.timings.phase("apiserver ready"):
            self._prepare()
            self._start_etcd()
            self._start_apiserver()
        with self.timings.phase("CRDs established"):
            self.install_crds()
        # After the CRDs: the garbage collector discovers resources at start and only every 30 s
        # afterwards, so starting it now makes owner references between custom resources cascade
        # from the first test on.
        with self.timings.phase("controller-manager ready"):
            self._start_controller_manager()

    # set-up

    def _prepare(self) -> None:
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
        self._token_file = write_file(
            self.data_dir / "tokens.csv",
            f'{self.admin_token},testbed-admin,testbed-admin,"system:masters"\n'
            f"{self.reconciler_token},{RECONCILER_USER},{RECONCILER_USER},"
            f'"{",".join(RECONCILER_GROUPS)}"\n',
        )
        self.admin_kubeconfig = self._kubeconfig("admin", self.admin_token, "testbed-admin")
        self.reconciler_kubeconfig = self._kubeconfig("reconciler", self.reconciler_token, "acme-gateway-reconciler")

    def _kubeconfig(self, name: str, token: str, user: str) -> Path:
        return write_kubeconfig(
            self.data_dir / f"{name}.kubeconfig", server=self.server_url, ca_file=self.ca_file, token=token, user=user
        )

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self._etcd_client_port}"
        peer = f"http://127.0.0.1:{self._etcd_peer_port}"
        proc = self.spawn(
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

        self.wait_ready(proc, "etcd /health", healthy, self.ready_timeout)

    @property
    def pki(self) -> Pki:
        """The CA and the API server's serving certificate (a proxy in front of it may serve the same one)."""
        return self._pki

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._etcd_client_port}"

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {"level": "Request", "users": [RECONCILER_USER], "verbs": ["create", "update", "patch", "delete"]},
                {"level": "None"},
            ],
        }
        path = write_file(self.data_dir / "audit-policy.json", json.dumps(policy))
        self.audit_log = self.data_dir / "logs" / "audit.jsonl"
        return [f"--audit-policy-file={path}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json"]

    def restart_apiserver(self, down: float = 0.0) -> float:
        """Stop kube-apiserver (SIGTERM, as a rolling restart does), stay down ``down`` seconds, start it
        again on the same port and wait until it is ready; returns the seconds it was unavailable."""
        started = time.monotonic()
        old = next(p for p in self.processes if p.name == "kube-apiserver")
        old.stop(self.stop_grace)
        self.processes.remove(old)
        time.sleep(down)
        self._start_apiserver()
        return time.monotonic() - started

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision (physically): a watch or list resumed from any older
        resourceVersion is answered 410 Gone. Returns the revision."""
        with httpx.Client(base_url=self.etcd_url, timeout=30) as etcd:
            # Any key: the answer's header carries the current revision.
            resp = etcd.post("/v3/kv/range", json={"key": "AA==", "limit": 1})
            resp.raise_for_status()
            revision = int(resp.json()["header"]["revision"])
            resp = etcd.post("/v3/kv/compaction", json={"revision": str(revision), "physical": True})
            resp.raise_for_status()
        return revision

    def _start_apiserver(self) -> None:
        pki = self._pki
        proc = self.spawn(
            "kube-apiserver",
            [
                str(self.binaries_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self._etcd_client_port}",
                *self._serving_flags(self._apiserver_port, "apiserver-certs"),
                "--advertise-address=127.0.0.1",
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
                *self._audit_flags(),
                *self.apiserver_flags,
            ],
        )

        def ready() -> bool:
            with self.sync_api(timeout=2) as api:
                return api.status_code("/readyz") == 200

        self.wait_ready(proc, "kube-apiserver /readyz", ready, self.ready_timeout)

    def _serving_flags(self, port: int, cert_dir: str) -> list[str]:
        """How kube-apiserver and kube-controller-manager serve: HTTPS on 127.0.0.1 with our certificate."""
        return [
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={self._pki.serving_cert}",
            f"--tls-private-key-file={self._pki.serving_key}",
            f"--cert-dir={self.data_dir / cert_dir}",
            "--profiling=false",
        ]

    def _start_controller_manager(self) -> None:
        kubeconfig = str(self.admin_kubeconfig)
        proc = self.spawn(
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
                *self._serving_flags(self._kcm_port, "kcm-certs"),
            ],
        )
        url = f"https://127.0.0.1:{self._kcm_port}/healthz"

        def healthy() -> bool:
            return httpx.get(url, verify=self.ssl_context(), timeout=2).status_code == 200

        self.wait_ready(proc, "kube-controller-manager /healthz", healthy, self.ready_timeout)

    # API access used during start-up

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting only the test bed's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def sync_api(self, timeout: float = 30.0) -> SyncKube:
        """A blocking admin client for start-up (the async one for tests is ``testbed.kube``)."""
        return SyncKube(self.server_url, self.admin_token, self.ssl_context(), timeout)

    def install_crds(self) -> None:
        """Server-side apply every CRD in ``crd_directory``; wait until each is Established and served."""
        docs = load_crds(sorted(self.crd_directory.glob("*.yaml")))
        if not docs:
            raise ControlPlaneError(f"no CRDs found in {self.crd_directory}")
        docs += load_crds(sorted(OWN_CRDS.glob("*.yaml")))
        with self.sync_api(timeout=60) as api:
            self.crd_names = api.install_crds(docs, timeout=self.ready_timeout)
