"""Issue 13 on the test bed: the reconciler behind injected faults, and two replicas with leader election.

The reconciler talks to the API server through ``testbed.faults.FaultyPath`` (Toxiproxy, then our fault
proxy); the test itself and the stand-ins talk to it directly, so they see the cluster as it is. The
scenarios are ``testbed.scenarios``'s, which ``python -m bench.reliability`` repeats for docs/RELIABILITY.md
(with the full 300-challenge storm); time bounds leave margins for a busy 2-core machine.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from testbed import scenarios
from testbed.controlplane import ControlPlane
from testbed.faults import FaultyPath
from testbed.kube import Kube
from testbed.kubedc import KubeDC
from testbed.storm import StormConfig, storm_pair

pytestmark = pytest.mark.anyio

IDLE_TIMEOUT = 3.0
"""`RECONCILER_WATCH_IDLE_TIMEOUT` in these tests (default 90 s)."""


@pytest.fixture(scope="module")
def faulty_path(control_plane: ControlPlane) -> Iterator[FaultyPath]:
    path = FaultyPath.start(control_plane)
    try:
        yield path
    finally:
        path.stop()


@pytest.fixture
async def bed(
    control_plane: ControlPlane, api: Kube, kubedc: KubeDC, faulty_path: FaultyPath, tmp_path: Path
) -> AsyncIterator[scenarios.Bed]:
    """Projects and reconcilers of one test; no fault on the path before or after it."""
    bed = scenarios.Bed(control_plane, api, kubedc, faulty_path, tmp_path, idle_timeout=IDLE_TIMEOUT)
    bed.clear()
    try:
        yield bed
    finally:
        await bed.close(show_logs=True)


# --- silent watches ----------------------------------------------------------------------------------------


async def test_a_silent_watch_is_detected_and_reopened_within_the_idle_timeout(bed: scenarios.Bed) -> None:
    result = await scenarios.silent_watch(bed)
    print(f"\n{result}")
    assert result.stalled > 0, "the reconciler had watches open"
    assert result.detected <= IDLE_TIMEOUT + 3, "detected within the idle timeout (plus scheduling margin)"
    assert result.wired <= IDLE_TIMEOUT + 10, "a challenge that arrived during the stall is wired"
    assert result.logged >= 1


async def test_a_stalled_path_is_given_up_and_the_reconciler_recovers_when_bytes_flow_again(
    bed: scenarios.Bed,
) -> None:
    result = await scenarios.stalled_path(bed)
    print(f"\n{result}")
    assert result.detected <= IDLE_TIMEOUT + 3
    assert result.recovered <= 20


# --- status codes, latency, resets --------------------------------------------------------------------------


async def test_429_500_and_503_answers_are_retried_and_every_challenge_wires(bed: scenarios.Bed) -> None:
    result = await scenarios.failed_requests(bed, ratio=0.3)
    print(f"\n{result}")
    assert result.wired == result.challenges
    for code in ("429", "500", "503"):
        assert result.answers.get(code, 0) > 0, f"{code} answers seen and survived"
    assert result.backends == result.challenges, "one Backend each, no duplicate"
    assert result.rejected == 0


async def test_latency_and_connection_resets_do_not_duplicate_anything(bed: scenarios.Bed) -> None:
    result = await scenarios.latency_and_resets(bed)
    print(f"\n{result}")
    assert result.wired == result.challenges
    assert result.answers.get("error", 0) > 0, "the resets were felt"
    assert result.backends == result.challenges
    assert result.rejected == 0


async def test_a_forbidden_answer_while_the_api_server_starts_does_not_stop_the_wiring(bed: scenarios.Bed) -> None:
    """For two seconds every write is answered 403, as by an API server whose RBAC authorizer has not synced
    after a restart (seen in the storm); then the permissions are there again: the writes are retried with
    back-off (`result="forbidden"`), never remembered as rejected, and the challenge is wired."""
    result = await scenarios.forbidden_writes(bed)
    print(f"\n{result}")
    assert result.forbidden >= 1
    assert result.rejected == 0, "a 403 about the identity is not a verdict on the write"
    assert result.wired_within_30s


async def test_connections_dropped_during_the_start_up_checks_end_in_one_error_line(bed: scenarios.Bed) -> None:
    result = await scenarios.dropped_startup(bed)
    assert result.exit_code == 1
    assert not result.traceback, "one ERROR line naming the cause, not a traceback"


# --- the storm, reduced --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def storm_plane() -> Iterator[ControlPlane]:
    """A control plane of its own (the storm restarts its API server and compacts its etcd), with the audit
    log of the reconciler's writes and without the watch cache, so a compaction is what a resumed watch
    meets (with the cache on, a watch resumes from the cache's window and the compaction goes unnoticed)."""
    plane = ControlPlane(audit=True, apiserver_flags=("--watch-cache=false",))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


async def test_a_storm_of_challenges_under_every_fault_wires_all_without_duplicates_or_hot_loops(
    storm_plane: ControlPlane, tmp_path: Path
) -> None:
    config = StormConfig(challenges=100, projects=4, batches=8, wire_within=90)
    async with Kube.from_kubeconfig(storm_plane.admin_kubeconfig) as api:
        calm, storm = await storm_pair(storm_plane, api, tmp_path, config)
    print("\n" + json.dumps({"calm": calm.summary(), "storm": storm.summary()}, indent=1))
    for run in (calm, storm):
        assert not run.duplicates, run.summary()
        assert not run.orphans, run.summary()
        assert not run.port_clashes, run.summary()
        assert not run.unconditional, run.unconditional
    assert len(storm.faults) == 5, storm.faults
    assert storm.injected > 0
    assert storm.gone >= 1, "the compaction made a resumed watch relist (410 Gone)"
    assert not storm.crashes, f"the reconciler exited on its own: {storm.crashes}"
    assert storm.requests <= 2 * calm.requests, f"{storm.requests} requests vs {calm.requests} without faults"
    assert calm.wired == config.challenges, calm.unwired
    assert storm.wired == config.challenges, storm.unwired


# --- high availability ---------------------------------------------------------------------------------------


async def test_the_standby_is_warm_and_a_killed_leaders_work_is_taken_over_within_the_lease_plus_2s(
    bed: scenarios.Bed,
) -> None:
    result = await scenarios.failover_after_sigkill(bed)  # default lease: 15 s
    print(f"\nSIGKILL of the leader -> new challenge wired by the other replica in {result.seconds:.2f}s")
    assert result.standby_warm, "the standby reported ready with every informer synced"
    assert result.standby_writes_before == 0, "the standby never writes"
    assert result.lease_transitions == 1
    assert result.holder_changed
    # The standby dates the last renewal by the Lease watch and tries when the term ends (lease + 0.05 s);
    # the rest is the new leader's start (lease acquired, first write) on a busy 2-core machine.
    assert result.seconds <= 15 + 2


async def test_a_sigtermed_leader_drains_releases_the_lease_and_the_other_writes_within_2s(
    bed: scenarios.Bed,
) -> None:
    result = await scenarios.handover_after_sigterm(bed)
    print(f"\nSIGTERM of the leader -> first write by the other replica after {result.seconds:.2f}s")
    assert result.standby_warm
    assert result.old_exit == 0, "drained, released the Lease, exit 0"
    assert "signal received" in result.log
    assert "finishing the writes in progress" in result.log
    assert result.lease_transitions == 1
    assert result.holder_changed
    assert result.seconds <= 2.0
