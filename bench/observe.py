"""The observer: timestamps, from the outside, each step of wiring every solver Service.

Runs as its own process (`python -m bench.observe --kubeconfig PATH`) so that the load generator's and the
stand-ins' CPU never delays a timestamp, and prints one JSON line per first occurrence:

    {"t": <time.monotonic()>, "ev": "added"|"lb"|"ip"|"backend"|"route", "ns": ..., "svc": ...}

`added`: the solver Service appeared; `lb`: it became a LoadBalancer; `ip`: it has its load-balancer
address (the kube-dc stand-in's status write); `backend`: `<svc>-backend` appeared; `route`: `<svc>-acme`
appeared. `{"ev": "synced"}` follows the first list of every stream. CLOCK_MONOTONIC is system-wide on
Linux, so the parent compares these with its own `time.monotonic()`. Both ends of every interval are seen
through the same kind of watch, so the watch delay cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from pathlib import Path

from bench.api import BACKENDS, HTTPROUTES, SERVICES, Api, Credentials, Obj, Resource
from bench.measure import die_with_parent

REPO_ROOT = Path(__file__).resolve().parent.parent
MANAGED = "app.kubernetes.io/managed-by=acme-gateway-reconciler"
SOLVERS = "acme.cert-manager.io/http01-solver=true"


class Observer:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.seen: set[tuple[str, str, str]] = set()
        self.synced = 0

    def emit(self, ev: str, ns: str, svc: str, t: float) -> None:
        if (ev, ns, svc) in self.seen:
            return
        self.seen.add((ev, ns, svc))
        sys.stdout.write(json.dumps({"t": t, "ev": ev, "ns": ns, "svc": svc}) + "\n")

    def service(self, obj: Obj, t: float) -> None:
        md = obj["metadata"]
        ns, name = md["namespace"], md["name"]
        self.emit("added", ns, name, t)
        if (obj.get("spec") or {}).get("type") == "LoadBalancer":
            self.emit("lb", ns, name, t)
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        if ingress:
            self.emit("ip", ns, name, t)

    def derived(self, obj: Obj, t: float) -> None:
        md = obj["metadata"]
        name = md["name"]
        for suffix, ev in (("-backend", "backend"), ("-acme", "route")):
            if name.endswith(suffix) and obj.get("kind") == ("Backend" if ev == "backend" else "HTTPRoute"):
                self.emit(ev, md["namespace"], name[: -len(suffix)], t)

    async def stream(self, res: Resource, selector: str) -> None:
        handle = self.service if res is SERVICES else self.derived
        async for kind, obj in self.api.list_watch(res, selector):
            t = time.monotonic()
            if kind == "SYNCED":
                self.synced += 1
                if self.synced == 3:
                    sys.stdout.write('{"ev": "synced"}\n')
            elif kind in ("ADDED", "MODIFIED"):
                handle(obj, t)
            sys.stdout.flush()


async def observe(kubeconfig: str) -> None:
    async with Api(Credentials.from_kubeconfig(kubeconfig)) as api:
        observer = Observer(api)
        await asyncio.gather(
            observer.stream(SERVICES, SOLVERS),
            observer.stream(BACKENDS, MANAGED),
            observer.stream(HTTPROUTES, MANAGED),
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.observe", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    asyncio.run(observe(parser.parse_args().kubeconfig))


class Timeline:
    """The parent's half: runs the observer process and keeps, per solver Service, when each step was seen."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.steps: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Timeline:
        env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.observe", "--kubeconfig", str(self.kubeconfig),
            stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT, env=env, limit=1 << 20, preexec_fn=die_with_parent,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._synced.wait(), 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            event = json.loads(line)
            if event["ev"] == "synced":
                self._synced.set()
                continue
            self.steps[(event["ns"], event["svc"])].setdefault(event["ev"], event["t"])
            self._changed.set()

    def routed_at(self, key: tuple[str, str]) -> float | None:
        """When both the Backend and the companion route were seen."""
        steps = self.steps.get(key, {})
        if "backend" in steps and "route" in steps:
            return max(steps["backend"], steps["route"])
        return None

    def in_namespaces(self, namespaces: Collection[str]) -> dict[tuple[str, str], dict[str, float]]:
        return {k: v for k, v in self.steps.items() if k[0] in namespaces}

    async def until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until `done()` holds after some observed step (or `timeout` seconds pass); returns `done()`."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True


if __name__ == "__main__":
    main()
