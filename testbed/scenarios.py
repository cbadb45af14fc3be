"""The measured fault scenarios of issue 13, one function each, shared by the quick end-to-end tests
(``tests/e2e/test_faults.py``, which assert on what they return) and ``python -m bench.reliability`` (which
repeats them and writes docs/RELIABILITY.md).

A ``Bed`` is one control plane with the kube-dc stand-in, a ``FaultyPath`` and the objects and reconcilers a
scenario made; every scenario starts its own project and reconciler(s), so they do not see each other.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from testbed.certmanager import create_challenge, present
from testbed.controlplane import ControlPlane
from testbed.faultproxy import DROP
from testbed.faults import FaultyPath, start_reconciler_via
from testbed.gatewaycheck import backend_refs, ingress_ip, solver_service
from testbed.harness import ReconcilerNotReady, ReconcilerProcess, forget_claims, forget_namespace, start_reconciler
from testbed.kube import BACKENDS, HTTPROUTES, LEASES, SERVICES, Kube, Obj
from testbed.kubedc import KubeDC, create_project
from testbed.polling import wait_for

LEASE_NAMESPACE = "acme-gateway-reconciler"
_ids = itertools.count(1)
_logs = itertools.count()
"""Log files are numbered across Beds: they may share a directory."""


@dataclass
class Bed:
    plane: ControlPlane
    api: Kube
    kubedc: KubeDC
    path: FaultyPath
    workdir: Path
    idle_timeout: float = 3.0
    """``RECONCILER_WATCH_IDLE_TIMEOUT`` of every reconciler started here (the default is 90 s)."""
    processes: list[ReconcilerProcess] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def clear(self) -> None:
        """No fault on the path."""
        self.path.proxy.configure(0.0)
        self.path.proxy.resume_watches()
        self.path.toxic.enable(True)
        for toxic in ("stall", "latency", "reset"):
            try:
                self.path.toxic.remove(toxic)
            except Exception:
                continue

    async def close(self, *, show_logs: bool = False) -> None:
        self.clear()
        for proc in self.processes:
            code = await proc.terminate()
            if show_logs:
                print(f"\n--- reconciler log {proc.log_path} (exit {code}) ---\n{proc.log()}")
        for namespace in self.namespaces:
            await forget_namespace(self.api, namespace)
            await forget_claims(self.api, namespace)

    async def project(self) -> str:
        """A fresh cloud project with its EIP address; returns its namespace."""
        n = next(_ids)
        org = f"rel{n}-{time.monotonic_ns() % 100_000}"
        obj = await create_project(self.api, org, f"p{n}", "cloud")
        namespace: str = obj["status"]["namespace"]
        self.kubedc.assign(namespace, f"127.68.{n // 250}.{n % 250 + 1}")
        self.namespaces += [org, namespace]
        return namespace

    async def challenge(self, namespace: str, host: str) -> Obj:
        """A Challenge and its solver objects, as cert-manager presents them."""
        ch = await create_challenge(self.api, namespace, host, finalizer=False)
        await present(self.api, ch)
        return ch

    async def wired(self, ch: Obj) -> bool:
        """Service a LoadBalancer with its address, its Backend there, its companion route to the Backend."""
        svc = await solver_service(self.api, ch)
        if svc is None or svc["spec"]["type"] != "LoadBalancer" or not ingress_ip(svc):
            return False
        ns, name = ch["metadata"]["namespace"], svc["metadata"]["name"]
        backend = await self.api.get_or_none(BACKENDS, f"{name}-backend", ns)
        route = await self.api.get_or_none(HTTPROUTES, f"{name}-acme", ns)
        if backend is None or route is None:
            return False
        return [r.get("kind") for r in backend_refs(route)] == ["Backend"]

    async def until_wired(self, ch: Obj, within: float) -> float:
        """Seconds until ``ch`` is wired (raises ``WaitTimeout`` after ``within``)."""
        started = time.monotonic()
        await wait_for(lambda: self.wired(ch), within=within, interval=0.1, what=f"{ch['spec']['dnsName']} wired")
        return time.monotonic() - started

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        return {"RECONCILER_WATCH_IDLE_TIMEOUT": str(self.idle_timeout), **(env or {})}

    async def via_faults(self, namespace: str, *args: str, env: Mapping[str, str] | None = None) -> ReconcilerProcess:
        """A reconciler for ``namespace`` whose kubeconfig points at the faulty path; ready."""
        log = self.workdir / f"reconciler-{next(_logs)}.log"
        proc = await start_reconciler_via(
            self.path.kubeconfig, self.api, log, ["--namespaces", namespace, *args], self._env(env)
        )
        self.processes.append(proc)
        await proc.start(wait_ready=False)
        await proc.wait_ready(within=60)
        return proc

    async def direct(self, namespace: str, args: Sequence[str], env: Mapping[str, str]) -> ReconcilerProcess:
        """A reconciler for ``namespace`` talking to the API server directly; ready."""
        log = self.workdir / f"reconciler-{next(_logs)}.log"
        args = ["--namespaces", namespace, *args]
        proc = await start_reconciler(self.plane, self.api, log, args=args, env=self._env(env), wait_ready=False)
        self.processes.append(proc)
        await proc.wait_ready(within=60)
        return proc


async def _silent_count(rec: ReconcilerProcess) -> float:
    return (await rec.metrics()).total("acme_gateway_watch_restarts_total", reason="silent")


# --- silent and stalled watches --------------------------------------------------------------------------


@dataclass
class SilentWatch:
    stalled: int
    """Watch streams the proxy froze."""
    detected: float
    """Seconds from the stall to the first watch counted as silent."""
    wired: float
    """Seconds from the stall to a challenge created at that moment being wired."""
    logged: int


async def silent_watch(bed: Bed) -> SilentWatch:
    """Our proxy freezes every open watch stream (connections open, no byte more) while new requests pass;
    a challenge created at that moment can only be seen through re-opened watches."""
    ns = await bed.project()
    rec = await bed.via_faults(ns)
    await bed.until_wired(await bed.challenge(ns, "before.example.test"), within=30)
    stalled = bed.path.proxy.stall_watches()
    started = time.monotonic()
    ch = await bed.challenge(ns, "during.example.test")

    async def detected() -> float | None:
        return time.monotonic() - started if await _silent_count(rec) >= 1 else None

    detection = await wait_for(detected, within=bed.idle_timeout + 15, interval=0.1, what="a watch counted silent")
    await wait_for(lambda: bed.wired(ch), within=bed.idle_timeout + 20, interval=0.1, what="wired after the stall")
    wired = time.monotonic() - started
    bed.path.proxy.resume_watches()
    return SilentWatch(len(stalled), detection, wired, rec.log().count("watch went silent"))


@dataclass
class StalledPath:
    detected: float
    recovered: float
    """Seconds from the path flowing again to the challenge (created during the stall) being wired."""


async def stalled_path(bed: Bed) -> StalledPath:
    """Toxiproxy holds every byte from the API server, on open and new connections, then lets them go."""
    ns = await bed.project()
    rec = await bed.via_faults(ns)
    bed.path.toxic.stall()
    started = time.monotonic()
    ch = await bed.challenge(ns, "stalled.example.test")

    async def detected() -> float | None:
        return time.monotonic() - started if await _silent_count(rec) >= 1 else None

    detection = await wait_for(detected, within=bed.idle_timeout + 15, interval=0.1, what="stalled watches given up")
    bed.path.toxic.unstall()
    return StalledPath(detection, await bed.until_wired(ch, within=60))


# --- failed requests, latency, resets ----------------------------------------------------------------------


@dataclass
class Flaky:
    challenges: int
    wired: int
    seconds: float
    answers: dict[str, float]
    """The reconciler's `acme_gateway_api_requests_total` by code."""
    backends: int
    rejected: float


async def _flaky_run(bed: Bed, ns: str, rec: ReconcilerProcess, prefix: str, count: int, within: float) -> Flaky:
    started = time.monotonic()
    challenges = [await bed.challenge(ns, f"{prefix}{i}.example.test") for i in range(count)]
    wired = 0
    for ch in challenges:
        try:
            await bed.until_wired(ch, within=max(1.0, within - (time.monotonic() - started)))
            wired += 1
        except TimeoutError:
            continue
    seconds = time.monotonic() - started
    m = await rec.metrics()
    answers: dict[str, float] = {}
    for sample in m.find("acme_gateway_api_requests_total"):
        answers[sample.labels["code"]] = answers.get(sample.labels["code"], 0) + sample.value
    rejected = m.total("acme_gateway_writes_total", result="rejected")
    return Flaky(count, wired, seconds, answers, len(await bed.api.list(BACKENDS, ns)), rejected)


async def failed_requests(bed: Bed, ratio: float = 0.3, count: int = 5) -> Flaky:
    """``ratio`` of all requests answered 429 (Retry-After: 1), 500 or 503, from the start-up checks on."""
    ns = await bed.project()
    bed.path.proxy.configure(ratio, retry_after=1)
    rec = await bed.via_faults(ns)
    return await _flaky_run(bed, ns, rec, "s", count, within=60)


async def latency_and_resets(bed: Bed, count: int = 4) -> Flaky:
    """150 ± 100 ms on every byte from the API server, and every connection reset by peer three times."""
    ns = await bed.project()
    rec = await bed.via_faults(ns)
    toxic = bed.path.toxic
    toxic.add("latency", "latency", latency=150, jitter=100)

    async def resets() -> None:
        for _ in range(3):
            toxic.add("reset", "reset_peer", timeout=0)
            await anyio.sleep(0.3)
            toxic.remove("reset")
            await anyio.sleep(1.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(resets)
        result = await _flaky_run(bed, ns, rec, "l", count, within=60)
    return result  # noqa: RET504 - returned after the task group, which mypy cannot see through


@dataclass
class Forbidden:
    forbidden: float
    """Writes answered 403 (`result="forbidden"`): retried with back-off."""
    rejected: float
    """Writes remembered as rejected: none expected, the 403 is about the identity, not the write."""
    wired_within_30s: bool
    log_line: str


async def forbidden_writes(bed: Bed) -> Forbidden:
    """Two seconds of 403 on every write (an API server whose authorizer has not synced after a restart)."""
    ns = await bed.project()
    rec = await bed.via_faults(ns)
    bed.path.proxy.configure(1.0, codes=(403,), only_writes=True)
    ch = await bed.challenge(ns, "forbidden.example.test")
    m = await rec.metrics_when(lambda m: m.total("acme_gateway_writes_total", result="forbidden") >= 1, "a 403")
    await anyio.sleep(2.0)
    bed.path.proxy.configure(0.0)
    try:
        await bed.until_wired(ch, within=30)
        wired = True
    except TimeoutError:
        wired = False
    line = next((ln for ln in rec.log().splitlines() if "status=403" in ln), "")
    m = await rec.metrics()
    total = m.total
    return Forbidden(
        total("acme_gateway_writes_total", result="forbidden"),
        total("acme_gateway_writes_total", result="rejected"),
        wired,
        line[:400],
    )


@dataclass
class DroppedStartup:
    exit_code: int | None
    traceback: bool
    """The log holds a Python traceback (rather than one ERROR line naming the cause)."""


async def dropped_startup(bed: Bed) -> DroppedStartup:
    """Every write (the start-up checks' access reviews are POSTs) has its connection closed unanswered, as
    when the reconciler starts while the API server restarts."""
    ns = await bed.project()
    bed.path.proxy.configure(1.0, codes=(DROP,), only_writes=True)
    with contextlib.suppress(ReconcilerNotReady):
        await bed.via_faults(ns)
    rec = bed.processes[-1]
    await wait_for(lambda: _exited(rec), within=60, what="the reconciler gave up")
    return DroppedStartup(rec.returncode, "Traceback" in rec.log())


async def _exited(rec: ReconcilerProcess) -> bool:
    return not rec.alive


# --- high availability ----------------------------------------------------------------------------------------


@dataclass
class Failover:
    seconds: float
    """SIGKILL: to a challenge created at the kill being wired by the other replica. SIGTERM: to the other
    replica's first successful write."""
    standby_warm: bool
    old_exit: int | None
    lease_transitions: int
    holder_changed: bool
    standby_writes_before: float
    log: str = ""


async def _pair(bed: Bed, env: Mapping[str, str]) -> tuple[str, ReconcilerProcess, ReconcilerProcess, bool]:
    ns = await bed.project()
    args = ["--leader-elect"]
    env = {"RECONCILER_LEADER_ELECTION_ID": f"lease-{ns}", **env}
    first = await bed.direct(ns, args, env)
    second = await bed.direct(ns, args, env)

    async def leader_standby() -> tuple[ReconcilerProcess, ReconcilerProcess] | None:
        leaders = [r for r in (first, second) if (await r.metrics()).value("acme_gateway_leader") == 1]
        return (leaders[0], second if leaders[0] is first else first) if len(leaders) == 1 else None

    leader, standby = await wait_for(leader_standby, within=30, what="exactly one leader")
    try:
        await wait_for(lambda: warm(standby), within=30, what="standby ready and warm")
        is_warm = True
    except TimeoutError:
        is_warm = False
    await bed.until_wired(await bed.challenge(ns, "first.example.test"), within=30)
    return ns, leader, standby, is_warm


async def warm(rec: ReconcilerProcess) -> bool:
    """Ready, every informer synced and something in its cache: it could lead without listing first."""
    if (await rec.get("/readyz")).status_code != 200:
        return False
    m = await rec.metrics()
    synced = m.find("acme_gateway_informer_synced")
    return bool(synced) and all(s.value == 1 for s in synced) and m.total("acme_gateway_cache_objects") > 0


async def _lease(bed: Bed, ns: str) -> Obj:
    return await bed.api.get(LEASES, f"lease-{ns}", LEASE_NAMESPACE)


async def failover_after_sigkill(bed: Bed, env: Mapping[str, str] | None = None) -> Failover:
    """Default lease (15 s) unless ``env`` says otherwise: the standby must wait the lease out."""
    ns, leader, standby, is_warm = await _pair(bed, env or {})
    before = await _lease(bed, ns)
    standby_writes = (await standby.metrics()).total("acme_gateway_writes_total")
    await leader.kill()
    killed = time.monotonic()
    ch = await bed.challenge(ns, "second.example.test")
    await wait_for(lambda: bed.wired(ch), within=60, interval=0.1, what="wired by the other replica")
    seconds = time.monotonic() - killed
    after = await _lease(bed, ns)
    return Failover(
        seconds, is_warm, leader.returncode, after["spec"]["leaseTransitions"] - before["spec"]["leaseTransitions"],
        after["spec"].get("holderIdentity") != before["spec"].get("holderIdentity"), standby_writes,
    )  # fmt: skip


async def handover_after_sigterm(bed: Bed, env: Mapping[str, str] | None = None) -> Failover:
    """The leader is told to stop while a challenge arrives: the other replica must make the first write."""
    ns, leader, standby, is_warm = await _pair(bed, env or {})
    before = await _lease(bed, ns)
    standby_writes = (await standby.metrics()).total("acme_gateway_writes_total")

    async def first_write() -> float | None:
        wrote = (await standby.metrics()).total("acme_gateway_writes_total", result="success") > standby_writes
        return time.monotonic() - stopped if wrote else None

    async with anyio.create_task_group() as tg:
        stopped = time.monotonic()
        tg.start_soon(leader.terminate, 30.0)
        ch = await bed.challenge(ns, "handover.example.test")
        seconds = await wait_for(first_write, within=20, interval=0.05, what="a write by the other replica")
    await bed.until_wired(ch, within=30)
    after = await _lease(bed, ns)
    return Failover(
        seconds, is_warm, leader.returncode, after["spec"]["leaseTransitions"] - before["spec"]["leaseTransitions"],
        after["spec"].get("holderIdentity") not in (None, "", before["spec"].get("holderIdentity")), standby_writes,
        leader.log(),
    )  # fmt: skip


# --- compaction with the watch cache on ---------------------------------------------------------------------


async def compaction(bed: Bed) -> tuple[float, float]:
    """The path goes down, something changes, etcd is compacted, the path comes back: (410 Gone answers,
    relists) the reconciler saw after it. With the API server's watch cache on, a watch resumes from the
    cache's window, so the compaction alone may never be noticed (the storm runs without the cache)."""
    ns = await bed.project()
    rec = await bed.via_faults(ns)
    m0 = await rec.metrics()
    bed.path.toxic.enable(False)
    for i in range(5):
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"filler-{i}"}}
        await bed.api.create(SERVICES, body | {"spec": {"ports": [{"port": 80}]}}, ns)
    await anyio.to_thread.run_sync(bed.plane.compact_etcd)
    bed.path.toxic.enable(True)
    await bed.until_wired(await bed.challenge(ns, "after-compaction.example.test"), within=60)
    m1 = await rec.metrics()
    gone = m1.total("acme_gateway_watch_restarts_total", reason="gone") - m0.total(
        "acme_gateway_watch_restarts_total", reason="gone"
    )
    return gone, m1.total("acme_gateway_relists_total") - m0.total("acme_gateway_relists_total")
