"""The renewal storm's numbers, table and timeline picture, from what ``bench.renewal_storm`` recorded.

Pure functions over plain data, so the unit suite can run them on a made-up storm in milliseconds: percentiles,
the pending/wired/valid/Ready counts over time, process CPU and memory from /proc samples, the markdown
table and the PNG (matplotlib, the optional ``bench`` extra).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean, rounded to milliseconds."""
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
    }


@dataclass(frozen=True)
class ChallengeSpan:
    """One Challenge's life in seconds from the phase start (None: never happened)."""

    created: float
    scheduled: float | None
    wired: float | None
    final: float | None
    valid: bool


def series(
    challenges: Iterable[ChallengeSpan], ready: Iterable[float], until: float, step: float = 0.5
) -> dict[str, list[float]]:
    """Counts over time: Challenges pending (created, not final), processing (scheduled by cert-manager, at
    most 60 at once), wired (routed, not final), valid so far, Certificates Ready so far; sampled every
    ``step`` seconds from 0 to ``until``."""
    spans, ready_at = list(challenges), sorted(ready)
    out: dict[str, list[float]] = {"t": [], "pending": [], "processing": [], "wired": [], "valid": [], "ready": []}
    steps = int(until / step) + 1
    for i in range(steps):
        t = i * step
        live = [c for c in spans if c.created <= t and (c.final is None or c.final > t)]
        out["t"].append(round(t, 3))
        out["pending"].append(len(live))
        out["processing"].append(sum(1 for c in live if c.scheduled is not None and c.scheduled <= t))
        out["wired"].append(sum(1 for c in live if c.wired is not None and c.wired <= t))
        out["valid"].append(sum(1 for c in spans if c.valid and c.final is not None and c.final <= t))
        out["ready"].append(sum(1 for r in ready_at if r <= t))
    return out


@dataclass(frozen=True)
class ProcSample:
    """One reading of /proc/<pid>: when, CPU seconds used so far (user + system), resident memory."""

    at: float
    cpu_seconds: float
    rss_bytes: int


def parse_proc(stat: str, status: str, ticks_per_second: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) from the text of /proc/<pid>/stat and /proc/<pid>/status."""
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks_per_second  # utime, stime (fields 14, 15 of stat)
    rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    return cpu, rss


def process_usage(samples: Sequence[ProcSample]) -> dict[str, float]:
    """CPU seconds used, mean and peak CPU (% of one core, between consecutive samples), RSS peak and last."""
    if len(samples) < 2:
        return {}
    rates = [
        100 * (b.cpu_seconds - a.cpu_seconds) / (b.at - a.at) for a, b in itertools.pairwise(samples) if b.at > a.at
    ]
    used = samples[-1].cpu_seconds - samples[0].cpu_seconds
    return {
        "cpu_seconds": round(used, 2),
        "cpu_percent_mean": round(100 * used / (samples[-1].at - samples[0].at), 1),
        "cpu_percent_peak": round(max(rates), 1) if rates else 0.0,
        "rss_mib_peak": round(max(s.rss_bytes for s in samples) / 2**20, 1),
        "rss_mib_last": round(samples[-1].rss_bytes / 2**20, 1),
    }


def markdown(report: Mapping[str, Any]) -> str:
    """The results table: one column per phase, the ratio cloud / baseline."""
    phases = report["phases"]
    base, cloud = phases.get("baseline", {}), phases.get("cloud", {})

    def cell(phase: Mapping[str, Any], *path: str) -> str:
        value: Any = phase
        for key in path:
            value = value.get(key, {}) if isinstance(value, Mapping) else {}
        return "—" if value in ({}, None) else f"{value:g}" if isinstance(value, float) else str(value)

    def ratio(*path: str) -> str:
        try:
            b, c = float(cell(base, *path)), float(cell(cloud, *path))
        except ValueError:
            return ""
        return f"{c / b:.3f}x" if b else ""

    rows = [
        ("certificates Ready / created", ("ready_certificates",), False),
        ("Challenges (valid / all)", ("challenges_valid",), False),
        ("time until all Ready (s)", ("all_ready_s",), True),
        ("per certificate p50 (s)", ("time_to_ready_s", "p50"), True),
        ("per certificate p95 (s)", ("time_to_ready_s", "p95"), True),
        ("per certificate p99 (s)", ("time_to_ready_s", "p99"), True),
        ("Challenge scheduled after (p50 s)", ("scheduled_s", "p50"), True),
        ("solver presented after scheduling (p50 / p99 s)", ("solver_after_scheduled",), False),
        ("route wired after the solver appeared (p50 / p99 s)", ("wired_after_solver",), False),
        ("self-check rounds per Challenge (mean)", ("rounds_per_challenge",), False),
        ("self-checks lost per Challenge", ("lost_per_challenge",), False),
        ("lost before the route was wired", ("lost_before_wired",), False),
        ("Challenges whose solver cert-manager made anew", ("challenges_with_a_new_solver",), False),
        ("reconciler CPU seconds", ("reconciler", "cpu_seconds"), False),
        ("reconciler CPU % of a core (mean / peak)", ("reconciler_cpu",), False),
        ("reconciler RSS MiB (peak)", ("reconciler", "rss_mib_peak"), False),
        ("cert-manager CPU seconds", ("cert_manager", "cpu_seconds"), False),
    ]
    lines = ["| | baseline (gateway reaches the solver) | cloud (reconciler wires it) | cloud / baseline |"]
    lines.append("| --- | --- | --- | --- |")
    for label, path, with_ratio in rows:
        lines.append(f"| {label} | {cell(base, *path)} | {cell(cloud, *path)} | {ratio(*path) if with_ratio else ''} |")
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path) -> None:
    """One panel per phase: Challenges pending / wired / valid and Certificates Ready over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [(name, report["phases"][name]) for name in ("baseline", "cloud") if name in report["phases"]]
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4), sharey=True, squeeze=False)
    for ax, (name, phase) in zip(axes[0], phases, strict=True):
        s = phase["series"]
        for key, style in (("pending", "-"), ("processing", ":"), ("wired", "--"), ("valid", "-"), ("ready", "-")):
            ax.plot(s["t"], s[key], style, label=f"{key} ({'Certificates' if key == 'ready' else 'Challenges'})")
        ax.set_title(f"{name}: all Ready in {phase.get('all_ready_s', float('nan')):.0f} s")
        ax.set_xlabel("seconds since the Certificates were created")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("count")
    axes[0][-1].legend(loc="center right", fontsize="small")
    fig.suptitle(report.get("title", "renewal storm"), fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
