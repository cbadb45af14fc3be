"""The README's run command without a cluster (`hack/run` -> `python -m testbed demo`) really wires a
challenge: it starts its own control plane, so this also proves the test bed starts from scratch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_wires_one_challenge_and_cleans_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "testbed", "demo", "--exit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    for step in (
        "-> LoadBalancer",
        "kube-dc (stand-in): address",
        "reconciler: Backend",
        "-acme (",
        "untouched",
        "challenge valid",
        "'outcome': 'success'",
    ):
        assert step in out, f"missing {step!r} in:\n{out}"
    assert "reconciler running; metrics: http://127.0.0.1:" in out
