"""The challenge storm: many cert-manager-shaped challenges across several cloud projects, wired by a
reconciler that talks to the API server through ``testbed.faults.FaultyPath``, with or without faults.

With faults, while the challenges arrive: a share of all requests fail (429 with Retry-After, 500, 503), three
watch cuts (our proxy drops the watch streams; Toxiproxy resets every connection; the path goes down while
etcd is compacted to its current revision, so the watches resume on a compacted resourceVersion and get 410
Gone), one API server restart and one SIGKILL of the reconciler (started again at once).

Then ``check`` reads the cluster as it is (admin, not through the faults) and the API server's audit log:
every challenge wired, no duplicate or orphaned Backend or companion route, every write of the reconciler
conditional (so none can undo a newer change), and how many requests it took.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx

from testbed.certmanager import create_challenge, present
from testbed.controlplane import RECONCILER_USER, ControlPlane
from testbed.faults import FaultyPath, start_reconciler_via
from testbed.gatewaycheck import ingress_ip
from testbed.harness import ReconcilerProcess
from testbed.kube import BACKENDS, CHALLENGES, DOMAINCLAIMS, HTTPROUTES, SERVICES, ApiError, Kube, Obj, Resource
from testbed.kubedc import KubeDC, create_project
from testbed.solverobjects import LABEL_SOLVER

T = TypeVar("T")
MANAGED_BY = "app.kubernetes.io/managed-by"
WRITES_AUDITED = frozenset({"services", "backends", "httproutes", "domainclaims"})


@dataclass(frozen=True)
class StormConfig:
    challenges: int = 300
    projects: int = 6
    fail_ratio: float = 0.10
    batches: int = 10
    """Challenges arrive in this many batches; the faults fall between them."""
    wire_within: float = 240.0
    reconciler_args: tuple[str, ...] = ("--max-challenges-per-project", "100")
    """Otherwise the defaults (no client-side rate limit: the API server's 429s pace it)."""


@dataclass
class StormResult:
    label: str
    challenges: int = 0
    wired: int = 0
    seconds_to_wire: float = 0.0
    requests: int = 0
    """Every request the reconciler sent (counted by the fault proxy, across its restarts)."""
    injected: int = 0
    duplicates: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    unwired: list[str] = field(default_factory=list)
    port_clashes: list[str] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)
    """Audited writes of the reconciler: ``<verb> <resource> <code>``."""
    unconditional: list[str] = field(default_factory=list)
    """Updates, patches or deletes that carried no resourceVersion/uid precondition."""
    faults: list[tuple[float, str]] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    """Exits of the reconciler nobody asked for (it is started again, as a pod's container would be)."""
    relists: float = 0.0
    gone: float = 0.0
    log_paths: list[str] = field(default_factory=list)

    @property
    def conflicts(self) -> int:
        return sum(n for k, n in self.writes.items() if k.endswith(" 409"))

    @property
    def forbidden(self) -> int:
        """Writes the API server answered 403 (while it restarted, before its authorizer had synced)."""
        return sum(n for k, n in self.writes.items() if k.endswith(" 403"))

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label, "challenges": self.challenges, "wired": self.wired,
            "seconds_to_wire": round(self.seconds_to_wire, 1), "requests": self.requests, "injected": self.injected,
            "duplicates": self.duplicates, "orphans": self.orphans, "unwired": self.unwired[:10],
            "port_clashes": self.port_clashes, "writes": dict(sorted(self.writes.items())),
            "unconditional": self.unconditional[:10], "conflicts": self.conflicts, "forbidden": self.forbidden,
            "faults": [f"{t:.1f}s {what}" for t, what in self.faults], "crashes": self.crashes,
            "relists": self.relists, "gone": self.gone,
        }  # fmt: skip


async def retrying(call: Callable[[], Awaitable[T]], within: float = 60.0) -> T:
    """The storm's own requests go straight to the API server, which restarts once: retry what a restart
    breaks (connection errors, 5xx, 429, and the 403s of an authorizer that has not synced yet)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (ApiError, httpx.HTTPError) as err:
            status = getattr(err, "status", 0)
            if isinstance(err, ApiError) and status not in (403, 429) and status < 500:
                raise
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.3)


class Storm:
    """One run: its projects, its reconciler (through ``path``) and, with ``faults``, the fault schedule."""

    def __init__(
        self, plane: ControlPlane, api: Kube, kubedc: KubeDC, path: FaultyPath, workdir: Path, config: StormConfig,
        *, faults: bool, label: str, first_address: int = 1,
    ) -> None:  # fmt: skip
        self.plane, self.api, self.kubedc, self.path = plane, api, kubedc, path
        self.workdir, self.config, self.faults = workdir, config, faults
        self.result = StormResult(label)
        self.first_address = first_address
        self.namespaces: dict[str, str] = {}  # project namespace -> EIP address
        self.rec: ReconcilerProcess | None = None
        self._t0 = 0.0
        self._audit_offset = 0
        self._killing = False

    def _fault(self, what: str) -> None:
        self.result.faults.append((time.monotonic() - self._t0, what))

    async def _projects(self) -> None:
        for i in range(self.config.projects):
            org = f"{self.result.label}-org{i}"
            obj = await create_project(self.api, org, f"p{i}", "cloud")
            namespace = obj["status"]["namespace"]
            n = self.first_address + i
            address = f"127.67.{n // 250}.{n % 250 + 1}"
            self.kubedc.assign(namespace, address)
            self.namespaces[namespace] = address

    async def _challenge(self, namespace: str, i: int) -> None:
        name = f"storm-{i}"
        dns = f"c{i}.{namespace}.example.test"

        async def make() -> Obj:
            existing = await self.api.get_or_none(CHALLENGES, name, namespace)
            return existing or await create_challenge(self.api, namespace, dns, name=name, finalizer=False)

        ch = await retrying(make)
        await retrying(lambda: present(self.api, ch))

    async def run(self) -> StormResult:
        cfg = self.config
        await self._projects()
        if self.plane.audit:
            self._audit_offset = self.plane.audit_log.stat().st_size if self.plane.audit_log.exists() else 0
        before = self.path.proxy.stats()["counts"]
        self.path.proxy.configure(cfg.fail_ratio if self.faults else 0.0)
        log = self.workdir / f"reconciler-{self.result.label}.log"
        self.result.log_paths.append(str(log))
        args = ["--namespaces", ",".join(self.namespaces), *cfg.reconciler_args]
        self.rec = rec = await start_reconciler_via(self.path.kubeconfig, self.api, log, args)
        self._t0 = time.monotonic()
        await rec.start(wait_ready=False)
        await rec.wait_ready(within=90)
        namespaces = list(self.namespaces)
        per_batch = -(-cfg.challenges // cfg.batches)
        schedule = self._schedule()
        async with anyio.create_task_group() as supervised:
            supervised.start_soon(self._supervise)
            for batch in range(cfg.batches):
                async with anyio.create_task_group() as tg:
                    for i in range(batch * per_batch, min(cfg.challenges, (batch + 1) * per_batch)):
                        tg.start_soon(self._challenge, namespaces[i % len(namespaces)], i)
                if self.faults and batch in schedule:
                    await rec.wait_ready(within=120)  # each fault meets a reconciler that is watching
                    await schedule[batch]()
            self.result.challenges = cfg.challenges
            await self._wait_wired()
            self.result.seconds_to_wire = time.monotonic() - self._t0
            supervised.cancel_scope.cancel()
        self.path.proxy.configure(0.0)
        after = self.path.proxy.stats()["counts"]
        self.result.requests = after.get("requests", 0) - before.get("requests", 0)
        self.result.injected = after.get("injected", 0) - before.get("injected", 0)
        await self._scrape()
        await self.check()
        return self.result

    async def _scrape(self) -> None:
        """Add this process's counters to the run's (a restart starts them from zero)."""
        assert self.rec is not None
        m = await self.rec.metrics()
        self.result.relists += m.total("acme_gateway_relists_total")
        self.result.gone += m.total("acme_gateway_watch_restarts_total", reason="gone")

    async def _supervise(self) -> None:
        """Start the reconciler again when it exits on its own (restartPolicy: Always), and note it."""
        assert self.rec is not None
        while True:
            await anyio.sleep(0.5)
            if self.rec.process is not None and not self.rec.alive and not self._killing:
                self.result.crashes.append(f"{time.monotonic() - self._t0:.1f}s exit {self.rec.returncode}")
                await anyio.sleep(1.0)
                await self.rec.start(wait_ready=False)

    def _schedule(self) -> dict[int, Callable[[], Awaitable[None]]]:
        """Which fault follows which batch (spread over the arrival of the challenges)."""
        b = self.config.batches
        steps: list[Callable[[], Awaitable[None]]] = [
            self._cut_watches, self._kill_reconciler, self._reset_connections, self._restart_apiserver,
            self._compact_while_cut,
        ]  # fmt: skip
        return {max(0, round((k + 1) * b / (len(steps) + 1)) - 1): step for k, step in enumerate(steps)}

    async def _cut_watches(self) -> None:
        paths = await anyio.to_thread.run_sync(self.path.proxy.cut_watches)
        self._fault(f"cut #1: fault proxy dropped {len(paths)} watch streams")

    async def _kill_reconciler(self) -> None:
        assert self.rec is not None
        self._killing = True
        await self._scrape()
        await self.rec.kill()
        self._fault("SIGKILL of the reconciler, started again")
        await self.rec.start(wait_ready=False)
        self._killing = False

    async def _reset_connections(self) -> None:
        toxic = self.path.toxic
        await anyio.to_thread.run_sync(lambda: toxic.add("reset", "reset_peer", timeout=0))
        await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(lambda: toxic.remove("reset"))
        self._fault("cut #2: Toxiproxy reset_peer on every connection for 0.5 s")

    async def _restart_apiserver(self) -> None:
        down = await anyio.to_thread.run_sync(self.plane.restart_apiserver)
        self._fault(f"API server restart ({down:.1f} s unavailable)")

    async def _compact_while_cut(self) -> None:
        toxic = self.path.toxic
        await anyio.to_thread.run_sync(lambda: toxic.enable(False))
        # Something must change while the watches are away, or there is nothing to compact past.
        await retrying(lambda: self.api.create(SERVICES, _filler(), next(iter(self.namespaces))))
        revision = await anyio.to_thread.run_sync(self.plane.compact_etcd)
        await anyio.sleep(1.0)
        await anyio.to_thread.run_sync(lambda: toxic.enable(True))
        self._fault(f"cut #3: path down, etcd compacted to revision {revision}, path up (resume gets 410 Gone)")

    async def _wait_wired(self) -> None:
        deadline = time.monotonic() + self.config.wire_within
        while True:
            await self.check_wiring()
            if not self.result.unwired or time.monotonic() > deadline:
                return
            await anyio.sleep(1.0)

    async def check_wiring(self) -> None:
        """Every solver Service a LoadBalancer on its project's EIP address with its own port, one Backend at
        that address and port, one companion route to it; no Backend or companion route without its Service."""
        r = self.result
        r.wired, r.unwired, r.duplicates, r.orphans, r.port_clashes = 0, [], [], [], []
        for namespace, address in self.namespaces.items():
            services = await self._list(SERVICES, namespace, LABEL_SOLVER)
            backends = await self._list(BACKENDS, namespace)
            routes = await self._list(HTTPROUTES, namespace, MANAGED_BY)
            by_name = {s["metadata"]["name"]: s for s in services}
            ports = Counter(s["spec"]["ports"][0]["port"] for s in services if s["spec"].get("type") == "LoadBalancer")
            r.port_clashes += [f"{namespace}:{p}" for p, n in ports.items() if n > 1]
            for name in sorted(by_name):
                if _wired(by_name[name], address, backends, routes):
                    r.wired += 1
                else:
                    r.unwired.append(f"{namespace}/{name}")
            r.duplicates += _extra(backends, "-backend", by_name, namespace)
            r.duplicates += _extra(routes, "-acme", by_name, namespace)
            r.orphans += [
                f"{namespace}/{o['metadata']['name']}"
                for o in [*backends, *routes]
                if _owner(o) not in by_name
            ]  # fmt: skip
        missing = self.config.challenges - sum(1 for _ in r.unwired) - r.wired
        r.unwired += [f"(no solver Service yet) x{missing}"] if missing > 0 else []

    async def _list(self, resource: Resource, namespace: str, selector: str | None = None) -> list[Obj]:
        return await retrying(lambda: self.api.list(resource, namespace, label_selector=selector))

    async def check(self) -> None:
        await self.check_wiring()
        claims = [c for c in await self.api.list(DOMAINCLAIMS) if c["spec"].get("namespace") in self.namespaces]
        hosts = Counter(c["spec"]["hostname"] for c in claims)
        self.result.duplicates += [f"claim {h}" for h, n in hosts.items() if n > 1]
        if self.plane.audit:
            self._audit()

    def _audit(self) -> None:
        """Every update, patch or delete the reconciler sent to the objects it manages carried a precondition
        (a merge patch or update: ``metadata.resourceVersion``; a delete: uid and resourceVersion), so the
        API server refused any of them that was decided on an older version than it held (409)."""
        with self.plane.audit_log.open() as f:
            f.seek(self._audit_offset)
            for line in f:
                entry = json.loads(line)
                ref = entry.get("objectRef") or {}
                if entry.get("user", {}).get("username") != RECONCILER_USER:
                    continue
                if ref.get("resource") not in WRITES_AUDITED:
                    continue
                if ref.get("namespace", "") not in (*self.namespaces, ""):
                    continue
                code = (entry.get("responseStatus") or {}).get("code", 0)
                verb = entry["verb"]
                resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                self.result.writes[f"{verb} {resource} {code}"] += 1
                body = entry.get("requestObject") or {}
                if code in (401, 403) and not body:
                    continue  # refused before its body was read (the audit log has none to show): not a write
                if verb in ("update", "patch") and not (body.get("metadata") or {}).get("resourceVersion"):
                    what = f"{verb} {ref['resource']} {ref.get('namespace')}/{ref.get('name')} {code}"
                    self.result.unconditional.append(f"{what}: {json.dumps(body)[:300]}")
                if verb == "delete":
                    pre = body.get("preconditions") or {}
                    if not (pre.get("uid") and pre.get("resourceVersion")):
                        self.result.unconditional.append(f"delete {ref.get('namespace')}/{ref.get('name')}")

    async def stop(self) -> None:
        if self.rec is not None:
            await self.rec.terminate()


def _filler() -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"generateName": "filler-"},
        "spec": {"ports": [{"port": 80}]},
    }  # fmt: skip


def _owner(obj: Obj) -> str | None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or () if r.get("controller")]
    return str(refs[0]["name"]) if len(refs) == 1 and refs[0].get("kind") == "Service" else None


def _extra(objs: list[Obj], suffix: str, services: dict[str, Obj], namespace: str) -> list[str]:
    """Objects beyond one ``<service><suffix>`` per solver Service (a second Backend or route for one)."""
    owners = Counter(_owner(o) for o in objs)
    wrong_name = [o for o in objs if _owner(o) in services and o["metadata"]["name"] != f"{_owner(o)}{suffix}"]
    return [f"{namespace}/{name} x{n}" for name, n in owners.items() if name and n > 1] + [
        f"{namespace}/{o['metadata']['name']}" for o in wrong_name
    ]


def _wired(svc: Obj, address: str, backends: list[Obj], routes: list[Obj]) -> bool:
    name = svc["metadata"]["name"]
    port = svc["spec"]["ports"][0]["port"]
    if svc["spec"].get("type") != "LoadBalancer" or ingress_ip(svc) != address:
        return False
    backend = next((b for b in backends if b["metadata"]["name"] == f"{name}-backend"), None)
    if backend is None or backend["spec"].get("endpoints") != [{"ip": {"address": address, "port": port}}]:
        return False
    route = next((r for r in routes if r["metadata"]["name"] == f"{name}-acme"), None)
    refs = [ref for rule in (route or {}).get("spec", {}).get("rules", []) for ref in rule.get("backendRefs", [])]
    return [(ref.get("kind"), ref.get("name")) for ref in refs] == [("Backend", f"{name}-backend")]


async def storm_pair(
    plane: ControlPlane, api: Kube, workdir: Path, config: StormConfig
) -> tuple[StormResult, StormResult]:
    """The same storm twice in one test: fault-free first (the baseline), then with every fault."""
    path = await anyio.to_thread.run_sync(FaultyPath.start, plane)
    try:
        async with KubeDC(api) as kubedc:
            results = []
            for k, (faults, label) in enumerate(((False, "calm"), (True, "storm"))):
                storm = Storm(plane, api, kubedc, path, workdir, config, faults=faults, label=label,
                              first_address=1 + k * config.projects)  # fmt: skip
                try:
                    results.append(await storm.run())
                finally:
                    await storm.stop()
            return results[0], results[1]
    finally:
        await anyio.to_thread.run_sync(path.stop)
