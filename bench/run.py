"""The benchmark of issue 12: the reconciler against the floor on one private test bed, every workload.

    python -m bench.run [--quick | --smoke] [--only latency,storm,churn,scale] [--profile] [--out DIR]

Starts its own control plane (real kube-apiserver, etcd, kube-controller-manager on loopback), the kube-dc
stand-in and the observer; runs each workload first with the reconciler, then with the floor, in fresh
namespaces; writes `results.json`, `results.md` and the PNG plots to `bench/results/<size>/`. Sizes:
full (the issue's), `--quick` (a tenth, minutes), `--smoke` (seconds, for the test suite). `--profile`
adds py-spy and tracemalloc passes (`bench.profile`) after the measured ones.
Scale runs last: its 50,000 Services stay until the bed stops.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import profile as profiling
from bench import report
from bench.bed import Bed, bed
from bench.measure import git_commit, machine
from bench.subjects import LIMITED
from bench.workloads import churn, latency, scale, storm
from testbed.paths import REPO_ROOT

WORKLOADS = ("latency", "storm", "churn", "scale")


@dataclass(frozen=True, slots=True)
class Sizes:
    name: str
    latency: int
    storm_challenges: int
    storm_projects: int
    churned: int
    churn_rate: float
    churn_seconds: float
    churn_wired: int
    scale_services: int
    scale_namespaces: int
    scale_projects: int
    scale_load_balancers: int
    idle_seconds: float


SIZES = {
    "full": Sizes("full", 200, 1000, 250, 60, 250.0, 10.0, 50, 50_000, 5_000, 5_000, 2_000, 600.0),
    "quick": Sizes("quick", 50, 200, 50, 10, 250.0, 5.0, 20, 5_000, 500, 500, 200, 30.0),
    "smoke": Sizes("smoke", 3, 6, 2, 2, 20.0, 1.0, 2, 40, 6, 4, 2, 1.0),
}


def _say(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}\n")
    sys.stderr.flush()


def _storm_timeout(size: Sizes) -> float:
    """Long enough for the default limiter (20 writes/s, 3 writes per challenge) twice over."""
    return max(60.0, size.storm_challenges * 3 / 20 * 2 + 60)


async def run_workloads(the_bed: Bed, size: Sizes, only: set[str], profiles: Path | None) -> dict[str, Any]:
    """Every workload in `only`, reconciler then floor; with `profiles`, the profile passes too (those that
    need the kube-dc stand-in before scale, which stops it)."""
    results: dict[str, Any] = {}
    sub = the_bed.subject
    if "latency" in only:
        results["latency"] = {}
        for subject in (sub("reconciler"), sub("floor")):
            _say(f"latency: {subject.name}, {size.latency} challenges one at a time")
            results["latency"][subject.name] = await latency.run(the_bed, subject, size.latency)
    if "storm" in only:
        results["storm"] = {}
        runs = (
            sub("reconciler", label="reconciler-default"),
            sub("floor", LIMITED, label="floor-qps20"),
            sub("reconciler", LIMITED, label="reconciler-qps20"),
            sub("floor", label="floor-unlimited"),
        )
        for subject in runs:
            _say(f"storm: {subject.name}, {size.storm_challenges} challenges / {size.storm_projects} projects")
            results["storm"][subject.name] = await storm.run(
                the_bed, subject, size.storm_challenges, size.storm_projects, _storm_timeout(size)
            )
    if "churn" in only:
        results["churn"] = {}
        for subject in (sub("reconciler"), sub("floor")):
            _say(f"churn: {subject.name}, {size.churned} challenges at {size.churn_rate:.0f} status writes/s each")
            results["churn"][subject.name] = await churn.run(
                the_bed, subject, size.churned, size.churn_rate, size.churn_seconds, size.churn_wired
            )
    if profiles is not None and only & {"storm", "churn"}:
        _say("profiling the reconciler: storm, churn")
        results["profiles"] = await profiling.wiring(the_bed, size, only, profiles)
    if "scale" in only:
        _say(f"scale: creating {size.scale_services} Services in {size.scale_namespaces} namespaces")
        population = await scale.populate(
            the_bed, size.scale_services, size.scale_namespaces, size.scale_projects, size.scale_load_balancers
        )
        results["scale"] = {"population": population}
        for subject in (sub("reconciler"), sub("floor")):
            _say(f"scale: {subject.name}, idle {size.idle_seconds:.0f} s")
            results["scale"][subject.name] = await scale.run(the_bed, subject, size.idle_seconds)
        if profiles is not None:
            _say("profiling the reconciler: scale start-up and memory")
            results.setdefault("profiles", {}).update(await profiling.at_scale(the_bed, size, profiles))
    if profiles is not None:
        profiling.save(profiles, results.get("profiles", {}))
    return results


async def main_async(size: Sizes, only: set[str], out_dir: Path, profile: bool, command: str) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    _say(f"{size.name} run; subject logs in {log_dir}")
    async with bed(log_dir) as the_bed:
        results = await run_workloads(the_bed, size, only, out_dir / "profiles" if profile else None)
        claims = {"served": the_bed.load.claims_served, "errors": the_bed.load.claim_errors[:5]}
    results["meta"] = {
        "size": size.name,
        "sizes": asdict(size),
        "command": command,
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(REPO_ROOT),
        "machine": machine(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "credentials": "both subjects run as the reconciler's ServiceAccount (manifests/rbac.yaml)",
        "domain_claims": claims,
        "subject_logs": str(log_dir),
    }
    results = {"meta": results.pop("meta"), **results}
    report.write(results, out_dir, _say)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="size", help="a tenth of the full size")
    group.add_argument("--smoke", action="store_const", const="smoke", dest="size", help="seconds; for tests")
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--profile", action="store_true", help="also profile the reconciler (py-spy, tracemalloc)")
    parser.add_argument("--idle", type=float, help="idle window of the scale workload, seconds")
    parser.add_argument("--out", type=Path, help="output directory (default bench/results/<size>)")
    args = parser.parse_args(argv)
    size = SIZES[args.size or "full"]
    if args.idle is not None:
        size = Sizes(**(asdict(size) | {"idle_seconds": args.idle}))
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if unknown := only - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    out_dir = args.out or REPO_ROOT / "bench" / "results" / size.name
    command = shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    asyncio.run(main_async(size, only, out_dir, args.profile, command))


if __name__ == "__main__":
    main()
