"""The benchmark's code, run at toy sizes on the session's control plane so it does not rot.

Nothing here is timed or compared with a target: benchmarks are run by hand (`python -m bench.run`), on a
machine whose load is recorded with the numbers. This only checks that every workload wires every
challenge on both subjects and that the report is written.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench import report
from bench.bed import bed
from bench.run import Sizes, run_workloads
from testbed.controlplane import ControlPlane

pytestmark = pytest.mark.anyio

TOY = Sizes("toy", 2, 4, 2, 2, 20.0, 0.5, 1, 24, 4, 3, 2, 0.5)


async def test_every_workload_runs_and_reports(control_plane: ControlPlane, tmp_path: Path) -> None:
    async with bed(tmp_path / "logs", control_plane) as the_bed:
        results = await run_workloads(the_bed, TOY, {"latency", "storm", "churn", "scale"}, None)
    results["meta"] = {"size": TOY.name}

    for who in ("reconciler", "floor"):
        assert results["latency"][who]["wired"] == TOY.latency
        assert results["churn"][who]["wiring_during_churn"]["wired"] == TOY.churn_wired
        assert results["churn"][who]["status_writes"] > 0
        assert results["scale"][who]["ready_seconds"] > 0
    for name, run in results["storm"].items():
        assert run["all_wired"], name
        assert len(run["timeline_s"]) == TOY.storm_challenges
    assert results["storm"]["floor-unlimited"]["writes_per_challenge"] == 3.0  # the floor's definition

    report.write(results, tmp_path / "out", lambda _: None)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["storm"].keys() == results["storm"].keys()
    table = (tmp_path / "out" / "results.md").read_text()
    assert "storm total, default settings vs unthrottled floor" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "out" / "latency-cdf.png").stat().st_size > 0
        assert (tmp_path / "out" / "storm-timeline.png").stat().st_size > 0
