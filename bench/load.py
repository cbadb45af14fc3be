"""The load generator: kube-dc projects and cert-manager-shaped objects over raw HTTP, many at once.

Objects are the test bed's own shapes (`testbed.solverobjects`: solver Service NodePort 8089 with the three
solver labels and a controller reference to its Challenge, cert-manager's HTTPRoute), sent with the bare
aiohttp client with bounded concurrency so the generator is never what a run waits on. No solver Pods: the
reconciler does not watch them. Challenges carry no finalizer, so clean-up needs no solver loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from bench.api import (
    BACKENDS,
    CHALLENGES,
    DOMAINCLAIMS,
    HTTPROUTES,
    NAMESPACES,
    PROJECTS,
    SERVICES,
    Api,
    ApiError,
    Obj,
)
from testbed.certmanager import DEFAULT_PARENT_REFS
from testbed.harness import next_address
from testbed.kubedc import BIND_ON_EIP
from testbed.solverobjects import build_route, build_service

T = TypeVar("T")
CONCURRENCY = 48


async def bounded(jobs: Iterable[Callable[[], Awaitable[T]]], concurrency: int = CONCURRENCY) -> list[T]:
    """Run the jobs with at most `concurrency` in flight; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


@dataclass(frozen=True, slots=True)
class BenchProject:
    org: str
    name: str
    namespace: str
    address: str


@dataclass(slots=True)
class Solver:
    """One challenge's objects."""

    namespace: str
    dns_name: str
    challenge: Obj = field(default_factory=dict)
    service: str = ""
    route: str = ""
    created: float = 0.0  # time.monotonic() when the Service create returned

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.service)


def challenge_body(namespace: str, dns_name: str) -> Obj:
    """A Challenge as cert-manager's Order controller creates it (made-up ACME URLs, no finalizer)."""
    token = secrets.token_urlsafe(32)
    thumbprint = hashlib.sha256(token.encode()).hexdigest()[:43]
    acme = "https://127.0.0.1:14000"
    return {
        "apiVersion": CHALLENGES.api_version,
        "kind": "Challenge",
        "metadata": {"generateName": "challenge-", "namespace": namespace},
        "spec": {
            "url": f"{acme}/chall/{secrets.token_hex(8)}",
            "authorizationURL": f"{acme}/authz/{secrets.token_hex(8)}",
            "dnsName": dns_name,
            "token": token,
            "key": f"{token}.{thumbprint}",
            "type": "HTTP-01",
            "wildcard": False,
            "solver": {"http01": {"gatewayHTTPRoute": {"parentRefs": [dict(p) for p in DEFAULT_PARENT_REFS]}}},
            "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"},
        },
    }


class Load:
    """Creates what the workloads need through `api` (admin); `assign(namespace, address)` tells the kube-dc
    stand-in a project's EIP address."""

    def __init__(self, api: Api, assign: Callable[[str, str], None] | None = None, prefix: str = "b") -> None:
        self.api = api
        self.assign = assign
        self.prefix = prefix
        self._runs = itertools.count()
        self.claims_served: bool | None = None
        self.claim_errors: list[str] = []

    def fresh(self, what: str) -> str:
        """A fresh name prefix per run: every workload runs in new namespaces."""
        return f"{self.prefix}{next(self._runs)}{what}"

    async def namespace(self, name: str) -> None:
        try:
            await self.api.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiError as err:
            if err.status != 409:
                raise

    async def projects(self, prefix: str, count: int, orgs: int = 1, network: str = "cloud") -> list[BenchProject]:
        """`count` Projects spread over `orgs` org namespaces, each with its status.namespace and namespace,
        as kube-dc's project controller leaves them; cloud ones get an EIP address from the stand-in."""
        org_names = [f"{prefix}-o{i}" for i in range(max(1, orgs))]
        await bounded(partial(self.namespace, name) for name in org_names)

        async def one(i: int) -> BenchProject:
            org, name = org_names[i % len(org_names)], f"p{i}"
            namespace = f"{org}-{name}"
            body = {
                "apiVersion": PROJECTS.api_version,
                "kind": "Project",
                "metadata": {"name": name, "namespace": org},
                "spec": {"cidrBlock": "10.100.0.0/24", "egressNetworkType": network},
            }
            await self.api.create(PROJECTS, body, org)
            await self.api.patch(PROJECTS, org, name, {"status": {"namespace": namespace}}, sub="status")
            await self.namespace(namespace)
            address = next_address(network)
            if self.assign is not None:
                self.assign(namespace, address)
            return BenchProject(org, name, namespace, address)

        return await bounded(partial(one, i) for i in range(count))

    async def claims(self, owners: Sequence[tuple[BenchProject, str]]) -> int:
        """Pre-create a DomainClaim per (project, hostname), as a renewal finds them; a no-op (0) while the
        API server does not serve the DomainClaim CRD."""
        if self.claims_served is None:
            self.claims_served = await self.api.served(DOMAINCLAIMS)
        if not self.claims_served:
            return 0

        async def one(project: BenchProject, host: str) -> int:
            body = {
                "apiVersion": DOMAINCLAIMS.api_version,
                "kind": "DomainClaim",
                "metadata": {"name": host},
                "spec": {
                    "hostname": host,
                    "project": {"organization": project.org, "name": project.name},
                    "namespace": project.namespace,
                },
            }
            try:
                await self.api.create(DOMAINCLAIMS, body)
            except ApiError as err:
                if err.status != 409:
                    self.claim_errors.append(str(err))
                    return 0
            return 1

        return sum(await bounded(partial(one, p, h) for p, h in owners))

    async def challenge(self, solver: Solver) -> Solver:
        """What cert-manager's Order and Challenge controllers do first: the Challenge, then its status."""
        ch = await self.api.create(CHALLENGES, challenge_body(solver.namespace, solver.dns_name))
        status = {"status": {"processing": True, "presented": False, "state": "pending"}}
        solver.challenge = await self.api.patch(
            CHALLENGES, solver.namespace, ch["metadata"]["name"], status, sub="status"
        )
        return solver

    async def present(self, solver: Solver) -> Solver:
        """cert-manager's Present: the solver Service, then the solver HTTPRoute naming it."""
        svc = await self.api.create(SERVICES, build_service(solver.challenge))
        solver.created = time.monotonic()
        solver.service = svc["metadata"]["name"]
        route = await self.api.create(HTTPROUTES, build_route(solver.challenge, solver.service))
        solver.route = route["metadata"]["name"]
        return solver

    async def solver(self, solver: Solver) -> Solver:
        """One whole challenge: Challenge, status, solver Service, solver HTTPRoute."""
        return await self.present(await self.challenge(solver))

    async def challenges(self, solvers: Sequence[Solver], concurrency: int = CONCURRENCY) -> list[Solver]:
        return await bounded((partial(self.challenge, s) for s in solvers), concurrency)

    async def presents(self, solvers: Sequence[Solver], concurrency: int = CONCURRENCY) -> list[Solver]:
        return await bounded((partial(self.present, s) for s in solvers), concurrency)

    async def solvers(self, solvers: Sequence[Solver], concurrency: int = CONCURRENCY) -> list[Solver]:
        return await bounded((partial(self.solver, s) for s in solvers), concurrency)

    async def remove(self, solver: Solver) -> None:
        """What cert-manager's CleanUp and the Order's deletion leave: nothing (the garbage collector takes
        the Backend and the companion route with the Service)."""
        await self.api.delete(SERVICES, solver.namespace, solver.service)
        await self.api.delete(HTTPROUTES, solver.namespace, solver.route)
        await self.api.delete(CHALLENGES, solver.namespace, solver.challenge["metadata"]["name"])

    async def drained(self, namespaces: Sequence[str], timeout: float = 120.0) -> bool:
        """Wait until the garbage collector removed every Backend and route in these namespaces."""
        wanted = set(namespaces)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = 0
            for res in (BACKENDS, HTTPROUTES):
                items, _ = await self.api.list_rv(res)
                left += sum(1 for o in items if o["metadata"]["namespace"] in wanted)
            if not left:
                return True
            await asyncio.sleep(1.0)
        return False

    async def churn(self, solvers: Sequence[Solver], rate: float, seconds: float, workers: int = 32) -> int:
        """Rewrite each Challenge's status `rate` times a second (its reason counting down, as cert-manager's
        waitInsteadOfSelfCheck does) for `seconds`, with up to `workers` writes in flight: the rate reached
        is what the API server allows. Returns the writes that succeeded."""
        start = time.monotonic()
        stop_at = start + seconds
        interval = 1 / (rate * len(solvers))
        ticket = itertools.count()
        done = 0

        async def worker() -> None:
            nonlocal done
            while True:
                n = next(ticket)
                due = start + n * interval
                now = time.monotonic()
                if due >= stop_at or now >= stop_at:
                    return
                if due > now:
                    await asyncio.sleep(due - now)
                solver = solvers[n % len(solvers)]
                left = seconds - (n // len(solvers)) / rate
                reason = f"Waiting for HTTP-01 challenge propagation: {left:.3f}s left before self check"
                body = {"status": {"processing": True, "presented": True, "state": "pending", "reason": reason}}
                name = solver.challenge["metadata"]["name"]
                try:
                    await self.api.patch(CHALLENGES, solver.namespace, name, body, sub="status")
                    done += 1
                except ApiError:
                    pass

        await asyncio.gather(*(worker() for _ in range(workers)))
        return done

    async def service(self, namespace: str, index: int, lb: bool = False, port: int = 80) -> None:
        """A plain Service `svc<index>`: ClusterIP, or (`lb`) a LoadBalancer bound on the EIP without node
        ports, as a settled project's platform Services are."""
        spec: Obj = {"ports": [{"name": "http", "port": port, "targetPort": 8080}], "selector": {"app": f"a{index}"}}
        meta: Obj = {"name": f"svc{index}", "namespace": namespace, "labels": {"app": f"a{index}"}}
        if lb:
            spec |= {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False}
            meta["annotations"] = {BIND_ON_EIP: "default-gw"}
        await self.api.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})

    async def set_address(self, namespace: str, name: str, address: str) -> None:
        """The kube-dc stand-in's status write, for populations too large for the stand-in."""
        body = {"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}
        await self.api.patch(SERVICES, namespace, name, body, sub="status")
