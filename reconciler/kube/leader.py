"""Leader election on a coordination.k8s.io Lease, so that only one replica writes.

Two writers would race where the API server cannot referee: both could give two solver Services in one
project the same EIP port. With election a Deployment can roll (or a node can be lost) without that.

- A candidate takes the Lease when it is free or its holder has not renewed it within
  `lease_duration`, judged by when *this* process last saw the record change (local monotonic time, as
  client-go does), so clock skew between nodes cannot shorten a term.
- The leader renews every `retry_period`; if no renewal succeeds within `renew_deadline` (shorter than
  `lease_duration`) it has lost the lease and must stop writing at once: `hold()` raises.
- On a graceful stop the leader releases the Lease so the next one takes over without waiting.
Every update is a PUT conditional on the resourceVersion read, so two candidates cannot both win.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio

from reconciler.kube.client import ApiError
from reconciler.kube.resources import LEASES
from reconciler.model import JSON

log = logging.getLogger(__name__)


class LeaseClient(Protocol):
    async def get(self, resource: Any, namespace: str | None, name: str) -> JSON: ...

    async def create(self, resource: Any, namespace: str | None, body: Any) -> JSON: ...

    async def replace(self, resource: Any, namespace: str | None, name: str, body: Any) -> JSON: ...


class LeaseWatcher(Protocol):
    """What `follow` needs of a client: a watch of one Lease (`KubeClient.watch`)."""

    def watch(
        self, resource: Any, namespace: str | None, resource_version: str, *, field_selector: str | None = ...
    ) -> AbstractAsyncContextManager[AsyncIterator[JSON]]: ...


class LeadershipLost(Exception):
    """The lease could not be renewed in time: another replica may be writing now."""


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: LeaseClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._on_change = on_change or (lambda _: None)
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._released = anyio.Event()
        self.is_leader = False

    async def acquire(self) -> None:
        """Returns once this process holds the lease: tried every `retry_period` (an expired term is only
        seen by polling), and at once when `follow` sees the holder let go."""
        while not await self.try_acquire_or_renew():
            self._released = anyio.Event()
            with anyio.move_on_after(self.retry_period * random.uniform(1.0, 1.2)):
                await self._released.wait()
        log.info("became leader", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})

    async def follow(self, client: LeaseWatcher) -> None:
        """Watches the Lease until cancelled, so a holder handing it back (SIGTERM) is followed at once."""
        selector = f"metadata.name={self.name}"
        while True:
            try:
                async with client.watch(LEASES, self.namespace, "", field_selector=selector) as events:
                    async for event in events:
                        spec = (event.get("object") or {}).get("spec") or {}
                        if event.get("type") in ("MODIFIED", "DELETED") and not spec.get("holderIdentity"):
                            self._released.set()
            except Exception as exc:  # the watch is an optimisation: polling still acquires
                log.debug("lease watch failed; polling only", extra={"error": str(exc)})
                await anyio.sleep(self.retry_period)

    async def hold(self) -> None:
        """Renews until cancelled; raises LeadershipLost when a renewal deadline passes."""
        last_renewal = self._clock()
        while True:
            await anyio.sleep(self.retry_period)
            if await self.try_acquire_or_renew():
                last_renewal = self._clock()
            elif self._clock() - last_renewal >= self.renew_deadline:
                self._set_leader(False)
                raise LeadershipLost(f"lease {self.namespace}/{self.name} not renewed for {self.renew_deadline}s")

    async def release(self) -> None:
        """Hands the lease back (graceful stop) so a standby need not wait for it to expire."""
        if not self.is_leader:
            return
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.identity:
                lease["spec"] = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _now_rfc3339()}
                await self.client.replace(LEASES, self.namespace, self.name, lease)
        except Exception as exc:  # best effort: the lease expires anyway
            log.warning("could not release the lease", extra={"error": str(exc)})
        self._set_leader(False)

    async def try_acquire_or_renew(self) -> bool:
        try:
            return await self._attempt()
        except ApiError as exc:
            if not exc.conflict:
                log.warning("leader election request failed", extra={"status": exc.status, "error": exc.message})
            return False
        except Exception as exc:
            log.warning("leader election request failed", extra={"error": repr(exc)})
            return False

    async def _attempt(self) -> bool:
        now = _now_rfc3339()
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
        except ApiError as exc:
            if not exc.not_found:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, transitions=0),
            }
            await self.client.create(LEASES, self.namespace, body)
            self._observe(self.identity, now)
            self._set_leader(True)
            return True

        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        renewed = str(spec.get("renewTime") or "")
        self._observe(holder, renewed)
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        held_by_other = holder not in ("", self.identity)
        if held_by_other and self._clock() - self._observed_at < duration:
            self._set_leader(False)
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquired = spec.get("acquireTime") if holder == self.identity else now
        lease["spec"] = self._spec(str(acquired or now), now, transitions + (0 if holder == self.identity else 1))
        await self.client.replace(LEASES, self.namespace, self.name, lease)
        self._observe(self.identity, now)
        self._set_leader(True)
        return True

    def _spec(self, acquired: str, renewed: str, transitions: int) -> JSON:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _observe(self, holder: str, renewed: str) -> None:
        if self._observed != (holder, renewed):
            self._observed = (holder, renewed)
            self._observed_at = self._clock()

    def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            self._on_change(leader)
