"""`python -m reconciler run|--help|--version`. Flags override `RECONCILER_*` environment variables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import anyio
from pydantic import ValidationError

from reconciler import __version__
from reconciler.config import LogFormat, Settings
from reconciler.policy import BackendMode, RouteMode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler",
        description="Wires cert-manager HTTP-01 solvers in kube-dc cloud projects to a shared Envoy Gateway. "
        "Every flag can also be set as an environment variable RECONCILER_<FLAG_NAME> "
        "(e.g. RECONCILER_BACKEND_MODE=acme).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the controller", description="Run the controller until SIGTERM/SIGINT.")
    a = run.add_argument
    a("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster config, ~/.kube/config)")
    a("--context", help="kubeconfig context")
    a(
        "--metrics-bind-address",
        metavar="HOST:PORT",
        help="address for /metrics /healthz /readyz (default 0.0.0.0:8080)",
    )
    a("--namespaces", help="comma-separated namespaces to watch (default: all)")
    a("--backend-mode", choices=[m.value for m in BackendMode], help="which Services get a managed Backend")
    a("--route-mode", choices=[m.value for m in RouteMode], help="how challenge paths reach the Backend")
    a("--eip-name", help="EIP solver Services bind on (default default-gw)")
    a("--solver-port-range", metavar="LOW-HIGH", help="external ports for solver Services on the EIP (8089-8188)")
    a(
        "--max-challenges-per-project",
        type=int,
        metavar="N",
        help="challenges of one project wired at once; the rest wait, oldest first (default 10)",
    )
    a("--dry-run", action="store_true", default=None, help="decide and log every write, send none")
    a(
        "--probe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="GET routed challenge paths through the gateway and tell the Challenge what it answers (default on)",
    )
    a("--probe-address", metavar="HOST[:PORT]", help="where the probe reaches the gateway (default: its Gateway's)")
    a("--address-timeout", type=float, metavar="SECONDS", help="EIP address wait before a NoAddress Warning (30)")
    a("--service-workers", type=int)
    a("--backend-workers", type=int)
    a("--route-workers", type=int)
    a("--challenge-workers", type=int)
    a("--qps", type=float, help="client-side API request rate (default 0: no client-side limit)")
    a("--burst", type=int, help="client-side API request burst with --qps (default 40)")
    a("--resync-period", type=float, help="seconds between safety resyncs, 0 = off (default 600)")
    a("--leader-elect", action="store_true", default=None, help="only the Lease holder writes (for >1 replica)")
    a("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    a("--log-format", choices=[f.value for f in LogFormat])
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    return Settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help()
        return 2
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    from reconciler import log as logsetup
    from reconciler.app import serve

    logsetup.configure(settings.log_level, settings.log_format.value)
    try:
        return anyio.run(serve, settings)
    except KeyboardInterrupt:
        return 130
