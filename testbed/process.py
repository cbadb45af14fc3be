"""Child processes and the lifecycle every test-bed component shares.

A component (the control plane, Envoy Gateway, Pebble, challtestsrv) owns a fresh temp dir, marked with the
pid of the process that owns it, and runs its children in their own sessions. ``stop()`` kills their process
groups and removes the dir unless it is to be kept; the same teardown runs at interpreter exit and on
SIGINT/SIGTERM/SIGHUP. Linux SIGKILLs the children if we are SIGKILLed ourselves, and the next start sweeps
the dirs such runs left, so a killed test run leaks neither processes nor files for long.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, ClassVar, Self

from testbed.errors import ComponentError
from testbed.polling import WaitTimeout, wait_until

DATA_DIR_PREFIX = "testbed-"
OWNER_FILE = "owner.pid"
KEEP_DATA_ENV = "TESTBED_KEEP_DATA"

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

    def stop(self, grace: float = 5.0) -> None:
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
        # Children of the leader (Envoy under Envoy Gateway) may outlive it: make sure the group is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


# --- teardown at exit and on signals -----------------------------------------------------------------

# Insertion-ordered, so teardown stops components in reverse start order (Envoy Gateway before the API
# server it talks to).
_LIVE: dict[int, Component] = {}
_LIVE_LOCK = threading.Lock()
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_previous_handlers: dict[int, Any] = {}


def _stop_all() -> None:
    with _LIVE_LOCK:
        components = list(_LIVE.values())
    for component in reversed(components):
        with contextlib.suppress(Exception):
            component.stop()


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


def keep_data_by_default() -> bool:
    """``TESTBED_KEEP_DATA=1`` keeps every component's dir (logs, configs) for a post-mortem."""
    return os.environ.get(KEEP_DATA_ENV) == "1"


# --- the shared lifecycle ----------------------------------------------------------------------------


@dataclass
class StartupTimings:
    """Seconds per start-up phase, in order, printed so slow set-ups get noticed."""

    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (recorded when it completes)."""
        started = time.monotonic()
        yield
        self.phases[name] = time.monotonic() - started

    @property
    def total(self) -> float:
        """Sum of all phases."""
        return sum(self.phases.values())

    def __str__(self) -> str:
        return ", ".join([*(f"{k} {v:.1f}s" for k, v in self.phases.items()), f"total {self.total:.1f}s"])


@dataclass(eq=False, kw_only=True)
class Component:
    """Processes sharing one temp dir, started by ``_start()`` and torn down together.

    Use as a context manager, or call ``start()``/``stop()``; ``stop()`` is idempotent and also runs at
    exit and on SIGINT/SIGTERM/SIGHUP. A failed ``start()`` stops what it started before raising.
    """

    name: ClassVar[str] = "component"
    error: ClassVar[type[ComponentError]] = ComponentError
    stop_grace: ClassVar[float] = 5.0

    keep_data_dir: bool = field(default_factory=keep_data_by_default)
    data_dir: Path = field(init=False, default_factory=Path)
    processes: list[Process] = field(init=False, default_factory=list)
    timings: StartupTimings = field(init=False, default_factory=StartupTimings)
    _stopped: bool = field(init=False, default=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the data dir (with ``logs/``) and run ``_start``."""
        _install_exit_hooks()
        _sweep_stale_data_dirs()
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"{DATA_DIR_PREFIX}{self.name}-"))
        (self.data_dir / OWNER_FILE).write_text(str(os.getpid()))
        (self.data_dir / "logs").mkdir()
        self._stopped = False
        with _LIVE_LOCK:
            _LIVE[id(self)] = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process (newest first), remove the data dir unless it is to be kept."""
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(self.stop_grace)
        if self.keep_data_dir:
            sys.stderr.write(f"testbed: kept {self.name} data dir {self.data_dir}\n")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Process:
        """Start one process of this component, logging to ``logs/<name>.log``."""
        proc = Process(name, argv, self.data_dir / "logs" / f"{name}.log")
        self.processes.append(proc)
        proc.start(env)
        return proc

    def wait_ready(self, proc: Process, what: str, check: Callable[[], bool], timeout: float) -> None:
        """``wait_until`` that stops as soon as ``proc`` exits; failures carry its log."""

        def give_up() -> None:
            if not proc.alive():
                raise self.error(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")

        try:
            wait_until(what, check, timeout, give_up=give_up)
        except WaitTimeout as err:
            raise self.error(f"{err}\n{proc.log_tail()}") from None

    def logs(self, lines: int = 60) -> Iterator[tuple[str, str]]:
        """(process, last log lines) for every process, to attach to failure reports."""
        for proc in self.processes:
            yield proc.name, proc.log_tail(lines)

    def log_tail(self, lines: int = 60) -> str:
        """The end of every process's log, each under its name."""
        return "\n".join(f"--- {name} ---\n{tail}" for name, tail in self.logs(lines)) or "(not started)"
