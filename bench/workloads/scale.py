"""A large, settled cluster: many Services (mostly ClusterIP) in many project namespaces, a LoadBalancer
Service with its address on the EIP in some of them, and nothing for the reconciler to do.

Measured per subject: time from process start to /readyz 200, memory once the work after start-up has
settled, the reconciles it ran for objects that cannot matter, its writes, and CPU over an idle window.
The kube-dc stand-in is stopped first (it rescans every Service on each event); the generator writes
the LoadBalancer addresses itself.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from bench.bed import Bed, Window
from bench.load import bounded
from bench.subjects import Counters, Subject

LB_PORT = 443
SETTLE_POLL = 1.0


async def populate(bed: Bed, services: int, namespaces: int, projects: int, lb: int) -> dict[str, Any]:
    """Projects (one namespace each), extra namespaces without a Project, Services spread evenly."""
    await bed.stop_kubedc()
    t0 = time.monotonic()
    prefix = bed.load.fresh("sc")
    projs = await bed.load.projects(prefix, projects, orgs=max(1, projects // 100))
    spaces = [p.namespace for p in projs]
    extra = [f"{prefix}-ns{i}" for i in range(max(0, namespaces - projects))]
    await bounded(partial(bed.load.namespace, n) for n in extra)
    spaces += extra
    per_ns, rest = divmod(services, len(spaces))
    address = {p.namespace: p.address for p in projs}
    jobs = []
    for i, ns in enumerate(spaces):
        for j in range(per_ns + (1 if i < rest else 0)):
            jobs.append((ns, j, i < lb and j == 0))

    async def one(ns: str, j: int, is_lb: bool) -> None:
        await bed.load.service(ns, j, lb=is_lb, port=LB_PORT if is_lb else 80)
        if is_lb:
            await bed.load.set_address(ns, f"svc{j}", address[ns])

    await bounded((partial(one, ns, j, is_lb) for ns, j, is_lb in jobs), 64)
    return {
        "services": len(jobs),
        "namespaces": len(spaces),
        "projects": len(projs),
        "load_balancers": sum(1 for *_, is_lb in jobs if is_lb),
        "seconds": time.monotonic() - t0,
    }


async def settle(subject: Subject, quiet_polls: int = 3, limit: float = 300.0) -> tuple[Counters, float]:
    """Wait until the subject's reconciles and writes stop changing; (counters then, seconds waited)."""
    t0 = time.monotonic()
    last = await subject.counters()
    quiet = 0
    while quiet < quiet_polls and time.monotonic() - t0 < limit:
        await asyncio.sleep(SETTLE_POLL)
        now = await subject.counters()
        same = now.reconciles == last.reconciles and now.writes == last.writes and now.queue_adds == last.queue_adds
        quiet = quiet + 1 if same else 0
        last = now
    return last, time.monotonic() - t0 - quiet_polls * SETTLE_POLL


async def run(bed: Bed, subject: Subject, idle: float) -> dict[str, Any]:
    await subject.start(bed.kube, ready_within=300.0)
    try:
        at_ready = subject.usage()
        after_start, settle_seconds = await settle(subject)
        settled = subject.usage()
        window = await Window(bed, subject).open()
        await asyncio.sleep(idle)
        measured = await window.close()
    finally:
        await subject.stop()
    return {
        "subject": subject.name,
        "args": subject.args,
        "ready_seconds": subject.ready_seconds,
        "rss_at_ready_mib": at_ready.rss,
        "rss_settled_mib": settled.rss,
        "peak_rss_mib": settled.hwm,
        "cpu_to_ready_seconds": at_ready.cpu,
        "cpu_to_settled_seconds": settled.cpu,
        "settle_seconds": settle_seconds,
        "reconciles_after_ready": after_start.reconciles,
        "reconciles_after_ready_total": sum(after_start.reconciles.values()),
        "writes_at_start": after_start.writes,
        "idle_seconds": idle,
        "idle_cpu_seconds": measured["cpu_seconds"],
        "idle_writes": measured["writes_ok"],
        "idle_reconciles": sum(measured["reconciles"].values()),
        "window": measured,
    }
