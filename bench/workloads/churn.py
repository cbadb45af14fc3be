"""Status churn: cert-manager v1.21's waitInsteadOfSelfCheck rewrites each waiting Challenge's status about
250 times a second (its reason counts down). None of it changes anything a wiring decision reads.

First the churned challenges are wired and left waiting. Then (a) churn alone for a while: subject CPU
per Challenge event it received, and the work-queue adds it caused (should be none); (b) churn again while
challenges are wired one at a time in another project: wiring latency under churn.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

from bench.bed import Bed, Window
from bench.load import Solver
from bench.measure import summary
from bench.subjects import Subject
from bench.workloads.latency import hostnames, sequential

PER_PROJECT = 5
"""Waiting challenges per project: well under the reconciler's per-project limit of concurrent challenges."""


def challenge_events(window: dict[str, Any]) -> float:
    """Challenge watch events the subject received (reconciler: MODIFIED; floor: all)."""
    events: dict[str, float] = window["events"]
    return events.get("challenges/MODIFIED", 0.0) + events.get("challenges/ALL", 0.0)


async def run(bed: Bed, subject: Subject, churned: int, rate: float, seconds: float, wired: int) -> dict[str, Any]:
    prefix = bed.load.fresh("ch")
    *waiting, wiring = await bed.load.projects(prefix, 1 + math.ceil(churned / PER_PROJECT))
    owners = [
        (waiting[i // PER_PROJECT], f"w{i}.{waiting[i // PER_PROJECT].namespace}.bench.test") for i in range(churned)
    ]
    solvers = [Solver(project.namespace, host) for project, host in owners]
    hosts = hostnames(wiring.namespace, "c", wired)
    await bed.load.claims([*owners, *((wiring, h) for h in hosts)])
    await subject.start(bed.kube)
    timeline = bed.timeline
    try:
        await bed.load.solvers(solvers)
        await timeline.until(lambda: all(timeline.routed_at(s.key) is not None for s in solvers), 120)
        await asyncio.sleep(1.0)

        window = await Window(bed, subject).open()
        writes = await bed.load.churn(solvers, rate, seconds)
        alone = await window.close()

        window = await Window(bed, subject).open()
        churning = asyncio.create_task(bed.load.churn(solvers, rate, 3600.0))
        try:
            samples = await sequential(bed, wiring.namespace, hosts)
        finally:
            churning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await churning
        during = await window.close()
    finally:
        await subject.stop()
    events = challenge_events(alone)
    ip_to_routed = [s["ip_to_routed"] for s in samples]
    return {
        "subject": subject.name,
        "args": subject.args,
        "churned_challenges": churned,
        "target_rate_per_challenge": rate,
        "status_writes": writes,
        "status_writes_per_second": writes / alone["seconds"],
        "challenge_events": events,
        "cpu_seconds": alone["cpu_seconds"],
        "cpu_per_event_us": 1e6 * alone["cpu_seconds"] / events if events else None,
        "queue_adds": alone["queue_adds"],
        "reconciles": alone["reconciles"],
        "writes": alone["writes"],
        "wiring_during_churn": {
            "challenges": wired,
            "wired": len(samples),
            "ip_to_routed_ms": summary(ip_to_routed, 1000),
            "samples_ms": [round(v * 1000, 3) for v in ip_to_routed],
            "challenge_events": challenge_events(during),
            "cpu_seconds": during["cpu_seconds"],
        },
        "window": alone,
    }
