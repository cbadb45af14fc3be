"""A renewal storm: many challenges over many projects created at once.

Projects (and, when the CRD is served, their DomainClaims: a renewal finds its names claimed) and the
pending Challenges exist before the subject starts; the clock starts when the generator starts creating
every solver Service and route (cert-manager's Present), and stops when the observer has seen every
Backend and companion route. Per challenge: observed
Service creation -> routed, with the steps in between (-> LoadBalancer, -> address, -> routed).
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from bench.bed import Bed, Window
from bench.load import Solver, bounded
from bench.measure import summary
from bench.subjects import Subject


async def run(bed: Bed, subject: Subject, challenges: int, projects: int, timeout: float) -> dict[str, Any]:
    prefix = bed.load.fresh("st")
    projs = await bed.load.projects(prefix, projects, orgs=max(1, projects // 50))
    solvers = [
        Solver(projs[i % projects].namespace, f"s{i}.{projs[i % projects].namespace}.bench.test")
        for i in range(challenges)
    ]
    by_ns = {p.namespace: p for p in projs}
    claims = await bed.load.claims([(by_ns[s.namespace], s.dns_name) for s in solvers])
    await bed.load.challenges(solvers)  # the Order controller's part; the storm is cert-manager's Present
    await subject.start(bed.kube)
    timeline = bed.timeline
    try:
        await asyncio.sleep(1.0)
        window = await Window(bed, subject).open()
        t0 = time.monotonic()
        generating = asyncio.create_task(bed.load.presents(solvers))

        def all_routed() -> bool:
            return generating.done() and all(timeline.routed_at(s.key) is not None for s in solvers)

        done = await timeline.until(all_routed, timeout)
        generated = await generating
        measured = await window.close()
    finally:
        await subject.stop()
    created_at = max(s.created for s in generated)
    steps = [timeline.steps.get(s.key, {}) for s in solvers]
    routed = [timeline.routed_at(s.key) for s in solvers]
    wired = [(st, r) for st, r in zip(steps, routed, strict=True) if r is not None and "added" in st]
    result = {
        "subject": subject.name,
        "args": subject.args,
        "challenges": challenges,
        "projects": projects,
        "claims_precreated": claims,
        "all_wired": done,
        "wired": len(wired),
        "total_seconds": (max(r for _, r in wired) - t0) if wired else None,
        "generator_seconds": created_at - t0,
        "created_to_routed_ms": summary((r - st["added"] for st, r in wired), 1000),
        "created_to_lb_ms": summary((st["lb"] - st["added"] for st, _ in wired if "lb" in st), 1000),
        "lb_to_ip_ms": summary((st["ip"] - st["lb"] for st, _ in wired if "ip" in st and "lb" in st), 1000),
        "ip_to_routed_ms": summary((r - st["ip"] for st, r in wired if "ip" in st), 1000),
        "timeline_s": sorted(round(r - t0, 4) for _, r in wired),
        "lb_timeline_s": sorted(round(st["lb"] - t0, 4) for st, _ in wired if "lb" in st),
        "writes_per_challenge": measured["writes_ok"] / challenges,
        "api_requests_per_challenge": api_requests(measured) / challenges,
        "cpu_per_challenge_ms": 1000 * measured["cpu_seconds"] / challenges,
        "window": measured,
    }
    await cleanup(bed, generated)
    return result


def api_requests(window: dict[str, Any]) -> float:
    """Requests other than list and watch (writes, Events, reads), from either subject's counters."""
    requests: dict[str, float] = window["requests"]
    return sum(n for key, n in requests.items() if key.split("/")[0] not in ("list", "watch"))


async def cleanup(bed: Bed, solvers: list[Solver]) -> None:
    """Delete the solvers (their node ports are scarce: 2,768 in the cluster) and wait for the garbage
    collector, so the next run does not share the API server with this one's clean-up."""
    await bounded(partial(bed.load.remove, s) for s in solvers if s.service)
    await bed.load.drained(sorted({s.namespace for s in solvers}))
