"""One challenge at a time: LB address -> Backend and companion route in place.

The interval starts when the observer sees the kube-dc stand-in's status write (the Service's address)
and ends when it has seen both the Backend and the route; the same watch delay sits at both ends.
Each challenge is removed before the next (as cert-manager cleans up), so the project's first solver
port is free again.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from bench.bed import Bed, Window
from bench.load import Solver
from bench.measure import summary
from bench.observe import Timeline
from bench.subjects import Subject

GAP = 0.5
"""Seconds between challenges: the previous one's clean-up (garbage collector, the reconciler's deletes) stays
out of the next, and the reconciler's default token bucket (20/s, burst 40) refills: at ~2 challenges a
second its Events and deletes alone would drain it and every write would wait its turn."""


def is_routed(timeline: Timeline, solver: Solver) -> bool:
    """Whether the observer has seen the solver's Backend and companion route."""
    return timeline.routed_at(solver.key) is not None


def hostnames(namespace: str, tag: str, count: int) -> list[str]:
    return [f"{tag}{i}.{namespace}.bench.test" for i in range(count)]


async def sequential(bed: Bed, namespace: str, hosts: list[str], timeout: float = 30.0) -> list[dict[str, float]]:
    """Wire one challenge after the other; per challenge the observed steps relative to its address."""
    out: list[dict[str, float]] = []
    timeline = bed.timeline
    for host in hosts:
        solver = await bed.load.solver(Solver(namespace, host))
        await timeline.until(partial(is_routed, timeline, solver), timeout)
        steps = dict(timeline.steps.get(solver.key, {}))
        routed = timeline.routed_at(solver.key)
        if routed is not None and "ip" in steps:
            out.append(
                {
                    "ip_to_routed": routed - steps["ip"],
                    "ip_to_backend": steps["backend"] - steps["ip"],
                    "backend_to_route": steps["route"] - steps["backend"],
                    "created_to_routed": routed - steps["added"],
                }
            )
        await bed.load.remove(solver)
        await asyncio.sleep(GAP)
    return out


def _writes(window: dict[str, Any], verbs: tuple[str, ...]) -> float:
    """Writes sent with these verbs, whatever their answer (`Kind/verb/result` keys)."""
    writes: dict[str, float] = window["writes"]
    return sum(n for key, n in writes.items() if key.split("/")[1] in verbs)


async def run(bed: Bed, subject: Subject, count: int) -> dict[str, Any]:
    prefix = bed.load.fresh("lat")
    [project] = await bed.load.projects(prefix, 1)
    hosts = hostnames(project.namespace, "l", count)
    await bed.load.claims([(project, h) for h in hosts])
    await subject.start(bed.kube)
    try:
        await asyncio.sleep(1.0)
        window = await Window(bed, subject).open()
        samples = await sequential(bed, project.namespace, hosts)
        measured = await window.close()
    finally:
        await subject.stop()
    ip_to_routed = [s["ip_to_routed"] for s in samples]
    return {
        "subject": subject.name,
        "args": subject.args,
        "challenges": count,
        "wired": len(samples),
        "ip_to_routed_ms": summary(ip_to_routed, 1000),
        "ip_to_backend_ms": summary((s["ip_to_backend"] for s in samples), 1000),
        "backend_to_route_ms": summary((s["backend_to_route"] for s in samples), 1000),
        "created_to_routed_ms": summary((s["created_to_routed"] for s in samples), 1000),
        "samples_ms": [round(v * 1000, 3) for v in ip_to_routed],
        "cpu_per_challenge_ms": 1000 * measured["cpu_seconds"] / max(1, len(samples)),
        "writes_per_challenge": _writes(measured, ("patch", "create")) / max(1, len(samples)),
        "cleanup_writes_per_challenge": _writes(measured, ("delete",)) / max(1, len(samples)),
        "limiter_wait_seconds": measured["throttled_seconds"],
        "window": measured,
    }
