"""Measuring primitives: process CPU and memory from /proc, Prometheus text, percentiles, machine facts.

CPU comes from /proc/<pid>/stat (utime + stime), which counts what the process burnt whatever else runs on
the shared machine; wall-clock figures do not have that luxury, so every result also records the load
average.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CLK_TCK = os.sysconf("SC_CLK_TCK")
_prctl = getattr(ctypes.CDLL(None), "prctl", None)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn for the bench's children (subjects, observer, py-spy): SIGKILL when the bench dies, so a
    killed run leaves nothing behind (they run in their own sessions)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def memory_mib(pid: int) -> dict[str, float]:
    """Resident set now (`rss`) and its peak (`hwm`), MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out["rss" if line.startswith("VmRSS") else "hwm"] = int(line.split()[1]) / 1024
    return out


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU and memory of a process at one moment; subtract two to get an interval."""

    cpu: float
    rss: float
    hwm: float

    @classmethod
    def of(cls, pid: int) -> Usage:
        mem = memory_mib(pid)
        return cls(cpu_seconds(pid), mem.get("rss", 0.0), mem.get("hwm", 0.0))


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def git_commit(repo: Path) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class Samples:
    """Parsed Prometheus text: sum of the samples of a name whose labels include the given ones."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())

    def by(self, name: str, *keys: str, **labels: str) -> dict[str, float]:
        """Sums grouped by the values of `keys`, joined with '/'."""
        out: dict[str, float] = {}
        for n, lab, v in self.samples:
            if n == name and labels.items() <= lab.items():
                group = "/".join(lab.get(k, "") for k in keys)
                out[group] = out.get(group, 0.0) + v
        return out


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """Per-key difference, keys that did not change dropped."""
    keys = set(after) | set(before)
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(keys) if after.get(k, 0.0) != before.get(k, 0.0)}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Iterable[float], scale: float = 1.0) -> dict[str, float | int | None]:
    """n, p50, p90, p99, max (times `scale`, e.g. 1000 for ms)."""
    vals = [v * scale for v in values]
    return {
        "n": len(vals),
        "p50": percentile(vals, 50),
        "p90": percentile(vals, 90),
        "p99": percentile(vals, 99),
        "max": max(vals) if vals else None,
    }
