"""Issue 13 on the test bed: the reconciler behind injected faults, and two replicas with leader election.

The reconciler talks to the API server through ``testbed.faults.FaultyPath`` (Toxiproxy, then our fault
proxy); the test itself and the stand-ins talk to it directly, so they see the cluster as it is. The full
storm (300 challenges) and every measurement are ``python -m bench.reliability`` (docs/RELIABILITY.md); these
are the quick ones, with margins for a busy 2-core machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from testbed.controlplane import ControlPlane
from testbed.faults import FaultyPath, start_reconciler_via
from testbed.harness import CertManager, ProjectFactory, ReconcilerProcess, StartReconciler
from testbed.kube import BACKENDS, LEASES, Kube, Obj, wait_for
from testbed.storm import StormConfig, storm_pair
from tests.e2e.test_reconciler import WIRE_WITHIN, assert_clean, wired, writes

pytestmark = pytest.mark.anyio

IDLE_TIMEOUT = 3.0
"""`RECONCILER_WATCH_IDLE_TIMEOUT` in these tests (default 90 s)."""
LEASE_NAMESPACE = "acme-gateway-reconciler"


@pytest.fixture(scope="module")
def faulty_path(control_plane: ControlPlane) -> Iterator[FaultyPath]:
    path = FaultyPath.start(control_plane)
    try:
        yield path
    finally:
        path.stop()


@pytest.fixture
async def via_faults(api: Kube, faulty_path: FaultyPath, tmp_path: Path) -> AsyncIterator[_Starter]:
    """Start reconcilers whose kubeconfig points at the faulty path; faults are cleared before and after."""
    clear(faulty_path)
    starter = _Starter(api, faulty_path, tmp_path)
    try:
        yield starter
    finally:
        clear(faulty_path)
        for proc in starter.processes:
            code = await proc.terminate()
            print(f"\n--- reconciler log {proc.log_path} (exit {code}) ---\n{proc.log()}")


class _Starter:
    def __init__(self, api: Kube, path: FaultyPath, tmp_path: Path) -> None:
        self.api, self.path, self.tmp_path = api, path, tmp_path
        self.processes: list[ReconcilerProcess] = []

    async def __call__(self, namespace: str, *args: str, wait_ready: bool = True) -> ReconcilerProcess:
        log = self.tmp_path / f"reconciler-{len(self.processes)}.log"
        env = {"RECONCILER_WATCH_IDLE_TIMEOUT": str(IDLE_TIMEOUT)}
        proc = await start_reconciler_via(self.path.kubeconfig, self.api, log, ["--namespaces", namespace, *args], env)
        self.processes.append(proc)
        await proc.start(wait_ready=False)
        if wait_ready:
            await proc.wait_ready(within=60)
        return proc


def clear(path: FaultyPath) -> None:
    path.proxy.configure(0.0)
    path.proxy.resume_watches()
    path.toxic.enable(True)
    for toxic in ("stall", "latency", "reset"):
        try:
            path.toxic.remove(toxic)
        except Exception:  # noqa: S112 - absent: nothing to clear
            continue


async def _wired_challenge(api: Kube, cert_manager: CertManager, namespace: str, host: str) -> Obj:
    ch = await cert_manager.challenge(namespace, host, finalizer=False)
    await cert_manager.present(ch)
    return ch


# --- silent watches ----------------------------------------------------------------------------------------


async def test_a_silent_watch_is_detected_and_reopened_within_the_idle_timeout(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, via_faults: _Starter
) -> None:
    p = await project("cloud")
    rec = await via_faults(p.namespace)
    ch1 = await _wired_challenge(api, cert_manager, p.namespace, "before.example.test")
    await wait_for(lambda: wired(api, ch1), within=WIRE_WITHIN, what="wired before the stall")

    stalled = via_faults.path.proxy.stall_watches()  # connections open, no byte more: no events, no bookmarks
    started = time.monotonic()
    assert stalled, "the reconciler had watches open"
    ch2 = await _wired_challenge(api, cert_manager, p.namespace, "during.example.test")

    async def detected() -> float | None:
        silent = (await rec.metrics()).total("acme_gateway_watch_restarts_total", reason="silent")
        return time.monotonic() - started if silent >= 1 else None

    detection = await wait_for(detected, within=IDLE_TIMEOUT + 10, interval=0.1, what="a silent watch counted")
    await wait_for(lambda: wired(api, ch2), within=IDLE_TIMEOUT + 15, what="wired through the re-opened watches")
    wiring = time.monotonic() - started
    print(f"\nsilent watch: {len(stalled)} stalled, detected after {detection:.2f}s, new challenge wired {wiring:.2f}s")
    assert detection <= IDLE_TIMEOUT + 3, "detected within the idle timeout (plus scheduling margin)"
    assert rec.log().count("silent") >= 1, "logged"
    assert_clean(await rec.metrics(), rec)


async def test_a_stalled_path_is_given_up_and_the_reconciler_recovers_when_bytes_flow_again(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, via_faults: _Starter
) -> None:
    """Toxiproxy holds every byte from the API server (latency of an hour), on open and new connections."""
    p = await project("cloud")
    rec = await via_faults(p.namespace)
    via_faults.path.toxic.stall()
    ch = await _wired_challenge(api, cert_manager, p.namespace, "stalled.example.test")

    async def silent() -> bool:
        return (await rec.metrics()).total("acme_gateway_watch_restarts_total", reason="silent") >= 1

    await wait_for(silent, within=IDLE_TIMEOUT + 10, what="the stalled watches given up")
    via_faults.path.toxic.unstall()
    await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired once the path flows again")
    assert_clean(await rec.metrics(), rec)


# --- status codes, latency, resets --------------------------------------------------------------------------


async def test_429_500_and_503_answers_are_retried_and_every_challenge_wires(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, via_faults: _Starter
) -> None:
    p = await project("cloud")
    via_faults.path.proxy.configure(0.3, retry_after=1)  # from the first request on: start-up checks too
    rec = await via_faults(p.namespace)
    challenges = [await _wired_challenge(api, cert_manager, p.namespace, f"s{i}.example.test") for i in range(5)]
    for ch in challenges:
        await wait_for(lambda ch=ch: wired(api, ch), within=45, what="wired despite 30% failed requests")  # type: ignore[misc]
    m = await rec.metrics()
    for code in ("429", "500", "503"):
        assert m.total("acme_gateway_api_requests_total", code=code) > 0, f"{code} answers seen and survived"
    assert writes(m, kind="Backend", verb="create", result="success") == 5, "one Backend each, no duplicate"
    assert writes(m, result="rejected") == 0


async def test_latency_and_connection_resets_do_not_duplicate_anything(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, via_faults: _Starter
) -> None:
    p = await project("cloud")
    rec = await via_faults(p.namespace)
    toxic = via_faults.path.toxic
    toxic.add("latency", "latency", stream="downstream", latency=150, jitter=100)
    challenges = [await _wired_challenge(api, cert_manager, p.namespace, f"l{i}.example.test") for i in range(4)]
    for _ in range(3):  # every connection reset by peer, three times while the challenges are wired
        toxic.add("reset", "reset_peer", timeout=0)
        await anyio.sleep(0.3)
        toxic.remove("reset")
        await anyio.sleep(1.0)
    for ch in challenges:
        await wait_for(lambda ch=ch: wired(api, ch), within=45, what="wired despite latency and resets")  # type: ignore[misc]
    m = await rec.metrics()
    assert m.total("acme_gateway_api_requests_total", code="error") > 0, "the resets were felt"
    backends = await api.list(BACKENDS, p.namespace)
    assert len(backends) == 4, [b["metadata"]["name"] for b in backends]
    assert writes(m, result="rejected") == 0


FORBIDDEN_STUCK = (
    "reconciler/writer.py remembers a write answered 403 as rejected for REJECTED_MEMORY_SECONDS (600 s) and "
    "sends it as not_sent meanwhile; a restarting API server answers 403 until its authorizer has synced, so the "
    "challenge stays unwired for 10 min (lead to fix: a 403 is about the identity, not the write: retry it)"
)


@pytest.mark.xfail(strict=True, reason=FORBIDDEN_STUCK)
async def test_a_forbidden_answer_while_the_api_server_starts_does_not_stop_the_wiring(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, via_faults: _Starter
) -> None:
    """For two seconds every write is answered 403, as by an API server whose RBAC authorizer has not synced
    after a restart (seen in the storm); then the permissions are there again."""
    p = await project("cloud")
    rec = await via_faults(p.namespace)
    via_faults.path.proxy.configure(1.0, codes=(403,), only_writes=True)
    ch = await _wired_challenge(api, cert_manager, p.namespace, "forbidden.example.test")
    await rec.metrics_when(lambda m: writes(m, result="rejected") >= 1, "a write answered 403")
    await anyio.sleep(2.0)
    via_faults.path.proxy.configure(0.0)
    await wait_for(lambda: wired(api, ch), within=30, what="wired once the API server allows the writes again")


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
    config = StormConfig(challenges=60, projects=3, batches=6, wire_within=90)
    async with Kube.from_kubeconfig(storm_plane.admin_kubeconfig) as api:
        calm, storm = await storm_pair(storm_plane, api, tmp_path, config)
    print("\n" + json.dumps({"calm": calm.summary(), "storm": storm.summary()}, indent=1))
    for run in (calm, storm):
        assert not run.duplicates and not run.orphans and not run.port_clashes, run.summary()
        assert not run.unconditional, run.unconditional
    assert len(storm.faults) == 5, storm.faults
    assert storm.injected > 0
    assert storm.gone >= 1, "the compaction made a resumed watch relist (410 Gone)"
    assert not storm.crashes, f"the reconciler exited on its own: {storm.crashes}"
    assert storm.requests <= 2 * calm.requests, f"{storm.requests} requests vs {calm.requests} without faults"
    assert calm.wired == config.challenges, calm.unwired
    if storm.wired < config.challenges and 0 < len(storm.unwired) <= storm.forbidden:
        pytest.xfail(f"{FORBIDDEN_STUCK}: {storm.forbidden} writes answered 403, unwired {storm.unwired}")
    assert storm.wired == config.challenges, storm.unwired


# --- high availability ---------------------------------------------------------------------------------------


def _election(name: str, **timing: str) -> dict[str, str]:
    return {"RECONCILER_LEADER_ELECTION_ID": f"lease-{name}", **timing}


async def _leader_of(*replicas: ReconcilerProcess) -> tuple[ReconcilerProcess, ReconcilerProcess] | None:
    leaders = [r for r in replicas if (await r.metrics()).value("acme_gateway_leader") == 1]
    if len(leaders) != 1:
        return None
    return leaders[0], next(r for r in replicas if r is not leaders[0])


async def _warm(rec: ReconcilerProcess) -> bool:
    """Ready, every informer synced, the Project in its cache: it could lead without listing first."""
    if (await rec.get("/readyz")).status_code != 200:
        return False
    m = await rec.metrics()
    synced = m.find("acme_gateway_informer_synced")
    return bool(synced) and all(s.value == 1 for s in synced) and m.total("acme_gateway_cache_objects") > 0


async def test_the_standby_is_warm_and_a_killed_leaders_work_is_taken_over_within_the_lease_plus_2s(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    args, env = ["--namespaces", p.namespace, "--leader-elect"], _election(p.name)  # default 15 s lease
    first = await reconciler(args=args, env=env)
    second = await reconciler(args=args, env=env)
    leader, standby = await wait_for(lambda: _leader_of(first, second), within=WIRE_WITHIN, what="one leader")
    await wait_for(lambda: _warm(standby), within=WIRE_WITHIN, what="the standby ready with warm caches")
    ch1 = await _wired_challenge(api, cert_manager, p.namespace, "first.example.test")
    await wait_for(lambda: wired(api, ch1), within=WIRE_WITHIN, what="wired by the leader")
    assert writes(await standby.metrics()) == 0, "the standby never writes"

    await leader.kill()
    killed = time.monotonic()
    ch2 = await _wired_challenge(api, cert_manager, p.namespace, "second.example.test")
    await wait_for(lambda: wired(api, ch2), within=15 + 10, interval=0.1, what="wired by the new leader")
    takeover = time.monotonic() - killed
    print(f"\nSIGKILL of the leader -> new challenge wired by the other replica in {takeover:.2f}s (lease 15 s)")
    assert takeover <= 15 + 2
    m = await standby.metrics()
    assert m.value("acme_gateway_leader") == 1
    assert_clean(m, standby)


async def test_a_sigtermed_leader_drains_releases_the_lease_and_the_other_writes_within_2s(
    api: Kube, project: ProjectFactory, cert_manager: CertManager, reconciler: StartReconciler
) -> None:
    p = await project("cloud")
    args, env = ["--namespaces", p.namespace, "--leader-elect"], _election(p.name)
    first = await reconciler(args=args, env=env)
    second = await reconciler(args=args, env=env)
    leader, standby = await wait_for(lambda: _leader_of(first, second), within=WIRE_WITHIN, what="one leader")
    await wait_for(lambda: _warm(standby), within=WIRE_WITHIN, what="the standby ready with warm caches")
    before = await api.get(LEASES, f"lease-{p.name}", LEASE_NAMESPACE)

    async with anyio.create_task_group() as tg:
        stopped = time.monotonic()
        tg.start_soon(_terminate, leader)
        ch = await _wired_challenge(api, cert_manager, p.namespace, "handover.example.test")

        async def new_leader_wrote() -> float | None:
            wrote = writes(await standby.metrics(), result="success") > 0
            return time.monotonic() - stopped if wrote else None

        first_write = await wait_for(new_leader_wrote, within=10, interval=0.05, what="a write by the new leader")
    await wait_for(lambda: wired(api, ch), within=WIRE_WITHIN, what="wired by the new leader")
    print(f"\nSIGTERM of the leader -> first write by the other replica after {first_write:.2f}s")
    assert leader.returncode == 0, "drained, released the Lease, exit 0"
    log = leader.log()
    assert "signal received" in log and "finishing the writes in progress" in log and "exit_code=0" in log
    after = await api.get(LEASES, f"lease-{p.name}", LEASE_NAMESPACE)
    assert after["spec"]["leaseTransitions"] == before["spec"]["leaseTransitions"] + 1
    assert after["spec"]["holderIdentity"] not in ("", None, before["spec"]["holderIdentity"])
    assert first_write <= 2.0
    assert_clean(await standby.metrics(), standby)


async def _terminate(rec: ReconcilerProcess) -> None:
    await rec.terminate(grace=30)

