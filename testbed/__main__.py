"""``python -m testbed up [--keep-running]`` (the control plane alone, to explore or time it) and
``python -m testbed demo [--exit]`` (one ACME challenge wired end to end; the README's run command)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading

import anyio

from testbed.controlplane import ControlPlane
from testbed.demo import demo


def up(keep_running: bool) -> int:
    """Start, print where things are, and stop again unless asked to wait for Ctrl-C."""
    with ControlPlane() as plane:
        print(f"server:                {plane.server_url}")
        print(f"admin kubeconfig:      {plane.admin_kubeconfig}")
        print(f"reconciler kubeconfig: {plane.reconciler_kubeconfig}")
        print(f"logs:                  {plane.data_dir / 'logs'}")
        print(f"timings:               {plane.timings}", flush=True)
        if keep_running:
            print("running; Ctrl-C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it."""
    parser = argparse.ArgumentParser(prog="python -m testbed")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start etcd, kube-apiserver, kube-controller-manager and the CRDs")
    up_parser.add_argument("--keep-running", action="store_true", help="wait for Ctrl-C before stopping")
    demo_parser = sub.add_parser("demo", help="start everything and wire one ACME challenge in a cloud project")
    demo_parser.add_argument("--exit", action="store_true", help="stop after the walk-through instead of waiting")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.keep_running)
    if args.command == "demo":
        return anyio.run(demo, not args.exit)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
