"""Solver HTTP servers for the full-stack test bed: the solver Pod and kube-dc's EIP forwarding, in one.

There is no kubelet here, so cert-manager's solver Pods never run, and no kube-dc data plane, so nothing
forwards a LoadBalancer address anywhere. ``SolverServers`` stands in for both: for every solver Service
(the three solver labels) that has an address in ``status.loadBalancer.ingress[0].ip``, it serves what
cert-manager's acmesolver would serve, bound to that address and the Service's ``spec.ports[0].port``.
That port is the external one kube-dc exposes on the project's EIP (the reconciler gives each solver its
own), which kube-dc would forward to the Pod's ``targetPort`` 8089. The answer comes from the args
(``--domain``, ``--token``, ``--key``) of the solver Pod controlled by the same Challenge, the way the
acmesolver binary reads them. A server stops when its Service goes or loses its address.

What stays unreachable, as in a kube-dc cloud project: the Service's own endpoints. Nothing creates
EndpointSlices, so an HTTPRoute that sends the gateway to the Service itself gets Envoy Gateway's 503.
A Service without a load-balancer address (a NodePort solver in a public project, or one kube-dc refused)
gets no server at all.

The exception is a namespace given to ``reach_services``: there the cluster network is reachable from the
gateway, as in a cluster without kube-dc's isolation (the baseline every time to Ready is compared with),
and cert-manager's own route works with no reconciler. The API server refuses loopback addresses in
EndpointSlices, so the stand-in is the Service address instead of Pod addresses: a BackendTrafficPolicy
(``routingType: Service``) makes Envoy Gateway send the namespace's solver routes to the Service's ClusterIP
(127.96.x.y here), and the solver's server listens on that address and the Service port, as kube-proxy
would forward it to the Pod. The solver Pod is ready at once (no kubelet, no image pull): a floor.

``cut_forwarding`` breaks kube-dc's forwarding for a namespace: its solvers keep their EIP address and port,
but nothing answers there (connection refused), as when the platform's NAT rule for the EIP is missing.

A solver Pod starts serving ``pod_start`` seconds after it appeared (no earlier than its Service has an
address): a real Pod is scheduled, its container started, before it answers. With 0 a "Pod" answers within
milliseconds, which no kubelet does; the full-stack tests and the storm benchmark use 1 s, a fast kubelet
with the image cached, for cloud and baseline projects alike.

Servers run in threads, so they answer even while the test's event loop is busy; every request is kept in
``hits`` for assertions (who asked, through which address and port, with what answer).

Kinder than a kubelet and kube-dc's data plane: a server starts exactly ``pod_start`` after its Pod
appears (no scheduling, image pull, readiness or crash), and the forwarding is a lossless loopback bind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Self

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from testbed.gatewaycheck import ingress_ip
from testbed.httpservers import LoopbackServer, SeenRequest
from testbed.kube import BACKENDTRAFFICPOLICIES, PODS, SERVICES, Kube, Obj
from testbed.solverobjects import LABEL_SOLVER

CHALLENGE_PREFIX: Final = "/.well-known/acme-challenge/"
RETRY_SECONDS: Final = 0.5  # after a failed bind (the address:port still held by a server being stopped)
FAST_POD_START: Final = 1.0  # seconds from solver Pod creation to serving: a fast kubelet, image cached
REACHABLE_POLICY: Final = "reachable-cluster-network"  # the BackendTrafficPolicy of a baseline namespace


@dataclass(frozen=True)
class SolverAnswer:
    """What one acmesolver serves: ``key`` at ``/.well-known/acme-challenge/<token>`` for Host ``domain``."""

    domain: str
    token: str
    key: str


@dataclass(frozen=True)
class Hit:
    """One request a solver server answered."""

    at: float  # time.monotonic()
    namespace: str
    service: str
    address: str
    port: int
    method: str
    host: str
    path: str
    status: int
    headers: Mapping[str, str]

    @property
    def via_envoy(self) -> bool:
        """Envoy adds ``x-request-id`` to every request it proxies."""
        return "x-request-id" in self.headers


@dataclass(frozen=True)
class _Want:
    namespace: str
    service: str
    address: str
    port: int
    answer: SolverAnswer


def pod_answer(pod: Obj) -> SolverAnswer | None:
    """The acmesolver's ``--domain``, ``--token`` and ``--key`` from the solver Pod's container args."""
    for container in pod.get("spec", {}).get("containers") or []:
        flags: dict[str, str] = {}
        for arg in container.get("args") or []:
            name, sep, value = str(arg).partition("=")
            if sep and name.startswith("--"):
                flags[name[2:]] = value
        if {"domain", "token", "key"} <= flags.keys():
            return SolverAnswer(flags["domain"], flags["token"], flags["key"])
    return None


def _controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Challenge":
            return str(ref.get("uid"))
    return None


def _host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Server(LoopbackServer):
    """One acmesolver on one address:port, serving in its own thread from construction on."""

    def __init__(self, want: _Want, hits: list[Hit]) -> None:
        self.want = want
        self.hits = hits
        super().__init__(want.address, want.port, self._respond, name=f"solver-{want.service}")
        self.start()

    def _respond(self, request: SeenRequest) -> tuple[int, bytes]:
        want, answer = self.want, self.want.answer
        host = _host_without_port(request.headers.get("host", ""))
        ok = host == answer.domain and request.path.split("?", 1)[0] == CHALLENGE_PREFIX + answer.token
        status = 200 if ok else 404
        self.hits.append(
            Hit(
                time.monotonic(),
                want.namespace,
                want.service,
                want.address,
                want.port,
                request.method,
                host,
                request.path,
                status,
                request.headers,
            )
        )
        return status, answer.key.encode() if ok else b"not found\n"


class SolverServers:
    """Watches solver Pods and Services cluster-wide and keeps one server per reachable solver Service.

    ``async with SolverServers(api) as servers``; ``servers.serving()`` says what is served where,
    ``servers.hits`` what was asked.
    """

    def __init__(self, api: Kube, pod_start: float = 0.0) -> None:
        self.api = api
        self.pod_start = pod_start
        self._pod_seen: dict[str, float] = {}  # Pod uid -> when it first appeared (monotonic)
        self._wake_at: float | None = None  # a sync is scheduled then, for a Pod still starting
        self.hits: list[Hit] = []
        self.errors: list[Exception] = []  # unexpected failures of the background work, for assertions
        self._services: dict[str, Obj] = {}  # uid -> Service
        self._pods: dict[str, Obj] = {}  # uid -> Pod
        self._servers: dict[str, _Server] = {}  # Service uid -> its server
        self._reachable: set[str] = set()  # namespaces whose Service addresses the gateway reaches
        self._cut: set[str] = set()  # namespaces whose EIP forwarding is broken
        self._synced = {SERVICES.plural: anyio.Event(), PODS.plural: anyio.Event()}
        self._send: MemoryObjectSendStream[None]
        self._receive: MemoryObjectReceiveStream[None]
        self._send, self._receive = anyio.create_memory_object_stream[None](max_buffer_size=10_000)
        self._stack = contextlib.AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._watch, SERVICES.plural)
        self._tg.start_soon(self._watch, PODS.plural)
        self._tg.start_soon(self._work)
        with anyio.fail_after(30):
            for synced in self._synced.values():
                await synced.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        self._send.close()
        self._receive.close()

    async def reach_services(self, namespace: str) -> None:
        """Make ``namespace``'s solver Services reachable from the gateway at their ClusterIP, so that
        cert-manager's own route works there (see the module docstring); call before its solvers appear."""
        policy: Obj = {
            "apiVersion": BACKENDTRAFFICPOLICIES.api_version,
            "kind": "BackendTrafficPolicy",
            "metadata": {"name": REACHABLE_POLICY, "namespace": namespace},
            "spec": {
                "targetSelectors": [
                    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "matchLabels": {LABEL_SOLVER: "true"}}
                ],
                "routingType": "Service",
            },
        }
        await self.api.apply(BACKENDTRAFFICPOLICIES, policy)
        self._reachable.add(namespace)
        self._send.send_nowait(None)

    def cut_forwarding(self, namespace: str, cut: bool = True) -> None:
        """Break (or, with ``cut=False``, mend) kube-dc's EIP forwarding for ``namespace``'s solvers."""
        if cut:
            self._cut.add(namespace)
        else:
            self._cut.discard(namespace)
        self._send.send_nowait(None)

    def serving(self) -> dict[tuple[str, str], tuple[str, int, SolverAnswer]]:
        """(namespace, Service) -> (address, port, answer) of every running server."""
        return {
            (s.want.namespace, s.want.service): (s.want.address, s.want.port, s.want.answer)
            for s in self._servers.values()
        }

    def hits_for(self, domain: str) -> list[Hit]:
        """Requests that asked for ``domain`` (the Host header)."""
        return [h for h in self.hits if h.host == domain]

    async def _watch(self, plural: str) -> None:
        res, known = (SERVICES, self._services) if plural == SERVICES.plural else (PODS, self._pods)
        async for event in self.api.list_watch(res, label_selector=f"{LABEL_SOLVER}=true"):
            if event.type == "SYNCED":
                self._synced[plural].set()
            elif event.type == "DELETED":
                known.pop(event.object["metadata"]["uid"], None)
                self._pod_seen.pop(event.object["metadata"]["uid"], None)
            else:
                known[event.object["metadata"]["uid"]] = event.object
                if res is PODS:
                    self._pod_seen.setdefault(event.object["metadata"]["uid"], time.monotonic())
            self._send.send_nowait(None)

    def _wanted(self) -> dict[str, _Want]:
        answers: dict[tuple[str, str], SolverAnswer] = {}
        now, starting = time.monotonic(), []
        for uid, pod in self._pods.items():
            owner, answer = _controller_uid(pod), pod_answer(pod)
            if not owner or not answer or pod["metadata"].get("deletionTimestamp"):
                continue
            ready_at = self._pod_seen.get(uid, now) + self.pod_start
            if ready_at > now:
                starting.append(ready_at)
                continue
            answers[(pod["metadata"]["namespace"], owner)] = answer
        if starting:
            self._wake(min(starting))
        wanted: dict[str, _Want] = {}
        for uid, svc in self._services.items():
            meta = svc["metadata"]
            address, ports = ingress_ip(svc), svc["spec"].get("ports") or []
            if meta["namespace"] in self._reachable:
                address = svc["spec"].get("clusterIP")
            owner = _controller_uid(svc)
            if meta.get("deletionTimestamp") or not address or not ports or owner is None:
                continue
            if meta["namespace"] in self._cut and meta["namespace"] not in self._reachable:
                continue
            if not ipaddress.ip_address(address).is_loopback:
                continue  # never bind anything but loopback
            answer = answers.get((meta["namespace"], owner))
            if answer is not None:
                wanted[uid] = _Want(meta["namespace"], meta["name"], address, int(ports[0]["port"]), answer)
        return wanted

    def _wake(self, at: float) -> None:
        """Sync again at ``at`` (monotonic), when a starting Pod is ready."""
        if self._tg is None or (self._wake_at is not None and self._wake_at <= at):
            return
        self._wake_at = at

        async def later() -> None:
            await anyio.sleep(max(0.0, at - time.monotonic()))
            if self._wake_at == at:
                self._wake_at = None
            self._send.send_nowait(None)

        self._tg.start_soon(later)

    async def _work(self) -> None:
        async for _ in self._receive:
            with contextlib.suppress(anyio.WouldBlock):
                while True:  # coalesce a burst of events into one pass
                    self._receive.receive_nowait()
            try:
                await self._sync()
            except Exception as err:  # keep serving; the fixture reports these
                self.errors.append(err)

    async def _sync(self) -> None:
        wanted = self._wanted()
        for uid in [u for u, s in self._servers.items() if wanted.get(u) != s.want]:
            await anyio.to_thread.run_sync(self._servers.pop(uid).stop)
        retry = False
        for uid, want in wanted.items():
            if uid in self._servers:
                continue
            try:
                self._servers[uid] = _Server(want, self.hits)
            except OSError:
                retry = True  # e.g. still held by a server another Service is giving up
        if retry:
            await anyio.sleep(RETRY_SECONDS)
            self._send.send_nowait(None)
