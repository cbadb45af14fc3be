"""The bench's test bed: the real control plane, the kube-dc stand-in, the observer, the load generator,
and a measurement window over one subject.

One bed serves every workload of a run, so the reconciler and the floor always meet the same API server;
each workload makes fresh namespaces.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.api import Api, Credentials
from bench.load import Load
from bench.measure import Samples, Usage, cpu_seconds
from bench.observe import Timeline
from bench.subjects import Counters, Subject
from testbed.controlplane import ControlPlane
from testbed.kube import Kube
from testbed.kubedc import KubeDC


@dataclass
class Bed:
    plane: ControlPlane
    kube: Kube  # the test bed's admin client: RBAC, the kube-dc stand-in
    api: Api  # the bench's admin client: load, API server metrics
    load: Load
    timeline: Timeline
    kubedc: KubeDC | None
    log_dir: Path

    def pid(self, name: str) -> int:
        """pid of a control-plane process: "kube-apiserver", "etcd", "kube-controller-manager"."""
        proc = next(p for p in self.plane.processes if p.name == name)
        assert proc.popen is not None
        return proc.popen.pid

    def subject(
        self, kind: str, args: list[str] | None = None, label: str = "", wrap: list[str] | None = None
    ) -> Subject:
        return Subject(kind, self.plane, self.log_dir, list(args or ()), label, wrap)

    async def stop_kubedc(self) -> None:
        """The stand-in scans every Service it knows on each event: fine for storms, not for 50,000 Services."""
        if self.kubedc is not None:
            self.load.assign = None
            await self.kubedc.__aexit__(None, None, None)
            self.kubedc = None

    async def apiserver_counts(self) -> dict[str, float]:
        """API server request counters that show overload and conflicts (all clients)."""
        m = Samples(await self.api.text("/metrics"))
        by_code = m.by("apiserver_request_total", "code")
        return {
            "requests": sum(by_code.values()),
            "409": by_code.get("409", 0.0),
            "429": by_code.get("429", 0.0),
            "apf_rejected": m.total("apiserver_flowcontrol_rejected_requests_total"),
            "apf_wait_seconds": m.total("apiserver_flowcontrol_request_wait_duration_seconds_sum"),
        }


@contextlib.asynccontextmanager
async def bed(log_dir: Path, plane: ControlPlane | None = None) -> AsyncIterator[Bed]:
    """Start everything (a control plane takes 6-8 s, unless one is given); stop what was started."""
    own = plane is None
    if plane is None:
        plane = ControlPlane()
        plane.start()  # blocking, in the main thread: its children die with us (PDEATHSIG)
    try:
        async with (
            Kube.from_kubeconfig(plane.admin_kubeconfig) as kube,
            Api(Credentials.from_kubeconfig(plane.admin_kubeconfig)) as api,
            Timeline(plane.admin_kubeconfig) as timeline,
        ):
            standin = await KubeDC(kube).__aenter__()
            the_bed = Bed(plane, kube, api, Load(api, standin.assign if standin else None), timeline, standin, log_dir)
            try:
                yield the_bed
            finally:
                await the_bed.stop_kubedc()
    finally:
        if own:
            plane.stop()


@dataclass
class Window:
    """CPU, memory, counters and API server figures of one subject over one interval."""

    bed: Bed
    subject: Subject
    started: float = 0.0
    usage: Usage | None = None
    counters: Counters | None = None
    api_cpu: float = 0.0
    etcd_cpu: float = 0.0
    api_counts: dict[str, float] | None = None
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bench_cpu: float = 0.0

    async def open(self) -> Window:
        self.started = time.monotonic()
        self.usage = self.subject.usage()
        self.counters = await self.subject.counters()
        self.api_cpu = cpu_seconds(self.bed.pid("kube-apiserver"))
        self.etcd_cpu = cpu_seconds(self.bed.pid("etcd"))
        self.bench_cpu = cpu_seconds(os.getpid())
        self.api_counts = await self.bed.apiserver_counts()
        self.load = os.getloadavg()
        return self

    async def close(self) -> dict[str, Any]:
        """Everything that happened since `open`."""
        assert self.usage is not None
        assert self.counters is not None
        assert self.api_counts is not None
        seconds = time.monotonic() - self.started
        usage = self.subject.usage()
        counters = (await self.subject.counters()).minus(self.counters)
        counts = await self.bed.apiserver_counts()
        return {
            "seconds": seconds,
            "cpu_seconds": usage.cpu - self.usage.cpu,
            "rss_mib": usage.rss,
            "peak_rss_mib": usage.hwm,
            "apiserver_cpu_seconds": cpu_seconds(self.bed.pid("kube-apiserver")) - self.api_cpu,
            "etcd_cpu_seconds": cpu_seconds(self.bed.pid("etcd")) - self.etcd_cpu,
            "bench_cpu_seconds": cpu_seconds(os.getpid()) - self.bench_cpu,  # generator + kube-dc stand-in
            "apiserver": {k: counts[k] - self.api_counts[k] for k in counts},
            "writes": counters.writes,
            "writes_ok": counters.write_total(),
            "conflicts": counters.conflicts(),
            "events": counters.events,
            "reconciles": counters.reconciles,
            "queue_adds": counters.queue_adds,
            "throttled_seconds": counters.throttled_seconds,
            "requests": counters.requests,
            "load_average": [self.load, os.getloadavg()],
        }
