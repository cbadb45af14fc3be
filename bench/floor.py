"""The floor: the least a client can do to wire a challenge, to measure the reconciler against.

Watches the same streams as the reconciler (Projects, Challenges, Services, Backends, solver and managed
HTTPRoutes; every line `json.loads`-ed) and sends exactly the reconciler's three writes per challenge,
with its bodies (`reconciler/reconcile/services.py`, `backends.py`, `shadows.py`):
1. solver Service -> LoadBalancer with the EIP annotations and its own port (conditional on its
   resourceVersion), as soon as its Challenge and cloud Project are known;
2. Backend `<svc>-backend` as soon as the Service has its load-balancer address;
3. companion HTTPRoute `<svc>-acme` as soon as the Backend exists: right after the Backend create returned,
   not after its watch event.
No queue, no views, no retries beyond "the next event tries again"; the state is what those decisions
need. `--qps/--burst` put the reconciler's token bucket in front of every request.

    python -m bench.floor --kubeconfig PATH --port PORT [--qps Q --burst B]

serves `/readyz` (200 once every stream has listed) and `/stats` (JSON counters) on 127.0.0.1:PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import zlib
from collections import Counter, defaultdict
from typing import Any

from aiohttp import web

from bench.api import BACKENDS, CHALLENGES, HTTPROUTES, PROJECTS, SERVICES, Api, ApiError, Credentials, Obj, Resource
from reconciler.kube.ratelimit import TokenBucket

SOLVER_LABEL = "acme.cert-manager.io/http01-solver"
DOMAIN_LABEL = "acme.cert-manager.io/http-domain"
TOKEN_LABEL = "acme.cert-manager.io/http-token"
BIND_ON_EIP = "service.nlb.kube-dc.com/bind-on-eip"
CREATE_BACKEND = "service.nlb.kube-dc.com/create-gateway-backend"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "acme-gateway-reconciler"
EIP = "default-gw"
PORTS = range(8089, 8189)
CHALLENGE_PATH = "/.well-known/acme-challenge/"

Key = tuple[str, str]

# The reconciler's watch table (reconciler/watches.py): resource and server-side label selector.
STREAMS: tuple[tuple[Resource, str | None], ...] = (
    (PROJECTS, None),
    (CHALLENGES, None),
    (SERVICES, None),
    (BACKENDS, None),
    (HTTPROUTES, DOMAIN_LABEL),
    (HTTPROUTES, f"{MANAGED_BY}={MANAGED_BY_VALUE}"),
)


def _key(obj: Obj) -> Key:
    md = obj["metadata"]
    return (md.get("namespace") or "", md["name"])


def _owner_refs(svc: Obj) -> list[Obj]:
    md = svc["metadata"]
    ref = {"apiVersion": "v1", "kind": "Service", "name": md["name"], "uid": md["uid"]}
    return [ref | {"controller": True, "blockOwnerDeletion": True}]


def _port_raw(port: Obj) -> Obj:
    """A port as the reconciler sends it back (`ServicePort.raw`)."""
    out: Obj = {"port": port["port"], "protocol": port.get("protocol") or "TCP"}
    for key in ("name", "targetPort", "nodePort"):
        if port.get(key) is not None:
            out[key] = port[key]
    return out


class Floor:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.cloud: dict[str, bool] = {}  # project namespace -> cloud
        self.tokens: dict[str, tuple[str, str]] = {}  # Challenge uid -> its solver labels (dnsName, token)
        self.challenge_token: dict[str, str] = {}  # Challenge uid -> token
        self.solvers: dict[Key, Obj] = {}
        self.eip_ports: dict[str, dict[str, set[int]]] = defaultdict(dict)  # ns -> svc -> ports on the EIP
        self.cm_routes: dict[Key, Obj] = {}  # (ns, service) -> cert-manager's route spec
        self.patching: set[Key] = set()
        self.backends: set[Key] = set()  # services whose Backend we are creating, created or saw
        self.backend_port: dict[Key, int] = {}
        self.routed: set[Key] = set()
        self.writes: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.synced = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- streams ---------------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(*(self._stream(res, sel) for res, sel in STREAMS))

    async def _stream(self, res: Resource, selector: str | None) -> None:
        handle = {
            "projects": self._project,
            "challenges": self._challenge,
            "services": self._service,
            "backends": self._backend,
            "httproutes": self._route,
        }[res.plural]
        label = res.plural if selector is None or res is not HTTPROUTES else f"httproutes[{selector}]"
        async for kind, obj in self.api.list_watch(res, selector):
            self.events[label] += 1
            if kind == "SYNCED":
                self.synced += 1
            elif kind != "BOOKMARK":
                handle(kind, obj)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handlers --------------------------------------------------------------------------------

    def _project(self, kind: str, obj: Obj) -> None:
        md, spec = obj["metadata"], obj.get("spec") or {}
        ns = (obj.get("status") or {}).get("namespace") or f"{md['namespace']}-{md['name']}"
        if kind == "DELETED":
            self.cloud.pop(ns, None)
            return
        cloud = (spec.get("egressNetworkType") or spec.get("externalNetworkType")) == "cloud"
        if self.cloud.get(ns) != cloud:
            self.cloud[ns] = cloud
            for key, svc in list(self.solvers.items()):
                if key[0] == ns:
                    self._decide(svc)

    def _challenge(self, kind: str, obj: Obj) -> None:
        uid, spec = obj["metadata"]["uid"], obj.get("spec") or {}
        if kind == "DELETED":
            self.challenge_token.pop(uid, None)
            return
        if uid in self.challenge_token:
            return  # status churn: nothing the floor reads changed
        token, dns = spec.get("token") or "", spec.get("dnsName") or ""
        self.challenge_token[uid] = token
        self.tokens[uid] = (str(zlib.adler32(dns.encode())), str(zlib.adler32(token.encode())))
        for svc in list(self.solvers.values()):
            if self._challenge_uid(svc) == uid:
                self._decide(svc)

    def _service(self, kind: str, obj: Obj) -> None:
        key = _key(obj)
        md = obj["metadata"]
        ports = self.eip_ports[key[0]]
        if kind == "DELETED":
            self.solvers.pop(key, None)
            ports.pop(key[1], None)
            return
        annotations = md.get("annotations") or {}
        if (obj.get("spec") or {}).get("type") == "LoadBalancer" and annotations.get(BIND_ON_EIP) == EIP:
            ports[key[1]] = {p["port"] for p in obj["spec"].get("ports") or ()}
        elif key not in self.patching:
            ports.pop(key[1], None)
        if (md.get("labels") or {}).get(SOLVER_LABEL) != "true":
            return
        old = self.solvers.get(key)
        if old is not None and int(old["metadata"]["resourceVersion"]) > int(md["resourceVersion"]):
            return  # older than the answer to our own patch
        self.solvers[key] = obj
        self._decide(obj)

    def _backend(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if kind == "ADDED" and name.endswith("-backend"):
            key = (obj["metadata"]["namespace"], name[: -len("-backend")])
            endpoints = (obj.get("spec") or {}).get("endpoints") or [{}]
            port = (endpoints[0].get("ip") or {}).get("port")
            if key in self.solvers and key not in self.backend_port and isinstance(port, int):
                self.backends.add(key)
                self.backend_port[key] = port
                self._route_if_ready(key)

    def _route(self, kind: str, obj: Obj) -> None:
        labels = obj["metadata"].get("labels") or {}
        if DOMAIN_LABEL not in labels or kind == "DELETED":
            return
        ns = obj["metadata"]["namespace"]
        for rule in (obj.get("spec") or {}).get("rules") or ():
            for ref in rule.get("backendRefs") or ():
                if (ref.get("kind") or "Service") == "Service" and not ref.get("group"):
                    key = (ns, ref["name"])
                    if key not in self.cm_routes:
                        self.cm_routes[key] = obj["spec"]
                        self._route_if_ready(key)

    # -- decisions -------------------------------------------------------------------------------

    @staticmethod
    def _challenge_uid(svc: Obj) -> str | None:
        for ref in svc["metadata"].get("ownerReferences") or ():
            if ref.get("controller") and ref.get("kind") == "Challenge":
                return str(ref["uid"])
        return None

    def _decide(self, svc: Obj) -> None:
        key, md = _key(svc), svc["metadata"]
        uid = self._challenge_uid(svc)
        labels = md.get("labels") or {}
        if uid is None or self.tokens.get(uid) != (labels.get(DOMAIN_LABEL), labels.get(TOKEN_LABEL)):
            return  # no (matching) Challenge yet: its event decides again
        if not self.cloud.get(key[0]) or md.get("deletionTimestamp"):
            return
        spec = svc.get("spec") or {}
        annotations = md.get("annotations") or {}
        if spec.get("type") != "LoadBalancer" or annotations.get(BIND_ON_EIP) != EIP:
            if key not in self.patching:
                self.patching.add(key)
                self._spawn(self._patch_service(svc))
            return
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        if ingress and ingress[0].get("ip") and key not in self.backends:
            self.backends.add(key)
            self._spawn(self._create_backend(svc, ingress[0]["ip"]))

    def _free_port(self, key: Key) -> int | None:
        used = set().union(*(p for name, p in self.eip_ports[key[0]].items() if name != key[1]))
        return next((p for p in PORTS if p not in used), None)

    async def _patch_service(self, svc: Obj) -> None:
        key, md, spec = _key(svc), svc["metadata"], svc.get("spec") or {}
        port = self._free_port(key)
        if port is None:
            self.patching.discard(key)
            return
        self.eip_ports[key[0]][key[1]] = {port}  # reserved before the await: the next solver sees it
        body: Obj = {
            "metadata": {
                "annotations": {BIND_ON_EIP: EIP, CREATE_BACKEND: "true"},
                "resourceVersion": md["resourceVersion"],
            },
            "spec": {"type": "LoadBalancer"},
        }
        ports = spec.get("ports") or []
        if ports and ports[0]["port"] != port:
            body["spec"]["ports"] = [_port_raw(ports[0]) | {"port": port}, *(_port_raw(p) for p in ports[1:])]
        answer = await self._write("Service/patch", self.api.patch(SERVICES, key[0], key[1], body))
        if answer is None:
            self.patching.discard(key)
            self.eip_ports[key[0]].pop(key[1], None)
        else:
            self._service("MODIFIED", answer)

    async def _create_backend(self, svc: Obj, address: str) -> None:
        key, md = _key(svc), svc["metadata"]
        annotations = md.get("annotations") or {}
        port = int(annotations.get("service.nlb.kube-dc.com/route-port") or svc["spec"]["ports"][0]["port"])
        body: Obj = {
            "apiVersion": BACKENDS.api_version,
            "kind": "Backend",
            "metadata": {
                "name": f"{key[1]}-backend",
                "namespace": key[0],
                "labels": {MANAGED_BY: MANAGED_BY_VALUE},
                "ownerReferences": _owner_refs(svc),
            },
            "spec": {"endpoints": [{"ip": {"address": address, "port": port}}]},
        }
        answer = await self._write("Backend/create", self.api.create(BACKENDS, body, key[0]))
        if answer is None:
            self.backends.discard(key)
            return
        self.backend_port[key] = port
        self._route_if_ready(key)

    def _route_if_ready(self, key: Key) -> None:
        svc = self.solvers.get(key)
        spec = self.cm_routes.get(key)
        if svc is None or spec is None or key not in self.backend_port or key in self.routed:
            return
        token = self.challenge_token.get(self._challenge_uid(svc) or "")
        if token is None:
            return
        self.routed.add(key)
        self._spawn(self._create_route(svc, spec, token, self.backend_port[key]))

    async def _create_route(self, svc: Obj, cm_spec: Obj, token: str, port: int) -> None:
        key = _key(svc)
        ref = {"group": "gateway.envoyproxy.io", "kind": "Backend", "name": f"{key[1]}-backend", "weight": 1}
        spec: Obj = {
            "parentRefs": [dict(p) for p in cm_spec.get("parentRefs") or ()],
            "rules": [
                {
                    "matches": [{"path": {"type": "Exact", "value": CHALLENGE_PATH + token}, "method": "GET"}],
                    "backendRefs": [ref | {"port": port}],
                }
            ],
        }
        if cm_spec.get("hostnames"):
            spec["hostnames"] = list(cm_spec["hostnames"])
        body: Obj = {
            "apiVersion": HTTPROUTES.api_version,
            "kind": "HTTPRoute",
            "metadata": {
                "name": f"{key[1]}-acme",
                "namespace": key[0],
                "labels": {MANAGED_BY: MANAGED_BY_VALUE},
                "ownerReferences": _owner_refs(svc),
            },
            "spec": spec,
        }
        if await self._write("HTTPRoute/create", self.api.create(HTTPROUTES, body, key[0])) is None:
            self.routed.discard(key)

    async def _write(self, what: str, call: Any) -> Obj | None:
        try:
            answer: Obj = await call
        except ApiError as err:
            self.writes[f"{what}/{err.status}"] += 1
            return None
        except Exception:  # a dropped connection: the next event tries again
            self.writes[f"{what}/error"] += 1
            return None
        self.writes[f"{what}/success"] += 1
        return answer

    def stats(self) -> dict[str, Any]:
        return {"writes": dict(self.writes), "events": dict(self.events), "requests": self.api.requests}


async def serve(kubeconfig: str, port: int, qps: float | None, burst: int) -> None:
    limiter = TokenBucket(qps, burst) if qps else None
    async with Api(Credentials.from_kubeconfig(kubeconfig), limiter) as api:
        floor = Floor(api)

        async def readyz(_: web.Request) -> web.Response:
            ready = floor.synced >= len(STREAMS)
            return web.Response(status=200 if ready else 503, text="ok" if ready else "syncing")

        async def stats(_: web.Request) -> web.Response:
            return web.json_response(floor.stats())

        app = web.Application()
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await floor.run()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qps", type=float, default=None, help="client-side limit (default: none)")
    parser.add_argument("--burst", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(serve(args.kubeconfig, args.port, args.qps, args.burst))


if __name__ == "__main__":
    main()
