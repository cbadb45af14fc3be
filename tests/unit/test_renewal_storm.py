"""A tiny smoke of the renewal storm benchmark's code (``bench/``): its shape, its arithmetic, its outputs.

The benchmark itself takes minutes on a full stack and is run by hand (``python -m bench.renewal_storm``);
this only makes sure the parts that turn measurements into the table and the picture keep working.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.renewal_storm import storm_shape
from bench.renewal_storm_report import (
    ChallengeSpan,
    ProcSample,
    distribution,
    markdown,
    parse_proc,
    percentile,
    plot,
    process_usage,
    series,
)

STAT = "4242 (python -m reconciler) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0 100 0 0"
STATUS = "Name:\tpython\nVmPeak:\t  90000 kB\nVmRSS:\t   51200 kB\nThreads:\t3\n"


def test_the_storm_has_the_issue_s_shape() -> None:
    specs = storm_shape(150, 50)
    assert len(specs) == 150
    assert {s.project for s in specs} == set(range(50))
    multi = [s for s in specs if s.names > 1]
    assert len(multi) == 50, "a third with 2-3 names"
    assert {s.names for s in multi} == {2, 3}
    assert len({s.name for s in specs}) == 150


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3.0], 95) == 3.0
    assert math.isnan(percentile([], 50))
    assert distribution([1.0, 2.0, 3.0]) == {"p50": 2.0, "p95": 3.0, "p99": 3.0, "max": 3.0, "mean": 2.0}


def test_series_counts_pending_wired_valid_and_ready() -> None:
    spans = [
        ChallengeSpan(created=0.0, scheduled=0.0, wired=0.5, final=2.0, valid=True),
        ChallengeSpan(created=1.0, scheduled=2.5, wired=None, final=None, valid=False),
    ]
    s = series(spans, ready=[2.5], until=3.0, step=1.0)
    assert s["t"] == [0.0, 1.0, 2.0, 3.0]
    assert s["pending"] == [1, 2, 1, 1]
    assert s["processing"] == [1, 1, 0, 1]
    assert s["wired"] == [0, 1, 0, 0]
    assert s["valid"] == [0, 0, 1, 1]
    assert s["ready"] == [0, 0, 0, 1]


def test_proc_readings_become_cpu_and_memory() -> None:
    cpu, rss = parse_proc(STAT, STATUS, 100)
    assert cpu == 3.0  # (250 + 50) ticks
    assert rss == 51200 * 1024
    usage = process_usage([ProcSample(0.0, 1.0, 10 * 2**20), ProcSample(2.0, 2.0, 30 * 2**20)])
    assert usage == {
        "cpu_seconds": 1.0,
        "cpu_percent_mean": 50.0,
        "cpu_percent_peak": 50.0,
        "rss_mib_peak": 30.0,
        "rss_mib_last": 30.0,
    }


def test_table_and_picture(tmp_path: Path) -> None:
    phase = {
        "all_ready_s": 40.0,
        "time_to_ready_s": {"p50": 20.0, "p95": 30.0, "p99": 39.0},
        "ready_certificates": "3/3",
        "series": series([ChallengeSpan(0.0, 0.1, 0.5, 20.0, True)], [21.0], until=25.0),
    }
    report = {"title": "tiny", "phases": {"baseline": phase, "cloud": {**phase, "all_ready_s": 42.0}}}
    table = markdown(report)
    assert "| time until all Ready (s) | 40 | 42 | 1.050x |" in table
    assert "| reconciler CPU seconds | — | — |  |" in table
    plot(report, tmp_path / "storm.png")
    assert (tmp_path / "storm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
