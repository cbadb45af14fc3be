"""A stand-in for kube-dc's project and LoadBalancer service handling, enough for the reconciler's tests.

kube-dc's own controllers need OVN/Kube-OVN and cannot run here. What the reconciler depends on is small
(see docs/kube-dc.md): Projects with ``spec.egressNetworkType`` whose workloads live in
``status.namespace``, and a service controller that writes the project's EIP address into
``status.loadBalancer.ingress[0].ip`` of LoadBalancer Services that ask to bind to an EIP, refusing a
second Service on the same EIP and port. Addresses come from a test-given map project namespace ->
loopback address (127.65.x.y), so anything that later connects to them stays on this machine.

Simplifications: every EIP name in a project resolves to the project's one address (ports conflict per
address); the first Service by creationTimestamp (then by when this controller first saw it) keeps a port;
``external-network-type`` overrides, EIp objects, and route-port/expose-route are ignored.

Kinder than kube-dc: an address within milliseconds (kube-dc programs OVN first), no EIP quota or
exhaustion, and an address is never taken back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Self

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from testbed.kube import BACKENDS, EVENTS, NAMESPACES, PROJECTS, SERVICES, ApiError, Kube, Obj

ANNOTATION_PREFIX: Final = "service.nlb.kube-dc.com/"
BIND_ON_EIP: Final = ANNOTATION_PREFIX + "bind-on-eip"
BIND_ON_DEFAULT_GW_EIP: Final = ANNOTATION_PREFIX + "bind-on-default-gw-eip"
CREATE_GATEWAY_BACKEND: Final = ANNOTATION_PREFIX + "create-gateway-backend"
REASON_PORT_IN_USE: Final = "PortInUse"
COMPONENT: Final = "kube-dc-standin"


def project_namespace(org_namespace: str, name: str) -> str:
    """kube-dc's convention for a project's workload namespace."""
    return f"{org_namespace}-{name}"


async def ensure_namespace(api: Kube, name: str, labels: Mapping[str, str] | None = None) -> Obj:
    """Create the namespace unless it exists."""
    existing = await api.get_or_none(NAMESPACES, name)
    if existing is not None:
        return existing
    body: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if labels:
        body["metadata"]["labels"] = dict(labels)
    try:
        return await api.create(NAMESPACES, body)
    except ApiError as err:
        if err.conflict:
            return await api.get(NAMESPACES, name)
        raise


async def create_project(
    api: Kube,
    org_ns: str,
    name: str,
    network_type: str,
    *,
    cidr_block: str = "10.100.0.0/24",
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """Create the org namespace (if needed), a valid Project in it, its ``status.namespace`` (the CRD has
    a status subresource) and the project namespace, as kube-dc's project controller would.

    ``cidr_block`` is only data (the CRD requires it); nothing routes to it.
    """
    await ensure_namespace(api, org_ns)
    body: Obj = {
        "apiVersion": PROJECTS.api_version,
        "kind": "Project",
        "metadata": {"name": name, "namespace": org_ns, "labels": dict(labels or {})},
        "spec": {"cidrBlock": cidr_block, "egressNetworkType": network_type},
    }
    await api.create(PROJECTS, body, org_ns)
    namespace = project_namespace(org_ns, name)
    project = await api.patch_status(PROJECTS, name, {"status": {"namespace": namespace}}, org_ns)
    await ensure_namespace(api, namespace)
    return project


@dataclass(frozen=True)
class _Port:
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


def _eip_name(svc: Obj) -> str | None:
    annotations = svc["metadata"].get("annotations") or {}
    if annotations.get(BIND_ON_EIP):
        return str(annotations[BIND_ON_EIP])
    if annotations.get(BIND_ON_DEFAULT_GW_EIP) == "true":
        return "default-gw"
    return None


def _ports(svc: Obj) -> list[_Port]:
    return [_Port(int(p["port"]), str(p.get("protocol", "TCP"))) for p in svc["spec"].get("ports") or []]


def _ingress_ips(svc: Obj) -> list[str]:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(i.get("ip")) for i in ingress if i.get("ip")]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeDC:
    """The service controller stand-in. ``async with KubeDC(api) as kubedc``; ``assign(ns, address)``
    maps a project namespace to its EIP address at any time (Services already there are handled then).

    With ``create_backends`` it also applies an Envoy Gateway ``Backend`` ``<svc>-backend`` for Services
    annotated ``create-gateway-backend: "true"`` (or for all bound Services with
    ``backends_need_annotation=False``), as the platform's own controller does.
    """

    def __init__(
        self,
        api: Kube,
        addresses: Mapping[str, str] | None = None,
        *,
        create_backends: bool = False,
        backends_need_annotation: bool = True,
    ) -> None:
        self.api = api
        self.addresses: dict[str, str] = {}
        self.create_backends = create_backends
        self.backends_need_annotation = backends_need_annotation
        self.services: dict[tuple[str, str], Obj] = {}
        self.refused: dict[str, str] = {}  # uid -> message of the Warning Event created for it
        self.synced = anyio.Event()
        self.errors: list[Exception] = []  # unexpected failures of the background work, for assertions
        self._seen_order: dict[str, int] = {}
        self._counter = itertools.count()
        self._send: MemoryObjectSendStream[str]
        self._receive: MemoryObjectReceiveStream[str]
        self._send, self._receive = anyio.create_memory_object_stream[str](max_buffer_size=10_000)
        self._stack = contextlib.AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        for namespace, address in (addresses or {}).items():
            self.assign(namespace, address)

    def assign(self, namespace: str, address: str) -> None:
        """Give the project whose workloads live in ``namespace`` the EIP ``address`` (loopback only)."""
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"{address} is not a loopback address")
        self.addresses[namespace] = address
        self._send.send_nowait(namespace)

    async def __aenter__(self) -> Self:
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._watch)
        self._tg.start_soon(self._work)
        with anyio.fail_after(30):
            await self.synced.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        self._send.close()
        self._receive.close()

    async def _watch(self) -> None:
        async for event in self.api.list_watch(SERVICES):
            if event.type == "SYNCED":
                self.synced.set()
                continue
            meta = event.object["metadata"]
            key = (meta["namespace"], meta["name"])
            if event.type == "DELETED":
                self.services.pop(key, None)
                self.refused.pop(meta["uid"], None)
            else:
                self._store(event.object)
                self._seen_order.setdefault(meta["uid"], next(self._counter))
            self._send.send_nowait(meta["namespace"])

    async def _work(self) -> None:
        async for namespace in self._receive:
            pending = {namespace}
            with contextlib.suppress(anyio.WouldBlock):
                while True:  # coalesce a burst of events into one pass per namespace
                    pending.add(self._receive.receive_nowait())
            for ns in sorted(pending):
                try:
                    await self._reconcile(ns)
                except ApiError:
                    await anyio.sleep(0.2)
                    self._send.send_nowait(ns)  # retry (conflicts, namespace going away, ...)
                except Exception as err:  # keep serving other tests; the fixture reports these
                    self.errors.append(err)

    def _store(self, svc: Obj) -> None:
        """Keep the newest version: the answer to our own status write can be newer than a watch event
        still in flight, and letting that event roll the cache back would make a bound Service look
        unbound for a moment (and lose its address)."""
        meta = svc["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.services.get(key)
        if old is not None and old["metadata"]["uid"] == meta["uid"]:
            a, b = old["metadata"].get("resourceVersion", ""), meta.get("resourceVersion", "")
            if a.isdigit() and b.isdigit() and int(b) < int(a):
                return
        self.services[key] = svc

    def _candidates(self, namespace: str) -> list[Obj]:
        found = [
            svc
            for (ns, _), svc in self.services.items()
            if ns == namespace
            and svc["spec"].get("type") == "LoadBalancer"
            and _eip_name(svc) is not None
            and not svc["metadata"].get("deletionTimestamp")
        ]
        found.sort(
            key=lambda s: (
                s["metadata"]["creationTimestamp"],
                self._seen_order.get(s["metadata"]["uid"], 0),
            )
        )
        return found

    async def _reconcile(self, namespace: str) -> None:
        address = self.addresses.get(namespace)
        candidates = self._candidates(namespace) if address else []
        taken: dict[_Port, str] = {}
        bound: set[str] = set()
        for svc in candidates:
            assert address is not None
            meta = svc["metadata"]
            clash = next((p for p in _ports(svc) if p in taken), None)
            if clash is not None:
                await self._refuse(svc, address, clash, taken[clash])
                continue
            for port in _ports(svc):
                taken[port] = meta["name"]
            bound.add(meta["uid"])
            self.refused.pop(meta["uid"], None)
            if _ingress_ips(svc) != [address]:
                await self._set_ingress(svc, [{"ip": address}])
            if self.create_backends and (
                not self.backends_need_annotation
                or (meta.get("annotations") or {}).get(CREATE_GATEWAY_BACKEND) == "true"
            ):
                await self._apply_backend(svc, address)
        # Services no longer eligible (type changed, annotation removed, project unmapped) lose the address.
        for (ns, _), svc in list(self.services.items()):
            if ns == namespace and svc["metadata"]["uid"] not in bound:
                known = set(self.addresses.values())
                if any(ip in known for ip in _ingress_ips(svc)):
                    await self._set_ingress(svc, [])

    async def _set_ingress(self, svc: Obj, ingress: list[Obj]) -> None:
        meta = svc["metadata"]
        try:
            updated = await self.api.patch_status(
                SERVICES,
                meta["name"],
                {"status": {"loadBalancer": {"ingress": ingress or None}}},
                meta["namespace"],
            )
        except ApiError as err:
            if err.not_found:
                return
            raise
        self._store(updated)

    async def _refuse(self, svc: Obj, address: str, port: _Port, holder: str) -> None:
        meta = svc["metadata"]
        if _ingress_ips(svc):
            await self._set_ingress(svc, [])
        message = (
            f"port {port} on EIP {_eip_name(svc)} ({address}) is already used by service {holder}; "
            "not binding this service"
        )
        if self.refused.get(meta["uid"]) == message:
            return
        self.refused[meta["uid"]] = message
        now = _now()
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Service",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": REASON_PORT_IN_USE,
            "message": message,
            "type": "Warning",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": "testbed",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.api.create(EVENTS, event, meta["namespace"])

    async def _apply_backend(self, svc: Obj, address: str) -> None:
        meta = svc["metadata"]
        ports = _ports(svc)
        if not ports:
            return
        backend: Obj = {
            "apiVersion": BACKENDS.api_version,
            "kind": "Backend",
            "metadata": {
                "name": f"{meta['name']}-backend",
                "namespace": meta["namespace"],
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"endpoints": [{"ip": {"address": address, "port": ports[0].port}}]},
        }
        await self.api.apply(BACKENDS, backend, field_manager=COMPONENT)
