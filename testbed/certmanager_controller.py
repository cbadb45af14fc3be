"""The real cert-manager v1.21 controllers as a test-bed component (``hack/build-cert-manager.sh``).

``CertManagerController`` runs the built binary against a kubeconfig (admin: cert-manager's RBAC is not
under test here) with the shared ``Component`` lifecycle, waits until its informers have synced
(``/readyz`` on a loopback port), and reads its log. The log runs at verbosity 4 by default because that is
the level at which cert-manager reports each self-check round, each GET of it and its outcome
(``testbed.certmanager_log`` reads them). Flags and defaults: docs/cert-manager-controller.md.

Start it after the Gateway API CRDs are served (with the Gateway API on, cert-manager asks discovery for
them and fails without). The build needs the Go module proxy: call ``find_cert_manager()`` before entering
a private network namespace (inside one, the build script just prints its cached directory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final

import httpx

from testbed.binaries import run_build_script
from testbed.certmanager_log import (
    ChallengeRounds,
    LogLine,
    SelfChecks,
    count_self_checks,
    parse_log,
    rounds,
)
from testbed.errors import ComponentError
from testbed.paths import REPO_ROOT
from testbed.ports import free_loopback_ports
from testbed.process import Component, Process

BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-cert-manager.sh"
BINARY: Final = "cert-manager-controller"
UPSTREAM_CHECK_RETRY_PERIOD: Final = 10.0  # seconds, cert-manager's --dns01-check-retry-period default
UPSTREAM_MAX_CONCURRENT_CHALLENGES: Final = 60
DEBUG_VERBOSITY: Final = 4  # cert-manager's logf.DebugLevel: self-check rounds and GETs are logged from here


class CertManagerError(ComponentError):
    """The controller could not be built, started, or exited early; the message holds its log tail."""


def find_cert_manager() -> Path:
    """The directory holding the built controller (built on first use, then cached by version + source)."""
    path = run_build_script(BUILD_SCRIPT, error=CertManagerError)
    if not os.access(path / BINARY, os.X_OK):
        raise CertManagerError(f"{path / BINARY} missing after {BUILD_SCRIPT}")
    return path


@dataclass(eq=False)
class CertManagerController(Component):
    """``cert-manager-controller`` against ``kubeconfig``; a context manager, or ``start()``/``stop()``.

    ``solver_nameservers`` (``host:port``) is where the self-check resolves names: the test bed's
    challtestsrv, so every test name reaches the shared gateway. ``check_retry_period`` keeps upstream's
    10 s unless asked otherwise; ``gateway_api`` turns on the ``gatewayHTTPRoute`` solver.
    """

    name: ClassVar[str] = "cert-manager"
    error: ClassVar[type[ComponentError]] = CertManagerError

    kubeconfig: Path
    solver_nameservers: Sequence[str] = ()
    check_retry_period: float = UPSTREAM_CHECK_RETRY_PERIOD
    max_concurrent_challenges: int = UPSTREAM_MAX_CONCURRENT_CHALLENGES
    gateway_api: bool = True
    controllers: Sequence[str] = ("*",)
    cluster_resource_namespace: str = "kube-system"
    namespace: str = ""
    verbosity: int = DEBUG_VERBOSITY
    extra_args: Sequence[str] = ()
    binary_dir: Path | None = None
    ready_timeout: float = 60.0

    port: int = field(init=False, default=0)

    @property
    def binary(self) -> Path:
        """The controller executable (built on first use)."""
        if self.binary_dir is None:
            self.binary_dir = find_cert_manager()
        return self.binary_dir / BINARY

    @property
    def base_url(self) -> str:
        """Where ``/metrics`` and ``/readyz`` are served."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> Process | None:
        """The controller process."""
        return self.processes[0] if self.processes else None

    @property
    def log_path(self) -> Path:
        """stdout + stderr of the controller."""
        return self.data_dir / "logs" / f"{self.name}.log"

    @property
    def ready_seconds(self) -> float:
        """Process start to ``/readyz`` answering 200."""
        return self.timings.phases.get("ready", 0.0)

    def argv(self) -> list[str]:
        """The command line (every flag explicit, so the log's first line tells the whole configuration)."""
        args = [
            str(self.binary),
            f"--kubeconfig={self.kubeconfig}",
            f"--enable-gateway-api={str(self.gateway_api).lower()}",
            f"--dns01-check-retry-period={self.check_retry_period}s",
            f"--max-concurrent-challenges={self.max_concurrent_challenges}",
            f"--controllers={','.join(self.controllers)}",
            f"--cluster-resource-namespace={self.cluster_resource_namespace}",
            f"--listen-address=127.0.0.1:{self.port}",
            f"--v={self.verbosity}",
        ]
        if self.solver_nameservers:
            args.append(f"--acme-http01-solver-nameservers={','.join(self.solver_nameservers)}")
        if self.namespace:
            args.append(f"--namespace={self.namespace}")
        return [*args, *self.extra_args]

    def _start(self) -> None:
        with self.timings.phase("binary"):
            _ = self.binary
        (self.port,) = free_loopback_ports(1)
        # No proxy variables (its self-check and ACME client honour them), no KUBECONFIG.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
        proc = self.spawn(self.name, self.argv(), env={**env, "HOME": str(self.data_dir)})
        with self.timings.phase("ready"):
            self.wait_ready(proc, "cert-manager /readyz (informers synced)", self._ready, self.ready_timeout)

    def _ready(self) -> bool:
        return httpx.get(f"{self.base_url}/readyz", timeout=2, trust_env=False).status_code == 200

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.alive()

    def metrics(self) -> str:
        """cert-manager's ``/metrics`` (Prometheus text): ACME client requests, controller syncs, ..."""
        resp = httpx.get(f"{self.base_url}/metrics", timeout=5, trust_env=False)
        resp.raise_for_status()
        return resp.text

    def log(self) -> str:
        """Everything it logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def lines(self, message: str | None = None) -> list[LogLine]:
        """Structured log lines, those with exactly ``message`` if given."""
        return [ln for ln in parse_log(self.log()) if message is None or ln.message == message]

    def self_checks(self, namespace: str | None = None) -> SelfChecks:
        """Self-check rounds, GETs and route reverts so far, all or of one namespace."""
        return count_self_checks(parse_log(self.log()), namespace)

    def rounds(self) -> dict[tuple[str, str], ChallengeRounds]:
        """Every Challenge's self-check rounds so far, in epoch seconds."""
        return rounds(parse_log(self.log()), time.time())

    def errors(self) -> list[str]:
        """Error-level log lines (``E...``)."""
        return [raw for raw in self.log().splitlines() if raw.startswith("E")]
