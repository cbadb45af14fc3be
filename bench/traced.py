"""Run a module under tracemalloc and dump its allocations on SIGUSR1: where the reconciler's memory goes.

    BENCH_TRACEMALLOC_OUT=FILE python -m bench.traced -m reconciler run [flags...]

On SIGUSR1 writes FILE (JSON): traced current/peak bytes, the top allocation sites by line, and the same
grouped by the innermost frame inside `reconciler/` (what kept the memory alive from our code's side).
Tracing slows the process several-fold: its timings mean nothing, only its memory.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

FRAMES = 12
TOP = 25


def _ours(trace: tracemalloc.Traceback) -> str:
    """The innermost frame in the reconciler package, else the innermost frame."""
    frames = list(trace)  # oldest call first
    for frame in reversed(frames):
        if "/reconciler/" in frame.filename:
            return f"reconciler/{frame.filename.rsplit('/reconciler/', 1)[1]}:{frame.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}"


def _package(filename: str) -> str:
    """Which distribution an allocating line belongs to: a site-packages top-level name, `reconciler`,
    or the standard-library module."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/reconciler/" in filename:
        return "reconciler"
    return "stdlib:" + Path(filename).stem


def dump(path: Path) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    current, peak = tracemalloc.get_traced_memory()
    by_line = snapshot.statistics("lineno")
    ours: Counter[str] = Counter()
    for stat in snapshot.statistics("traceback"):
        ours[_ours(stat.traceback)] += stat.size
    by_package: Counter[str] = Counter()
    for stat in snapshot.statistics("filename"):
        by_package[_package(stat.traceback[-1].filename)] += stat.size
    path.write_text(
        json.dumps(
            {
                "traced_mib": current / 2**20,
                "traced_peak_mib": peak / 2**20,
                "top_lines": [
                    {"site": str(s.traceback[-1]), "mib": s.size / 2**20, "count": s.count} for s in by_line[:TOP]
                ],
                "top_reconciler_sites": [{"site": k, "mib": v / 2**20} for k, v in ours.most_common(TOP)],
                "top_packages": [{"package": k, "mib": v / 2**20} for k, v in by_package.most_common(TOP)],
            },
            indent=1,
        )
    )


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        sys.exit("usage: python -m bench.traced -m MODULE [args...]")
    out = Path(os.environ.get("BENCH_TRACEMALLOC_OUT", "tracemalloc.json"))
    tracemalloc.start(FRAMES)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        dump(out)

    signal.signal(signal.SIGUSR1, on_signal)
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
