"""Where the reconciler's CPU and memory go, in the storm, under status churn and at scale.

Extra passes after the measured ones (their figures are not used for the targets):
- py-spy (`record --nonblocking`) on the reconciler with its default settings through a storm and through
  status churn (from /readyz 200), and through start-up at scale (from its first instruction); every
  sample is put in one category (below) and the top functions are listed by self time;
- tracemalloc (`bench.traced`) on the reconciler at scale once the work after start-up has settled: the
  allocation sites holding its memory; and the RSS of a process that only imports the reconciler, so
  RSS splits into code and data.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import anyio

from bench.bed import Bed
from bench.measure import die_with_parent, memory_mib
from bench.subjects import Subject
from bench.workloads import churn, scale, storm
from testbed.paths import REPO_ROOT

RATE = 250

# (category, parts of py-spy frames "function (path:line)" that belong to it): a sample goes to the first
# category, in this order, that any frame of its stack belongs to: logging inside the writer is logging,
# json.loads inside the informer is JSON decode, pydantic inside the informer is view building.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("start-up: imports", "(<frozen importlib"),
    ("aiohttp netrc lookup per request (trust_env=True): thread hop",
     "(aiohttp/client.py:778, (aiohttp/client.py:147, (concurrent/futures/, (netrc, _write_to_self"),
    ("logging", "(logging/, (reconciler/log.py"),
    ("metrics (prometheus_client)", "(prometheus_client/"),
    ("JSON encode", "(json/encoder.py"),
    ("JSON decode", "(json/decoder.py, (json/scanner.py"),
    ("pydantic views (model.py)", "(pydantic, (reconciler/model.py"),
    ("pure reconcile", "(reconciler/reconcile/"),
    ("triggers, cache, store", "(reconciler/triggers.py, (reconciler/cache.py, (reconciler/kube/store.py, "
     "(reconciler/watches.py, (reconciler/tracking.py"),
    ("work queue", "(reconciler/kube/queue.py"),
    ("API client: aiohttp, TLS, tenacity, kubernetes_asyncio",
     "(aiohttp/, (ssl.py, (tenacity/, (kubernetes_asyncio/, (reconciler/kube/client.py, (yarl/, (multidict/"),
    ("informer (other)", "(reconciler/kube/informer.py"),
    ("writer (other)", "(reconciler/writer.py, (reconciler/kube/events.py"),
    ("controller, metrics server", "(reconciler/controller.py, (reconciler/server.py, (reconciler/app.py"),
    ("event loop (asyncio, anyio)", "(asyncio/, (anyio/, (selectors.py"),
)  # fmt: skip
IDLE_LEAVES = ("select (selectors.py", "_worker (concurrent/futures/thread.py:81)", "wait (threading.py")
"""Leaf frames of a thread that waits (py-spy --nonblocking cannot always tell): not CPU, left out."""
_MARKS = tuple((name, tuple(parts.split(", "))) for name, parts in CATEGORIES)


def categorize(raw: str) -> dict[str, Any]:
    """py-spy's raw (collapsed) output -> share of samples per category, top leaf functions, top functions
    of ours (innermost `reconciler/` frame)."""
    categories: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(mark in frames[-1] for mark in IDLE_LEAVES):
            idle += count
            continue
        total += count
        category = next((name for name, marks in _MARKS if any(m in f for f in frames for m in marks)), "other")
        categories[category] += count
        leaves[frames[-1]] += count
        mine = next((f for f in reversed(frames) if "(reconciler/" in f), None)
        if mine is not None:
            ours[mine.split(":")[0] + ")"] += count

    def share(c: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in c.most_common(15)} if total else {}

    return {"samples": total, "idle_samples_left_out": idle, "percent_by_category": share(categories),
            "top_leaf_percent": share(leaves), "top_reconciler_function_percent": share(ours)}  # fmt: skip


class PySpy:
    """`py-spy record` attached to a pid until that process exits (then py-spy writes its file)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc: asyncio.subprocess.Process | None = None

    async def attach(self, pid: int) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        binary = Path(sys.executable).parent / "py-spy"
        self.proc = await asyncio.create_subprocess_exec(
            str(binary), "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--nonblocking",
            "--output", str(self.out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip

    async def result(self) -> dict[str, Any]:
        if self.proc is None:
            return {"error": "py-spy did not start"}
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.send_signal(signal.SIGINT)
            await self.proc.wait()
        if not self.out.exists():
            return {"error": f"py-spy wrote nothing (exit {self.proc.returncode}); is ptrace allowed?"}
        return {"file": f"profiles/{self.out.name}"} | categorize(self.out.read_text())


async def _profiled(
    bed: Bed,
    out: Path,
    label: str,
    args: list[str],
    work: Callable[[Subject], Awaitable[dict[str, Any]]],
    from_spawn: bool = False,
) -> dict[str, Any]:
    """py-spy on one reconciler run of `work`: from its first instruction (`from_spawn`, start-up is what
    is measured) or from /readyz 200 (the workload is)."""
    spy = PySpy(out)
    subject = bed.subject("reconciler", args, label=label)
    if from_spawn:
        subject.after_spawn = spy.attach
    else:
        subject.after_ready = spy.attach
    outcome = await work(subject)
    keep = ("total_seconds", "cpu_per_challenge_ms", "cpu_per_event_us", "ready_seconds", "rss_settled_mib")
    return {"run": {k: outcome[k] for k in keep if k in outcome}, "cpu": await spy.result()}


IMPORTS = (
    "sys",
    "aiohttp",
    "pydantic",
    "prometheus_client",
    "kubernetes_asyncio.config",
    "kubernetes_asyncio.client",
    "reconciler.app, reconciler.cli",
)


async def import_rss(modules: str) -> float:
    """RSS (MiB) of a fresh interpreter that imported `modules` and holds no data."""
    code = f"import {modules}, sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=REPO_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    await proc.stdout.readline()
    rss = memory_mib(proc.pid)["rss"]
    proc.stdin.close()
    await proc.wait()
    return rss


async def import_costs() -> dict[str, float]:
    """How much of the RSS is code: each heavy dependency alone, and everything the reconciler imports."""
    return {modules: round(await import_rss(modules), 1) for modules in IMPORTS}


async def traced_scale(bed: Bed, out: Path) -> dict[str, Any]:
    """tracemalloc snapshot of the reconciler once its start-up work at scale has settled."""
    await anyio.Path(out.parent).mkdir(parents=True, exist_ok=True)
    await anyio.Path(out).unlink(missing_ok=True)
    subject = bed.subject("reconciler", label="profile-scale-tracemalloc", wrap=["-m", "bench.traced"])
    subject.env = {"BENCH_TRACEMALLOC_OUT": str(out)}
    await subject.start(bed.kube, ready_within=900.0)
    try:
        await scale.settle(subject, limit=900.0)
        rss = subject.usage().rss
        await subject.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 300
        while not await anyio.Path(out).exists() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # let the writer finish
    finally:
        await subject.stop()
    if not await anyio.Path(out).exists():
        return {"error": "no tracemalloc snapshot"}
    snapshot = cast(dict[str, Any], json.loads(await anyio.Path(out).read_text()))  # bench.traced's JSON object
    return {"file": f"profiles/{out.name}", "rss_under_tracing_mib": rss} | snapshot


async def wiring(bed: Bed, size: Any, only: set[str], out_dir: Path) -> dict[str, Any]:
    """The profile passes that need the kube-dc stand-in (storm, churn): before the scale workload."""
    results: dict[str, Any] = {}
    if "storm" in only:
        challenges, projects = size.storm_challenges, size.storm_projects
        results["storm"] = await _profiled(
            bed, out_dir / "storm-pyspy.txt", "profile-storm", [],
            lambda s: storm.run(bed, s, challenges, projects, 600.0),
        )  # fmt: skip
    if "churn" in only:
        results["churn"] = await _profiled(
            bed, out_dir / "churn-pyspy.txt", "profile-churn", [],
            lambda s: churn.run(bed, s, size.churned, size.churn_rate, size.churn_seconds, size.churn_wired),
        )  # fmt: skip
    return results


async def at_scale(bed: Bed, size: Any, out_dir: Path) -> dict[str, Any]:
    """Start-up CPU and settled memory on the scale workload's population."""
    results: dict[str, Any] = {}
    results["scale_startup"] = await _profiled(
        bed, out_dir / "scale-startup-pyspy.txt", "profile-scale", [],
        lambda s: scale.run(bed, s, min(size.idle_seconds, 5.0)), from_spawn=True,
    )  # fmt: skip
    results["scale_memory"] = await traced_scale(bed, out_dir / "scale-tracemalloc.json")
    results["scale_memory"]["import_only_rss_mib"] = await import_costs()
    return results


def save(out_dir: Path, profiles: dict[str, Any]) -> None:
    """The profile summaries beside the raw py-spy and tracemalloc files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(profiles, indent=1) + "\n")
