"""The two programs under measurement, run the same way: the reconciler (`python -m reconciler run`) and the
floor (`python -m bench.floor`), each a child process under the reconciler's ServiceAccount (bound by
`manifests/rbac.yaml`, applied first), with its own loopback metrics port.

Both report what they did in one shape: writes as `Kind/verb/result`, watch events, reconciles, work-queue
adds, seconds spent waiting on the client-side limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp

from bench.measure import Samples, Usage, die_with_parent
from testbed.controlplane import ControlPlane
from testbed.harness import apply_rbac
from testbed.kube import Kube
from testbed.paths import REPO_ROOT
from testbed.ports import free_loopback_ports

LIMITED = ["--qps", "20", "--burst", "40"]
"""The client-side limit the reconciler had by default until issue 12 (none since), for both subjects: what
a token bucket costs a storm."""


@dataclass
class Counters:
    """Cumulative counters of one subject; subtract two with `minus`."""

    writes: dict[str, float] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)
    reconciles: dict[str, float] = field(default_factory=dict)
    queue_adds: dict[str, float] = field(default_factory=dict)
    throttled_seconds: float = 0.0
    requests: dict[str, float] = field(default_factory=dict)

    def minus(self, before: Counters) -> Counters:
        def sub(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: a.get(k, 0.0) - b.get(k, 0.0) for k in sorted(set(a) | set(b)) if a.get(k, 0.0) != b.get(k, 0.0)}

        return Counters(
            sub(self.writes, before.writes),
            sub(self.events, before.events),
            sub(self.reconciles, before.reconciles),
            sub(self.queue_adds, before.queue_adds),
            self.throttled_seconds - before.throttled_seconds,
            sub(self.requests, before.requests),
        )

    def write_total(self, result: str | None = "success") -> float:
        return sum(v for k, v in self.writes.items() if result is None or k.rsplit("/", 1)[-1] == result)

    def conflicts(self) -> float:
        return sum(v for k, v in self.writes.items() if k.rsplit("/", 1)[-1] in ("conflict", "409"))


@dataclass
class Subject:
    """One program under test; `kind` is "reconciler" or "floor"; `args` its extra flags; `wrap` an argv
    prefix that runs Python differently (e.g. `bench.traced`)."""

    kind: str
    plane: ControlPlane
    log_dir: Path
    args: list[str] = field(default_factory=list)
    label: str = ""
    wrap: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    after_spawn: Callable[[int], Awaitable[None]] | None = None
    """Called with the pid right after the process started (a profiler attaching from the first moment)."""
    after_ready: Callable[[int], Awaitable[None]] | None = None
    """Called with the pid once /readyz answered 200."""
    proc: asyncio.subprocess.Process | None = None
    ready_seconds: float | None = None
    port: int = 0

    @property
    def name(self) -> str:
        return self.label or self.kind

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        kubeconfig = str(self.plane.reconciler_kubeconfig)
        python = [sys.executable] if self.wrap is None else [sys.executable, *self.wrap]
        if self.kind == "reconciler":
            bind = f"127.0.0.1:{self.port}"
            return [
                *python,
                "-m",
                "reconciler",
                "run",
                "--kubeconfig",
                kubeconfig,
                "--metrics-bind-address",
                bind,
                *self.args,
            ]
        return [*python, "-m", "bench.floor", "--kubeconfig", kubeconfig, "--port", str(self.port), *self.args]

    async def start(self, api: Kube, ready_within: float = 120.0) -> None:
        """Start and wait for /readyz 200; `ready_seconds` is the time from spawn to that answer."""
        await apply_rbac(api)
        (self.port,) = free_loopback_ports(1)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env |= {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"} | self.env
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{self.name}.log").open("ab")
        started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(), cwd=REPO_ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip
        log.close()
        if self.after_spawn is not None:
            await self.after_spawn(self.proc.pid)
        async with aiohttp.ClientSession() as http:
            deadline = started + ready_within
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log_dir}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as resp:
                        if resp.status == 200:
                            self.ready_seconds = time.monotonic() - started
                            if self.after_ready is not None:
                                await self.after_ready(self.proc.pid)
                            return
                await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready within {ready_within}s; see {self.log_dir}")

    def usage(self) -> Usage:
        return Usage.of(self.pid)

    async def counters(self) -> Counters:
        async with aiohttp.ClientSession() as http:
            if self.kind == "reconciler":
                async with http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
                    text = await resp.text()
                return _reconciler_counters(text)
            async with http.get(f"http://127.0.0.1:{self.port}/stats") as resp:
                stats = cast(dict[str, Any], await resp.json())  # the floor's /stats JSON object
            return _floor_counters(stats)

    async def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    async def stop(self) -> None:
        if self.proc is None:
            return
        await self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 25)
        except TimeoutError:
            await self.signal(signal.SIGKILL)
            await self.proc.wait()


def _reconciler_counters(text: str) -> Counters:
    m = Samples(text)
    return Counters(
        writes=m.by("acme_gateway_writes_total", "kind", "verb", "result"),
        events=m.by("acme_gateway_watch_events_total", "resource", "type"),
        reconciles=m.by("acme_gateway_reconcile_total", "controller", "result"),
        queue_adds=m.by("workqueue_adds_total", "name"),
        throttled_seconds=m.total("acme_gateway_api_client_rate_limiter_seconds_sum"),
        requests=m.by("acme_gateway_api_requests_total", "verb", "code"),
    )


def _floor_counters(stats: dict[str, Any]) -> Counters:
    writes = {}
    for key, value in stats["writes"].items():
        kind, verb, result = key.split("/")
        writes[f"{kind}/{verb}/{'conflict' if result == '409' else result}"] = float(value)
    events = {f"{k}/ALL": float(v) for k, v in stats["events"].items()}
    return Counters(writes=writes, events=events, requests={"all/all": float(stats["requests"])})
