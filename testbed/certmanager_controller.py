"""The real cert-manager v1.21 controllers as a test-bed process (``hack/build-cert-manager.sh``).

``CertManagerController`` starts the built binary against a kubeconfig (admin: RBAC is not under test
here), waits until its informers have synced (``/readyz`` on a loopback port), and reads its log. The log
runs at verbosity 4 by default because that is the level at which cert-manager reports each self-check
round, each GET of it and its outcome; ``self_checks()`` counts them, ``route_reverts()`` counts the times
it rewrote its HTTPRoute. Flags and defaults are described in docs/cert-manager-controller.md.

The build needs the Go module proxy: call ``find_cert_manager()`` before entering a private network
namespace (the runner itself works inside one).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import httpx

from testbed.controlplane import OWNER_FILE, REPO_ROOT, Process, free_loopback_ports, run_build_script

BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-cert-manager.sh"
BINARY: Final = "cert-manager-controller"
DATA_DIR_PREFIX: Final = "testbed-cert-manager-"
UPSTREAM_CHECK_RETRY_PERIOD: Final = 10.0  # seconds, cert-manager's --dns01-check-retry-period default
UPSTREAM_MAX_CONCURRENT_CHALLENGES: Final = 60
DEBUG_VERBOSITY: Final = 4  # cert-manager's logf.DebugLevel: self-check rounds and GETs are logged from here

# klog's text format: `I1202 05:47:38.101949    8686 file.go:171] "message" key=value key="quoted value"`
_KLOG_LINE: Final = re.compile(
    r'^(?P<level>[IWEF])\d{4} (?P<time>[\d:.]+)\s+\d+ (?P<source>\S+)\] "(?P<msg>(?:[^"\\]|\\.)*)"'
)
_FIELD: Final = re.compile(r'(?P<key>[\w.]+)=(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>\S+))')

# The messages cert-manager logs around an HTTP-01 self-check (pkg/issuer/acme/http, v1.21.2).
MSG_ROUND: Final = "running self check multiple times to ensure challenge has propagated"
MSG_GET: Final = "performing HTTP01 reachability check"
MSG_GET_OK: Final = "reachability test succeeded"
MSG_GET_FAILED: Final = (
    "failed to perform self check GET request",
    "received HTTP status code was not StatusOK (200)",
    "key returned by server did not match expected",
    "failed to decode response body",
)
MSG_ROUND_OK: Final = "self check succeeded"
MSG_ROUTE_REVERT: Final = "HTTPRoute is out of date, updating"


class CertManagerError(RuntimeError):
    """The controller could not be built, started, or exited early; the message holds its log tail."""


def find_cert_manager() -> Path:
    """The directory holding the built controller (built on first use, then cached by version + source)."""
    path = run_build_script(BUILD_SCRIPT)
    if not os.access(path / BINARY, os.X_OK):
        raise CertManagerError(f"{path / BINARY} missing after {BUILD_SCRIPT}")
    return path


@dataclass(frozen=True)
class LogLine:
    """One structured klog line."""

    level: str
    time: str
    message: str
    fields: dict[str, str]


def parse_log(text: str) -> Iterator[LogLine]:
    """The structured lines of a klog text log (others, e.g. panics, are skipped)."""
    for raw in text.splitlines():
        head = _KLOG_LINE.match(raw)
        if head is None:
            continue
        rest = raw[head.end() :]
        fields = {m["key"]: m["quoted"] if m["quoted"] is not None else m["bare"] for m in _FIELD.finditer(rest)}
        yield LogLine(head["level"], head["time"], head["msg"], fields)


@dataclass(frozen=True)
class SelfChecks:
    """cert-manager's HTTP-01 self-checks as its log tells them (needs verbosity >= 4).

    A round is one ``Check()``: a ``Present()`` (which may revert the route), then up to 5 GETs 2 s apart
    that must all pass; a failed GET ends the round and the next round comes after the retry period.
    """

    rounds: int
    rounds_passed: int
    gets: int
    gets_passed: int
    gets_failed: int
    failures: dict[str, int]  # failure message -> count

    @property
    def rounds_failed(self) -> int:
        """Rounds that ended with a failed GET (a round still running counts as neither)."""
        return self.gets_failed


@dataclass(eq=False)
class CertManagerController:
    """``cert-manager-controller`` against ``kubeconfig``; a context manager, or ``start()``/``stop()``.

    ``solver_nameservers`` (``host:port``) is where the self-check resolves names: the test bed's
    challtestsrv, so every test name reaches the shared gateway. ``check_retry_period`` keeps upstream's
    10 s unless a test asks for less; ``gateway_api`` turns on the ``gatewayHTTPRoute`` solver (it needs the
    Gateway API CRDs served when the controller starts).
    """

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
    keep_data_dir: bool = field(default_factory=lambda: os.environ.get("TESTBED_KEEP_DATA") == "1")

    data_dir: Path = field(init=False, default=Path())
    port: int = field(init=False, default=0)
    process: Process | None = field(init=False, default=None)
    ready_seconds: float = field(init=False, default=0.0)
    _stopped: bool = field(init=False, default=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def binary(self) -> Path:
        """The controller executable."""
        if self.binary_dir is None:
            self.binary_dir = find_cert_manager()
        return self.binary_dir / BINARY

    @property
    def base_url(self) -> str:
        """Where ``/metrics`` and ``/readyz`` are served."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """stdout + stderr of the controller."""
        return self.data_dir / "cert-manager.log"

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

    def start(self) -> None:
        """Start and wait for ``/readyz`` (informers synced); stops what it started on failure."""
        binary = self.binary  # builds outside the try: a build failure leaves nothing to stop
        self.data_dir = Path(tempfile.mkdtemp(prefix=DATA_DIR_PREFIX))
        (self.data_dir / OWNER_FILE).write_text(str(os.getpid()))  # for ControlPlane's stale-dir sweeper
        self._stopped = False
        atexit.register(self.stop)
        try:
            (self.port,) = free_loopback_ports(1)
            self.process = Process("cert-manager", self.argv(), self.log_path)
            # No proxy variables: cert-manager's self-check and ACME client honour them. No KUBECONFIG.
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
            t0 = time.monotonic()
            self.process.start(env={**env, "HOME": str(self.data_dir)})
            self._wait_ready(binary)
            self.ready_seconds = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, binary: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is None or not self.process.alive():
                raise CertManagerError(f"{binary} exited before ready:\n{self.log_tail()}")
            try:
                resp = httpx.get(f"{self.base_url}/readyz", timeout=2, trust_env=False)
                if resp.status_code == 200:
                    return
                last = f"{resp.status_code} {resp.text.strip()}"
            except httpx.HTTPError as err:
                last = repr(err)
            time.sleep(0.1)
        raise CertManagerError(f"cert-manager not ready after {self.ready_timeout}s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (controllers drain), SIGKILL after the grace period; remove the data dir unless kept."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.stop()
        if self.keep_data_dir:
            sys.stderr.write(f"testbed: kept cert-manager data dir {self.data_dir}\n")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

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

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of its log."""
        return "\n".join(self.log().splitlines()[-lines:])

    def lines(self, message: str | None = None) -> list[LogLine]:
        """Structured log lines, those with exactly ``message`` if given."""
        return [ln for ln in parse_log(self.log()) if message is None or ln.message == message]

    def self_checks(self, challenge: str | None = None) -> SelfChecks:
        """Count self-check rounds and GETs, all or of one Challenge (by name)."""
        counts: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for ln in parse_log(self.log()):
            if challenge is not None and ln.fields.get("resource_name") != challenge:
                continue
            if ln.message in MSG_GET_FAILED:
                failures[ln.message] += 1
            counts[ln.message] += 1
        return SelfChecks(
            rounds=counts[MSG_ROUND],
            rounds_passed=counts[MSG_ROUND_OK],
            gets=counts[MSG_GET],
            gets_passed=counts[MSG_GET_OK],
            gets_failed=sum(failures.values()),
            failures=dict(failures),
        )

    def route_reverts(self) -> int:
        """How often cert-manager rewrote an HTTPRoute of its own back to the spec it generates."""
        return len(self.lines(MSG_ROUTE_REVERT))

    def errors(self) -> list[str]:
        """Error-level log lines (``E...``)."""
        return [raw for raw in self.log().splitlines() if raw.startswith("E")]
