"""When each step of an issuance happened, from cluster-wide watches: Challenges (created, processing,
presented, final), their solver Services and routes (wired), Certificates (Ready).

Times are epoch seconds taken when the watch event arrives (``time.time()``), so they line up with
cert-manager's log (``testbed.certmanager_log``). A Challenge is *wired* when the gateway has somewhere to
send its token: the reconciler's companion route (route mode shadow), cert-manager's route rewritten to a
Backend (route mode patch), or, in a namespace registered in ``reachable`` (the baseline, whose solver
Services the gateway reaches), cert-manager's own route.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Self

import anyio
import anyio.abc

from testbed.kube import CERTIFICATES, CHALLENGES, HTTPROUTES, SERVICES, Kube, Obj, Resource
from testbed.solverobjects import LABEL_SOLVER

COMPANION_SUFFIX = "-acme"  # the reconciler's companion route: <solver service>-acme


@dataclass
class ChallengeMarks:
    """One Challenge's milestones (epoch seconds, None until seen)."""

    namespace: str
    name: str
    dns_name: str
    created: float
    processing: float | None = None
    presented: float | None = None
    state: str = ""
    reason: str = ""  # status.reason as last seen (why a self-check or validation failed)
    final: float | None = None  # first seen in a final state
    deleted: float | None = None


@dataclass
class CertificateMarks:
    """One Certificate's milestones: first seen, and when each revision was first Ready."""

    namespace: str
    name: str
    created: float
    ready: dict[int, float] = field(default_factory=dict)  # revision -> epoch seconds


def _controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _routes_to_backend(route: Obj) -> bool:
    refs = [ref for rule in route.get("spec", {}).get("rules") or [] for ref in rule.get("backendRefs") or []]
    return any(ref.get("kind") == "Backend" for ref in refs)


FINAL_STATES = frozenset({"valid", "invalid", "expired", "errored"})


@dataclass
class Timeline:
    """``async with Timeline(api) as tl``: records from a complete first list on until the block ends."""

    api: Kube
    challenges: dict[str, ChallengeMarks] = field(default_factory=dict)  # uid -> marks
    certificates: dict[tuple[str, str], CertificateMarks] = field(default_factory=dict)
    # challenge uid -> its solver Services (namespace, name, first seen), oldest first: under load cert-manager
    # sometimes makes two for one Challenge from a stale cache, deletes both and makes a third
    solver_services: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)
    companion_routes: dict[tuple[str, str], float] = field(default_factory=dict)  # (ns, service) -> t
    solver_routes: dict[str, float] = field(default_factory=dict)  # challenge uid -> t cert-manager's route
    patched_routes: dict[str, float] = field(default_factory=dict)  # challenge uid -> t it routed to a Backend
    reachable: set[str] = field(default_factory=set)  # namespaces where cert-manager's own route works
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    _tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        watches: list[tuple[Resource, str | None, Callable[[str, Obj, float], None]]] = [
            (CHALLENGES, None, self._challenge),
            (CERTIFICATES, None, self._certificate),
            (SERVICES, f"{LABEL_SOLVER}=true", self._service),
            (HTTPROUTES, None, self._route),
        ]
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        synced = [anyio.Event() for _ in watches]
        for (res, selector, record), done in zip(watches, synced, strict=True):
            self._tg.start_soon(self._watch, res, selector, record, done)
        with anyio.fail_after(30):
            for done in synced:
                await done.wait()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._stack.aclose()

    async def _watch(
        self, res: Resource, selector: str | None, record: Callable[[str, Obj, float], None], synced: anyio.Event
    ) -> None:
        async for event in self.api.list_watch(res, label_selector=selector):
            if event.type == "SYNCED":
                synced.set()
            else:
                record(event.type, event.object, time.time())

    def _challenge(self, kind: str, obj: Obj, now: float) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        marks = self.challenges.get(meta["uid"])
        if marks is None:
            marks = ChallengeMarks(meta["namespace"], meta["name"], obj["spec"].get("dnsName", ""), now)
            self.challenges[meta["uid"]] = marks
        if kind == "DELETED":
            marks.deleted = marks.deleted or now
            return
        if status.get("processing") and marks.processing is None:
            marks.processing = now
        if status.get("presented") and marks.presented is None:
            marks.presented = now
        marks.reason = str(status.get("reason") or marks.reason)
        state = str(status.get("state") or "")
        if state in FINAL_STATES and marks.final is None:
            marks.final, marks.state = now, state
        elif marks.final is None:
            marks.state = state

    def _certificate(self, kind: str, obj: Obj, now: float) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        key = (meta["namespace"], meta["name"])
        marks = self.certificates.setdefault(key, CertificateMarks(*key, now))
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        revision = int(status.get("revision") or 0)
        if kind != "DELETED" and ready and revision and revision not in marks.ready:
            marks.ready[revision] = now

    def _service(self, kind: str, obj: Obj, now: float) -> None:
        owner = _controller_uid(obj)
        if kind == "DELETED" or owner is None:
            return
        known = self.solver_services.setdefault(owner, [])
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if all((ns, name) != key for ns, name, _ in known):
            known.append((*key, now))

    def _route(self, kind: str, obj: Obj, now: float) -> None:
        meta = obj["metadata"]
        if kind == "DELETED":
            return
        if meta["name"].endswith(COMPANION_SUFFIX):
            service = meta["name"].removesuffix(COMPANION_SUFFIX)
            self.companion_routes.setdefault((meta["namespace"], service), now)
            return
        owner = _controller_uid(obj)
        if owner is None:
            return
        self.solver_routes.setdefault(owner, now)
        if _routes_to_backend(obj):
            self.patched_routes.setdefault(owner, now)

    # --- reading it ------------------------------------------------------------------------------------

    def solver_created(self, challenge_uid: str) -> float | None:
        """When the Challenge's solver Service first appeared."""
        services = self.solver_services.get(challenge_uid)
        return services[0][2] if services else None

    def wired(self, challenge_uid: str) -> float | None:
        """When the gateway first had somewhere to send this Challenge's token (see the module docstring),
        through any of its solver Services."""
        times = [self.patched_routes.get(challenge_uid)]
        marks = self.challenges.get(challenge_uid)
        if marks is not None and marks.namespace in self.reachable:
            times.append(self.solver_routes.get(challenge_uid))
        for namespace, name, _ in self.solver_services.get(challenge_uid, []):
            times.append(self.companion_routes.get((namespace, name)))
        found = [t for t in times if t is not None]
        return min(found) if found else None

    def in_namespaces(self, namespaces: Iterable[str]) -> dict[str, ChallengeMarks]:
        """The Challenges (uid -> marks) of those namespaces."""
        wanted = set(namespaces)
        return {uid: m for uid, m in self.challenges.items() if m.namespace in wanted}

    def by_name(self, namespace: str, name: str) -> tuple[str, ChallengeMarks] | None:
        """(uid, marks) of the Challenge with that name, if seen."""
        return next(((u, m) for u, m in self.challenges.items() if (m.namespace, m.name) == (namespace, name)), None)
