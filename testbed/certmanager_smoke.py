"""``python -m testbed.certmanager_smoke``: the real cert-manager issues certificates through the shared gateway,
one after another, each measured against a baseline issued at the same time.

Builds (or reuses) every binary, re-executes itself in a private network namespace, starts the full stack
with the real cert-manager (``testbed.stack``) and the reconciler (ServiceAccount, cluster-wide, the given
route mode). Each run creates a cloud project and a baseline project (solver reachable through its Service's
endpoints, no reconciler), an Issuer in each, and the same one-name Certificate in both at once; it reports
time to Ready and cert-manager's self-check rounds per Challenge (immediate failures, lost rounds, lost
rounds right after a route revert), and checks the cloud Secret's chain against Pebble's root. Repeated
runs give the route-mode comparison the README quotes (``--route-mode patch --runs 20``).

Exit status 0 when every run issued. ``--json PATH`` writes every run's measurements.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from testbed import issuance
from testbed.certificates import certificate, secret_pems, verify_chain
from testbed.certmanager_controller import UPSTREAM_CHECK_RETRY_PERIOD
from testbed.harness import start_reconciler
from testbed.issuance import Issuance
from testbed.kube import SECRETS
from testbed.solvers import FAST_POD_START
from testbed.stack import FullStack, build_then_enter_netns, create_issuer, full_stack

READY_WITHIN = 300.0  # seconds; a lost self-check costs one retry period, several would be a finding


async def one_run(n: int, stack: FullStack, wait_instead: float | None, names: int) -> dict[str, Any]:
    """A cloud and a baseline project, an Issuer in each, the same Certificate in both at once."""
    cloud, baseline = await stack.project("cloud"), await stack.project("baseline")
    options = {"wait_instead_of_self_check": wait_instead}
    for p in (cloud, baseline):
        await create_issuer(stack.api, stack.issuer_body(p.namespace, **options))
    started = [
        await issuance.create(
            stack.api,
            certificate("app", p.namespace, dns_names=[f"n{i}.{p.namespace}.example.test" for i in range(names)]),
        )
        for p in (cloud, baseline)
    ]
    await issuance.wait_all_ready(stack.timeline, started, READY_WITHIN)
    rounds = stack.cm.rounds()
    done: list[Issuance] = [
        issuance.report(one, stack.timeline, rounds, stack.cm.check_retry_period) for one in started
    ]
    crt, key = secret_pems(await stack.api.get(SECRETS, "app-tls", cloud.namespace))
    verify_chain(crt, key, stack.pebble.roots_pem().encode())
    reverts = stack.cm.self_checks(cloud.namespace).route_reverts
    return {"run": n, "route_reverts": reverts, "cloud": done[0].as_dict(), "baseline": done[1].as_dict()}


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and lost-check counts over all runs."""

    def col(side: str, key: str) -> list[Any]:
        return [r[side][key] for r in results]

    challenges = {side: [c for r in results for c in r[side]["challenges"]] for side in ("cloud", "baseline")}
    return {
        "runs": len(results),
        "median_ready_s": {side: statistics.median(col(side, "time_to_ready_s")) for side in challenges},
        "max_ready_s": {side: max(col(side, "time_to_ready_s")) for side in challenges},
        "challenges_that_lost_a_check": {side: sum(c["lost"] > 0 for c in chs) for side, chs in challenges.items()},
        "lost_checks": {side: sum(c["lost"] for c in chs) for side, chs in challenges.items()},
        "lost_after_revert": {side: sum(c["lost_after_revert"] for c in chs) for side, chs in challenges.items()},
        "route_reverts": sum(r["route_reverts"] for r in results),
    }


async def run(args: argparse.Namespace) -> int:
    """Everything, inside the network namespace."""
    results: list[dict[str, Any]] = []
    failures = 0
    log_dir = Path(tempfile.mkdtemp(prefix="cm-smoke-"))
    async with full_stack(keep=args.keep, pod_start=args.pod_start, check_retry_period=args.retry_period) as stack:
        rec = await start_reconciler(
            stack.plane, stack.api, log_dir / "reconciler.log", args=["--route-mode", args.route_mode]
        )
        try:
            for n in range(1, args.runs + 1):
                try:
                    result = await one_run(n, stack, args.wait_instead, args.names)
                except Exception as err:  # reported; the next run still goes
                    failures += 1
                    print(f"FAIL run {n}: {err!r}\n{stack.cm.log()[-3000:]}", flush=True)
                    continue
                results.append(result)
                c, b = result["cloud"], result["baseline"]
                print(
                    f"run {n}: cloud {c['time_to_ready_s']}s (lost {c['lost_checks']}), baseline "
                    f"{b['time_to_ready_s']}s (lost {b['lost_checks']}), reverts {result['route_reverts']}",
                    flush=True,
                )
        finally:
            await rec.terminate()
    report = {
        "route_mode": args.route_mode,
        "wait_instead_of_self_check": args.wait_instead,
        "pod_start_s": args.pod_start,
        "runs": results,
    }
    if results:
        report["summary"] = summary(results)
        print(json.dumps(report["summary"], indent=2))
    if args.json:
        await anyio.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'FAILED' if failures else 'PASSED'}: {len(results)}/{args.runs} issued; logs in {log_dir}")
    return 1 if failures or not results else 0


def main(argv: list[str] | None = None) -> int:
    """Build outside the namespace (needs the registries), then run everything inside one."""
    parser = argparse.ArgumentParser(prog="python -m testbed.certmanager_smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="certificates to issue (each with a baseline), in turn")
    parser.add_argument("--names", type=int, default=1, help="DNS names per certificate")
    parser.add_argument("--route-mode", choices=["shadow", "patch"], default="shadow")
    parser.add_argument("--wait-instead", type=float, default=None, help="Issuer waitInsteadOfSelfCheck, seconds")
    parser.add_argument("--pod-start", type=float, default=FAST_POD_START, help="seconds until a solver Pod serves")
    parser.add_argument("--retry-period", type=float, default=UPSTREAM_CHECK_RETRY_PERIOD, help="seconds")
    parser.add_argument("--json", help="write every run's measurements to this file")
    parser.add_argument("--keep", action="store_true", help="keep every component's temp dir (logs)")
    args = parser.parse_args(argv)
    build_then_enter_netns()
    return anyio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
