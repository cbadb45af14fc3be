"""A stand-in for cert-manager v1.21's ACME HTTP-01 Gateway API solver, driven against the real API server.

The reconciler's whole job is to coexist with cert-manager, so this module reproduces the behaviour the
reconciler must survive, as docs/cert-manager-http01.md describes it (docs/testbed-components.md says why
this is a stand-in). The generated objects themselves are ``testbed.solverobjects``.

Reproduced:
- Challenge objects (``acme.cert-manager.io/v1``) valid per the upstream CRD, created with the ACME
  finalizer as the Order controller does.
- ``present()``: one solver Pod, Service and HTTPRoute per Challenge, ``generateName:
  cm-acme-http-solver-``, the three solver labels (adler32 decimal of dnsName and token, plus
  ``http01-solver: "true"``), a controller owner reference (blockOwnerDeletion) to the Challenge. Service:
  NodePort (or ``gatewayHTTPRoute.serviceType``), port ``http`` 8089 -> 8089, selector = the labels,
  annotation ``auth.istio.io/8089: NONE``. HTTPRoute: parentRefs from the solver, hostnames
  ``[dnsName]`` (omitted for IP addresses), one Exact-path rule to the Service on 8089 with weight 1.
  Pods and Services are found by the solver labels and filtered by controller reference (several: all
  deleted, error, retry). HTTPRoutes are found by the solver labels only, with no owner check (several:
  all but the first deleted, error); the one found is PUT back to the generated spec and labels on any
  difference (the revert), so a tenant's route carrying the labels gets taken over. The Service is never
  compared.
- ``run_challenge()``: processing -> pending; Present once, then each check = Present again (revert) + N
  self-check passes in a row, each followed by a pause; a failed check records ``status.reason`` and retries
  after the retry period; success sets ``valid``. A final state (valid/invalid/expired/errored, also when set
  from outside) triggers CleanUp of solver Pods and Services only, then ``presented``/``processing`` false.
  Deletion of a Challenge: CleanUp if processing, then the finalizer is removed; the HTTPRoute is left to
  the garbage collector.

Not reproduced here: the ACME protocol (no account, order, authorization or Accept call: a passing
self-check means ``valid``, unless ``SolverConfig.accept`` is given), Issuer lookup (the solver config is
read from the Challenge), the scheduler's limits (max concurrent challenges, one challenge per dnsName at a
time), pod templates, extra labels from flags, Ingress solvers, Events, the metrics, and the optional
readiness gates. Redirects are not followed by the default self-check, to keep all traffic on loopback.

Kinder than cert-manager: it acts when the test says (no 10 s retry period, no 5-worker queue), never loses
a status write to a conflict, never makes a solver anew under load, and has no webhook or leader election;
the full-stack suite runs the real controllers for that reason.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, Self

import anyio
import anyio.abc
import httpx

from testbed.kube import CHALLENGES, HTTPROUTES, PODS, SERVICES, ApiError, Kube, Obj, Resource
from testbed.solverobjects import (
    build_pod,
    build_route,
    build_service,
    is_controlled_by,
    route_labels,
    route_spec,
    solver_labels,
)

FINALIZER: Final = "acme.cert-manager.io/finalizer"
FINAL_STATES: Final = frozenset({"valid", "invalid", "expired", "errored"})
FAILURE_STATES: Final = frozenset({"invalid", "expired", "errored"})
DEFAULT_PARENT_REFS: Final = (
    {
        "name": "eg",
        "namespace": "envoy-gateway-system",
        "kind": "Gateway",
        "group": "gateway.networking.k8s.io",
    },
)

SelfCheck = Callable[[Obj], Awaitable[bool]]
Accept = Callable[[Obj], Awaitable[tuple[str, str]]]
"""Called once a Challenge's self-check passed, as cert-manager then accepts the ACME challenge and waits for
the authorization: returns the final (state, reason) to record."""


class PresentError(RuntimeError):
    """Present found duplicates (and deleted them) or the API refused a write; the caller retries."""


# --- Challenges --------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def create_challenge(
    api: Kube,
    namespace: str,
    dns_name: str,
    *,
    name: str | None = None,
    token: str | None = None,
    key: str | None = None,
    parent_refs: Collection[Obj] = DEFAULT_PARENT_REFS,
    route_labels: dict[str, str] | None = None,
    service_type: str | None = None,
    issuer_name: str = "letsencrypt",
    issuer_kind: str = "ClusterIssuer",
    finalizer: bool = True,
    labels: dict[str, str] | None = None,
    url: str | None = None,
    authorization_url: str | None = None,
) -> Obj:
    """Create a Challenge as cert-manager's Order controller would (token/key random unless given; the ACME
    ``url``/``authorization_url`` are made-up data unless given).

    With ``finalizer`` (the default, as upstream) deleting it needs a running solver loop or
    ``remove_finalizer()``.
    """
    token = token or _b64url(secrets.token_bytes(32))
    thumbprint = _b64url(hashlib.sha256(secrets.token_bytes(32)).digest())
    key = key or f"{token}.{thumbprint}"
    gateway_route: Obj = {"parentRefs": [dict(p) for p in parent_refs]}
    if route_labels:
        gateway_route["labels"] = dict(route_labels)
    if service_type:
        gateway_route["serviceType"] = service_type
    acme = "https://127.0.0.1:14000"  # only data: nothing contacts the ACME URLs
    metadata: Obj = {"namespace": namespace}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = "challenge-"
    if labels:
        metadata["labels"] = dict(labels)
    if finalizer:
        metadata["finalizers"] = [FINALIZER]
    body: Obj = {
        "apiVersion": CHALLENGES.api_version,
        "kind": "Challenge",
        "metadata": metadata,
        "spec": {
            "url": url or f"{acme}/chall/{secrets.token_hex(8)}",
            "authorizationURL": authorization_url or f"{acme}/authz/{secrets.token_hex(8)}",
            "dnsName": dns_name,
            "token": token,
            "key": key,
            "type": "HTTP-01",
            "wildcard": False,
            "solver": {"http01": {"gatewayHTTPRoute": gateway_route}},
            "issuerRef": {"name": issuer_name, "kind": issuer_kind, "group": "cert-manager.io"},
        },
    }
    return await api.create(CHALLENGES, body, namespace)


async def remove_finalizer(api: Kube, namespace: str, name: str) -> None:
    """Drop the ACME finalizer (what the controller does on deletion); retried on conflicts."""
    for _ in range(10):
        ch = await api.get_or_none(CHALLENGES, name, namespace)
        if ch is None or FINALIZER not in ch["metadata"].get("finalizers", []):
            return
        ch["metadata"]["finalizers"] = [f for f in ch["metadata"]["finalizers"] if f != FINALIZER]
        try:
            await api.update(CHALLENGES, ch)
            return
        except ApiError as err:
            if not (err.conflict or err.not_found):
                raise
    raise PresentError(f"could not remove the finalizer of {namespace}/{name}")


async def set_state(api: Kube, namespace: str, name: str, state: str, reason: str | None = None) -> Obj:
    """Set ``status.state`` (and reason) directly, e.g. to fail a Challenge from a test."""
    status: Obj = {"state": state}
    if reason is not None:
        status["reason"] = reason
    return await api.patch_status(CHALLENGES, name, {"status": status}, namespace)


# --- Present / CleanUp -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolverObjects:
    """What ``present()`` ensured exists."""

    pod: Obj
    service: Obj
    route: Obj
    route_reverted: bool


async def _owned(api: Kube, res: Resource, ch: Obj) -> list[Obj]:
    items = await api.list(res, ch["metadata"]["namespace"], label_selector=solver_labels(ch))
    return [o for o in items if is_controlled_by(o, ch)]


async def _ensure_one(api: Kube, res: Resource, ch: Obj, build: Callable[[], Obj], what: str) -> Obj:
    existing = await _owned(api, res, ch)
    if len(existing) == 1:
        return existing[0]
    if len(existing) > 1:
        for obj in existing:
            await api.delete(res, obj["metadata"]["name"], obj["metadata"]["namespace"], missing_ok=True)
        raise PresentError(f"found {len(existing)} solver {what}s for one challenge; deleted them all")
    return await api.create(res, build())


async def _ensure_route(api: Kube, ch: Obj, service_name: str) -> tuple[Obj, bool]:
    """Upstream finds the route by the solver labels alone (no owner check, unlike Pods and Services):
    with several it deletes all but the first and fails; with one it reverts any drift of spec/labels
    by GET + full PUT, retried on conflicts."""
    namespace = ch["metadata"]["namespace"]
    routes = await api.list(HTTPROUTES, namespace, label_selector=solver_labels(ch))
    if len(routes) > 1:
        for extra in routes[1:]:
            await api.delete(HTTPROUTES, extra["metadata"]["name"], namespace, missing_ok=True)
        raise PresentError(f"found {len(routes)} solver httproutes for one challenge; deleted the extra ones")
    if not routes:
        return await api.create(HTTPROUTES, build_route(ch, service_name)), False
    route = routes[0]
    want_spec, want_labels = route_spec(ch, service_name), route_labels(ch)
    if route["spec"] == want_spec and (route["metadata"].get("labels") or {}) == want_labels:
        return route, False
    for _ in range(5):
        fresh = await api.get(HTTPROUTES, route["metadata"]["name"], namespace)
        fresh["spec"] = want_spec
        fresh["metadata"]["labels"] = want_labels
        try:
            return await api.update(HTTPROUTES, fresh), True
        except ApiError as err:
            if not err.conflict:
                raise
    raise PresentError(f"could not revert httproute {namespace}/{route['metadata']['name']}: conflicts")


async def present(api: Kube, ch: Obj) -> SolverObjects:
    """Ensure exactly one solver Pod, Service and HTTPRoute exist; revert the HTTPRoute if it drifted."""
    pod_error: Exception | None = None
    pod: Obj = {}
    try:
        pod = await _ensure_one(api, PODS, ch, lambda: build_pod(ch), "pod")
    except (PresentError, ApiError) as err:
        pod_error = err  # upstream carries on to the Service and reports the errors together
    service = await _ensure_one(api, SERVICES, ch, lambda: build_service(ch), "service")
    route, reverted = await _ensure_route(api, ch, service["metadata"]["name"])
    if pod_error is not None:
        raise PresentError(f"solver pod: {pod_error}") from pod_error
    return SolverObjects(pod=pod, service=service, route=route, route_reverted=reverted)


async def cleanup(api: Kube, ch: Obj) -> None:
    """Delete the solver Pods and Services; the HTTPRoute is deliberately left (GC removes it later)."""
    for res in (PODS, SERVICES):
        for obj in await _owned(api, res, ch):
            await api.delete(res, obj["metadata"]["name"], obj["metadata"]["namespace"], missing_ok=True)


# --- self-check and the per-Challenge loop -----------------------------------------------------------


@dataclass(frozen=True)
class HttpSelfCheck:
    """GET ``http://<address>/.well-known/acme-challenge/<token>`` with ``Host: <dnsName>``; passes when
    the body equals the key. ``address`` must be loopback: the test bed sends traffic nowhere else."""

    address: str = "127.0.0.1:80"
    timeout: float = 5.0

    def __post_init__(self) -> None:
        host = self.address.rsplit(":", 1)[0].strip("[]")
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"self-check address {self.address} is not loopback")

    async def __call__(self, ch: Obj) -> bool:
        """One reachability test."""
        spec = ch["spec"]
        url = f"http://{self.address}/.well-known/acme-challenge/{spec['token']}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
                resp = await http.get(url, headers={"Host": spec["dnsName"]})
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and resp.text == spec["key"]


@dataclass(frozen=True)
class SolverConfig:
    """Timing and self-check; defaults are cert-manager's (5 passes, 2 s apart, retry every 10 s)."""

    self_check: SelfCheck = field(default_factory=HttpSelfCheck)
    required_passes: int = 5
    pass_interval: float = 2.0
    retry_period: float = 10.0
    give_up_after: float | None = None  # then the Challenge becomes `invalid`; cert-manager waits forever
    accept: Accept | None = None  # None: a passing self-check means `valid` (no ACME server)
    poll_interval: float = 0.2  # how often waits look for outside changes (final state, deletion)


@dataclass
class ChallengeRun:
    """What happened while solving one Challenge, for assertions."""

    presents: int = 0
    reverts: int = 0
    checks: int = 0
    final_state: str | None = None


async def _status(api: Kube, ch: Obj, status: Obj) -> Obj:
    meta = ch["metadata"]
    return await api.patch_status(CHALLENGES, meta["name"], {"status": status}, meta["namespace"])


async def _finish_deletion(api: Kube, ch: Obj) -> None:
    if ch.get("status", {}).get("processing"):
        await cleanup(api, ch)
    await remove_finalizer(api, ch["metadata"]["namespace"], ch["metadata"]["name"])


async def _wait_or_interrupt(api: Kube, ch: Obj, seconds: float, config: SolverConfig) -> Obj | None:
    """Sleep, but return early with the fresh Challenge if it got a final state or a deletion mark;
    ``None`` if it is gone."""
    deadline = time.monotonic() + seconds
    fresh: Obj | None = ch
    while True:
        fresh = await api.get_or_none(CHALLENGES, ch["metadata"]["name"], ch["metadata"]["namespace"])
        if fresh is None or _interrupted(fresh):
            return fresh
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return fresh
        await anyio.sleep(min(config.poll_interval, remaining))


def _interrupted(ch: Obj) -> bool:
    return bool(ch["metadata"].get("deletionTimestamp")) or ch.get("status", {}).get("state") in FINAL_STATES


async def _check(api: Kube, ch: Obj, config: SolverConfig, run: ChallengeRun) -> tuple[bool, str, Obj | None]:
    """Present again (the revert), then N passes in a row; returns (ok, reason, latest challenge)."""
    objects = await present(api, ch)
    run.presents += 1
    run.reverts += int(objects.route_reverted)
    for i in range(config.required_passes):
        run.checks += 1
        if not await config.self_check(ch):
            return False, f"self check failed at pass {i + 1} of {config.required_passes}", ch
        latest = await _wait_or_interrupt(api, ch, config.pass_interval, config)
        if latest is None or _interrupted(latest):
            return False, "interrupted", latest
    return True, "", ch


async def run_challenge(
    api: Kube, namespace: str, name: str, config: SolverConfig | None = None, run: ChallengeRun | None = None
) -> ChallengeRun:
    """Drive one Challenge to a final state (or until it is deleted) the way cert-manager does."""
    config = config or SolverConfig()
    run = run or ChallengeRun()
    started = time.monotonic()
    ch = await api.get_or_none(CHALLENGES, name, namespace)
    if ch is None:
        return run
    if not ch["metadata"].get("deletionTimestamp"):
        state = ch.get("status", {}).get("state") or "pending"
        ch = await _status(api, ch, {"processing": True, "state": state})
    while ch is not None:
        if ch["metadata"].get("deletionTimestamp"):
            await _finish_deletion(api, ch)
            run.final_state = run.final_state or "deleted"
            return run
        status = ch.get("status", {})
        state = status.get("state")
        if state in FINAL_STATES:
            if status.get("presented"):
                await cleanup(api, ch)
            await _status(api, ch, {"presented": False, "processing": False})
            run.final_state = state
            return run
        try:
            if not status.get("presented"):
                await present(api, ch)
                run.presents += 1
                now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                ch = await _status(api, ch, {"presented": True, "presentedAt": now})
            ok, reason, latest = await _check(api, ch, config, run)
        except (PresentError, ApiError) as err:
            ok, reason, latest = False, f"present failed: {err}", ch
        if latest is None or _interrupted(latest):
            ch = latest
            continue
        if ok:
            state, reason = (
                ("valid", "Successfully authorized domain") if config.accept is None else await config.accept(latest)
            )
            ch = await _status(api, latest, {"state": state, "reason": reason})
            continue
        if config.give_up_after is not None and time.monotonic() - started > config.give_up_after:
            ch = await _status(api, latest, {"state": "invalid", "reason": f"gave up: {reason}"})
            continue
        latest = await _status(api, latest, {"reason": f"Waiting for HTTP-01 challenge propagation: {reason}"})
        ch = await _wait_or_interrupt(api, latest, config.retry_period, config)
    return run


# --- the controller ----------------------------------------------------------------------------------


class SolverLoop:
    """Watches Challenges (all namespaces or the given ones) and runs ``run_challenge`` for each new one;
    also removes the finalizer of deleted Challenges. Use ``async with SolverLoop(api) as loop``."""

    def __init__(
        self, api: Kube, config: SolverConfig | None = None, namespaces: Collection[str] | None = None
    ) -> None:
        self.api = api
        self.config = config or SolverConfig()
        self.namespaces = set(namespaces) if namespaces is not None else None
        self.runs: dict[tuple[str, str], ChallengeRun] = {}
        self._active: set[str] = set()
        self._again: set[str] = set()
        self.errors: list[Exception] = []  # unexpected failures of runs, for assertions
        self._tg: anyio.abc.TaskGroup | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._watch)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._stack.aclose()

    async def _watch(self) -> None:
        assert self._tg is not None
        events: AsyncIterator[Any] = self.api.list_watch(CHALLENGES)
        async for event in events:
            if event.type in ("SYNCED", "DELETED"):
                continue
            ch = event.object
            meta = ch["metadata"]
            if self.namespaces is not None and meta["namespace"] not in self.namespaces:
                continue
            if meta["uid"] in self._active:
                self._again.add(meta["uid"])  # look again when the current run ends
                continue
            deleting = bool(meta.get("deletionTimestamp"))
            if not deleting and ch.get("status", {}).get("state") in FINAL_STATES:
                continue
            if deleting and FINALIZER not in meta.get("finalizers", []):
                continue
            self._active.add(meta["uid"])
            self._tg.start_soon(self._run, meta["namespace"], meta["name"], meta["uid"])

    async def _run(self, namespace: str, name: str, uid: str) -> None:
        run = self.runs.setdefault((namespace, name), ChallengeRun())
        try:
            while True:
                self._again.discard(uid)
                try:
                    await run_challenge(self.api, namespace, name, self.config, run)
                except ApiError:
                    pass  # e.g. the namespace went away mid-run
                except Exception as err:  # keep the other runs going; the test reports these
                    self.errors.append(err)
                    return
                if uid not in self._again:
                    return
                ch = await self.api.get_or_none(CHALLENGES, name, namespace)
                if ch is None or ch["metadata"]["uid"] != uid:
                    return
                meta = ch["metadata"]
                if meta.get("deletionTimestamp"):
                    if FINALIZER not in meta.get("finalizers", []):
                        return
                elif ch.get("status", {}).get("state") in FINAL_STATES:
                    return
        finally:
            self._active.discard(uid)
            self._again.discard(uid)
