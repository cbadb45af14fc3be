"""Renewal storm: many Certificates at once through the real cert-manager, cloud projects against a baseline.

``python -m bench.renewal_storm`` (from the repository root; builds what it needs, then runs in a private
network namespace) starts its own test bed: control plane, Envoy Gateway + Envoy, challtestsrv + Pebble, the
real cert-manager at its defaults (60 concurrent challenges, 5 workers, 10 s check retry period), the
kube-dc stand-in and the solver servers (a solver Pod serves 1 s after it appeared). One ClusterIssuer
serves every project (the PRD's platform-wide issuer). Then two phases on the same test bed:

- baseline: ``--projects`` public projects whose solver Services the gateway reaches itself (no reconciler
  running), ``--certificates`` Certificates created at once, a third of them with 2-3 names;
- cloud: the same numbers in cloud projects, with the reconciler running cluster-wide as its ServiceAccount
  (route mode shadow); its CPU and memory are read from /proc while the phase runs.

Each phase waits until every Certificate is Ready and cert-manager has cleaned up, then reports time until
all Ready, per-certificate p50/p95/p99, when Challenges were scheduled and wired, self-check rounds and the
rounds lost per Challenge (failed after the first retry wait, see ``testbed.certmanager_log``), and whether a
lost round came before the reconciler had wired the route. Results go to ``bench/results/renewal_storm.json``,
``.md`` (the table) and ``.png`` (pending / wired / valid / Ready over time). Not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from bench.renewal_storm_report import (
    ChallengeSpan,
    ProcSample,
    distribution,
    markdown,
    parse_proc,
    plot,
    process_usage,
    series,
)
from testbed import issuance
from testbed.certificates import certificate, secret_pems, verify_chain
from testbed.certmanager_controller import UPSTREAM_CHECK_RETRY_PERIOD
from testbed.certmanager_log import ChallengeRounds, parse_log
from testbed.harness import Metrics, Project, start_reconciler
from testbed.issuance import ChallengeReport, Issuance
from testbed.kube import CHALLENGES, SECRETS, wait_for
from testbed.polling import WaitTimeout
from testbed.solvers import FAST_POD_START
from testbed.stack import FullStack, build_then_enter_netns, create_issuer, full_stack

RESULTS = Path(__file__).resolve().parent / "results"
CLUSTER_ISSUER = "storm"
SAMPLE_SECONDS = 0.5
SECRETS_VERIFIED = 10  # Secrets whose chain is checked against Pebble's root, per phase


@dataclass(frozen=True)
class CertSpec:
    """One Certificate of the storm: which project, its name, how many DNS names."""

    project: int
    name: str
    names: int


def storm_shape(certificates: int, projects: int) -> list[CertSpec]:
    """Certificates spread round-robin over the projects; every third has 2 or 3 names (alternating)."""
    return [CertSpec(i % projects, f"c{i}", (2 + (i // 3) % 2) if i % 3 == 0 else 1) for i in range(certificates)]


@dataclass
class Sampler:
    """/proc readings of some processes every ``SAMPLE_SECONDS`` while running."""

    pids: dict[str, int]
    samples: dict[str, list[ProcSample]] = field(default_factory=dict)

    def read(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        now = time.monotonic()
        for name, pid in self.pids.items():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            cpu, rss = parse_proc(stat, status, ticks)
            self.samples.setdefault(name, []).append(ProcSample(now, cpu, rss))

    async def run(self) -> None:
        while True:
            self.read()
            await anyio.sleep(SAMPLE_SECONDS)


@contextlib.asynccontextmanager
async def sampling(pids: dict[str, int]) -> AsyncIterator[Sampler]:
    """Sample while the block runs (a first and a last reading are always taken)."""
    sampler = Sampler(pids)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler.run)
        try:
            yield sampler
        finally:
            sampler.read()
            tg.cancel_scope.cancel()


async def make_projects(stack: FullStack, kind: str, count: int) -> list[Project]:
    """``count`` projects of the phase's kind (``cloud`` or ``baseline``)."""
    return [await stack.project(kind) for _ in range(count)]


async def create_all(stack: FullStack, projects: Sequence[Project], specs: Sequence[CertSpec]) -> list[Issuance]:
    """Every Certificate of the phase, created concurrently (a storm, not a queue)."""
    started: list[Issuance] = []

    async def one(spec: CertSpec) -> None:
        p = projects[spec.project]
        names = [f"{spec.name}-n{k}.{p.namespace}.example.test" for k in range(spec.names)]
        cert = certificate(
            spec.name, p.namespace, dns_names=names, issuer_kind="ClusterIssuer", issuer_name=CLUSTER_ISSUER
        )
        started.append(await issuance.create(stack.api, cert))

    async with anyio.create_task_group() as tg:
        for spec in specs:
            tg.start_soon(one, spec)
    return started


async def wait_cleaned_up(stack: FullStack, projects: Sequence[Project], within: float = 300) -> float:
    """Until no Challenge is left in the phase's projects (cert-manager's clean-up); seconds it took."""
    t0 = time.monotonic()
    namespaces = {p.namespace for p in projects}

    async def clean() -> bool:
        return not any(c["metadata"]["namespace"] in namespaces for c in await stack.api.list(CHALLENGES))

    with contextlib.suppress(WaitTimeout):
        await wait_for(clean, within=within, interval=1.0, what="cert-manager's clean-up")
    return round(time.monotonic() - t0, 1)


def _shift(t: float | None, by: float) -> float | None:
    return None if t is None else t + by


def _r(t: float | None) -> float | None:
    return None if t is None else round(t, 3)


def _tail(ch: ChallengeReport) -> list[Any]:
    return [ch.state, ch.rounds.rounds, ch.rounds.lost]


def _p50_p99(d: dict[str, float]) -> str:
    return f"{d.get('p50')} / {d.get('p99')}" if d else "—"


def challenge_stats(
    done: Sequence[Issuance], rounds: dict[tuple[str, str], ChallengeRounds], phase_start: float
) -> dict[str, Any]:
    """Per-Challenge numbers of a phase: scheduling, wiring, rounds, lost rounds and why they failed."""
    reports = [(one, ch) for one in done for ch in one.challenges]
    lost_reasons: Counter[str] = Counter()
    lost_before_wired = 0
    for one, ch in reports:
        cr = rounds.get((one.namespace, ch.name))
        if cr is None or not cr.rounds:
            continue
        first = cr.rounds[0].start
        for r in cr.failed:
            if r.start - first < UPSTREAM_CHECK_RETRY_PERIOD / 2:
                continue
            lost_reasons[r.failure or "?"] += 1
            wired_at = None if ch.wired is None else one.started + ch.wired
            if wired_at is None or r.start < wired_at:
                lost_before_wired += 1
    scheduled = [ch.scheduled for _, ch in reports if ch.scheduled is not None]
    presented = [ch.solver - ch.scheduled for _, ch in reports if ch.solver is not None and ch.scheduled is not None]
    wired_after = [ch.wired - ch.solver for _, ch in reports if ch.wired is not None and ch.solver is not None]
    lost = sum(ch.rounds.lost for _, ch in reports)
    return {
        "challenges": len(reports),
        "challenges_valid": f"{sum(ch.state == 'valid' for _, ch in reports)}/{len(reports)}",
        "scheduled_s": distribution(scheduled),
        "solver_after_scheduled_s": distribution(presented),
        "wired_after_solver_s": distribution(wired_after),
        "rounds_per_challenge": round(sum(ch.rounds.rounds for _, ch in reports) / max(1, len(reports)), 2),
        "immediate_failed_rounds": sum(ch.rounds.immediate_failed for _, ch in reports),
        "lost_rounds": lost,
        "lost_per_challenge": round(lost / max(1, len(reports)), 3),
        "challenges_that_lost_a_round": sum(ch.rounds.lost > 0 for _, ch in reports),
        "lost_before_wired": lost_before_wired,
        "challenges_with_a_new_solver": sum(ch.solver_services > 1 for _, ch in reports),
        "lost_reasons": dict(lost_reasons),
        "challenge_records": {
            "columns": ["challenge", "scheduled_s", "solver_s", "wired_s", "final_s", "state", "rounds", "lost"],
            "rows": [
                [ch.name, *(_r(t) for t in (ch.scheduled, ch.solver, ch.wired, ch.final)), *_tail(ch)]
                for _, ch in reports
            ],
        },
        "spans": [
            ChallengeSpan(
                created=one.started + ch.created - phase_start,
                scheduled=_shift(ch.scheduled, one.started - phase_start),
                wired=_shift(ch.wired, one.started - phase_start),
                final=_shift(ch.final, one.started - phase_start),
                valid=ch.state == "valid",
            )
            for one, ch in reports
        ],
    }


async def verify_some(stack: FullStack, done: Sequence[Issuance]) -> int:
    """Check the chains of a few Secrets against Pebble's root; returns how many were checked."""
    root = stack.pebble.roots_pem().encode()
    for one in done[:SECRETS_VERIFIED]:
        crt, key = secret_pems(await stack.api.get(SECRETS, f"{one.name}-tls", one.namespace))
        verify_chain(crt, key, root)
    return min(len(done), SECRETS_VERIFIED)


async def run_phase(
    stack: FullStack, kind: str, specs: Sequence[CertSpec], projects: int, pids: dict[str, int], timeout: float
) -> dict[str, Any]:
    """One phase: projects, the storm, wait for all Ready, measure."""
    made = await make_projects(stack, kind, projects)
    print(f"[{kind}] {projects} projects ready; creating {len(specs)} Certificates at once", flush=True)
    phase_start = time.time()
    async with sampling(pids) as sampler:
        started = await create_all(stack, made, specs)
        print(f"[{kind}] created in {time.time() - phase_start:.1f}s; waiting for Ready", flush=True)
        try:
            await issuance.wait_all_ready(stack.timeline, started, timeout)
        except TimeoutError:
            print(f"[{kind}] not all Ready after {timeout}s", flush=True)
    cleanup = await wait_cleaned_up(stack, made)
    rounds = stack.cm.rounds()
    done = [issuance.report(one, stack.timeline, rounds, stack.cm.check_retry_period) for one in started]
    ready = [one for one in done if one.ready_at is not None]
    all_ready = max((one.ready_at or 0.0) for one in ready) - phase_start if ready else float("nan")
    stats = challenge_stats(done, rounds, phase_start)
    spans = stats.pop("spans")
    result: dict[str, Any] = {
        "projects": projects,
        "certificates": len(specs),
        "ready_certificates": f"{len(ready)}/{len(specs)}",
        "all_ready_s": round(all_ready, 2),
        "time_to_ready_s": distribution([one.seconds for one in ready]),
        **stats,
        "cleanup_after_ready_s": cleanup,
        "secrets_verified": await verify_some(stack, ready),
        "series": series(spans, [one.ready_at - phase_start for one in ready if one.ready_at], until=all_ready + 5),
    }
    for name, samples in sampler.samples.items():
        result[name] = process_usage(samples)
    result["solver_after_scheduled"] = _p50_p99(result["solver_after_scheduled_s"])
    result["wired_after_solver"] = _p50_p99(result["wired_after_solver_s"])
    if "reconciler" in result:
        r = result["reconciler"]
        result["reconciler_cpu"] = f"{r.get('cpu_percent_mean')} / {r.get('cpu_percent_peak')}"
    print(f"[{kind}] all Ready in {all_ready:.1f}s; {json.dumps(result['time_to_ready_s'])}", flush=True)
    return result


def _sum_by(m: Metrics, name: str, *labels: str) -> dict[str, float]:
    """A counter summed over every label but ``labels`` (e.g. over projects)."""
    sums: dict[str, float] = {}
    for sample in m.find(name):
        key = "/".join(sample.labels.get(label, "") for label in labels)
        sums[key] = sums.get(key, 0.0) + sample.value
    return sums


def reconciler_summary(m: Metrics) -> dict[str, Any]:
    """What the reconciler says about the cloud phase."""
    count = m.total("acme_gateway_route_wiring_seconds_count")
    return {
        "route_wiring_seconds_mean": round(m.total("acme_gateway_route_wiring_seconds_sum") / count, 4)
        if count
        else None,
        "routes_wired": count,
        "challenge_outcomes": _sum_by(m, "acme_gateway_challenge_outcomes_total", "outcome", "state"),
        "writes": _sum_by(m, "acme_gateway_writes_total", "kind", "verb", "result"),
        "reconcile_errors": m.total("acme_gateway_reconcile_errors_total"),
        "events": _sum_by(m, "acme_gateway_events_total", "type", "reason"),
        "api_requests": _sum_by(m, "acme_gateway_api_requests_total", "verb"),
        "rate_limiter_wait_seconds": round(m.total("acme_gateway_api_client_rate_limiter_seconds_sum"), 2),
        "gateway_probes": _sum_by(m, "acme_gateway_gateway_probes_total", "result"),
    }


async def storm(args: argparse.Namespace) -> dict[str, Any]:
    """Both phases on one test bed, inside the network namespace."""
    specs = storm_shape(args.certificates, args.projects)
    log_dir = Path(tempfile.mkdtemp(prefix="renewal-storm-"))
    report: dict[str, Any] = {
        "title": f"{args.certificates} Certificates in {args.projects} projects created at once (real cert-manager)",
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": os.getloadavg()},
        "shape": {
            "certificates": args.certificates,
            "projects": args.projects,
            "names": dict(sorted(Counter(s.names for s in specs).items())),
            "challenges_per_phase": sum(s.names for s in specs),
        },
        "cert_manager": {"max_concurrent_challenges": 60, "workers": 5, "check_retry_period_s": 10},
        "pod_start_s": args.pod_start,
        "phases": {},
    }
    async with full_stack(keep=args.keep, pod_start=args.pod_start) as stack:
        await create_issuer(stack.api, stack.issuer_body(None, name=CLUSTER_ISSUER))
        assert stack.cm.process is not None
        assert stack.cm.process.popen is not None
        pids = {"cert_manager": stack.cm.process.popen.pid}
        for kind in args.order.split(","):
            if kind == "baseline":
                report["phases"]["baseline"] = await run_phase(stack, kind, specs, args.projects, pids, args.timeout)
                continue
            rec = await start_reconciler(stack.plane, stack.api, log_dir / "reconciler.log")
            try:
                assert rec.process is not None
                cloud_pids = {**pids, "reconciler": rec.process.pid}
                report["phases"]["cloud"] = await run_phase(stack, kind, specs, args.projects, cloud_pids, args.timeout)
                report["phases"]["cloud"]["reconciler_metrics"] = reconciler_summary(await rec.metrics())
            finally:
                await rec.terminate()
        errors = list(parse_log("\n".join(stack.cm.errors())))
        report["cert_manager_errors"] = dict(Counter(line.message for line in errors).most_common(10))
    phases = report["phases"]
    if "baseline" in phases and "cloud" in phases:
        report["cloud_over_baseline"] = {
            "all_ready": round(phases["cloud"]["all_ready_s"] / phases["baseline"]["all_ready_s"], 3),
            "p50": round(phases["cloud"]["time_to_ready_s"]["p50"] / phases["baseline"]["time_to_ready_s"]["p50"], 3),
            "p99": round(phases["cloud"]["time_to_ready_s"]["p99"] / phases["baseline"]["time_to_ready_s"]["p99"], 3),
        }
    report["reconciler_log"] = str(log_dir / "reconciler.log")
    return report


def write_results(report: dict[str, Any], out: Path) -> None:
    """renewal_storm.json, .md (the table) and .png (the timeline) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "renewal_storm.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "renewal_storm.md").write_text(f"# {report['title']}\n\n{markdown(report)}")
    plot(report, out / "renewal_storm.png")


def main(argv: list[str] | None = None) -> int:
    """Build outside the network namespace (needs the registries), then run everything inside one."""
    parser = argparse.ArgumentParser(prog="python -m bench.renewal_storm", description=__doc__.split("\n")[0])
    parser.add_argument("--certificates", type=int, default=150)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--order", default="baseline,cloud", help="phases in order: baseline,cloud or cloud,baseline")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a phase may take")
    parser.add_argument("--pod-start", type=float, default=FAST_POD_START, help="seconds until a solver Pod serves")
    parser.add_argument("--out", default=str(RESULTS), help="where the results go")
    parser.add_argument("--keep", action="store_true", help="keep every component's temp dir (logs)")
    args = parser.parse_args(argv)
    if set(args.order.split(",")) - {"baseline", "cloud"}:
        parser.error("--order takes baseline and/or cloud")
    build_then_enter_netns()
    report = anyio.run(storm, args)
    write_results(report, Path(args.out))
    print(markdown(report))
    print(f"results in {args.out}; reconciler log in {report['reconciler_log']}")
    complete = f"{args.certificates}/{args.certificates}"
    return 0 if all(p["ready_certificates"] == complete for p in report["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
