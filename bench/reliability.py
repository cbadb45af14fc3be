"""Reliability under faults (issue 13), measured on the test bed; writes docs/RELIABILITY.md and
bench/results/reliability.json.

    python -m bench.reliability [--challenges 300] [--projects 6] [--repeat 3]

Not part of the timed CI run (about 10 minutes on the 2-core machine): the quick versions of the same
scenarios are `tests/e2e/test_faults.py`. Needs the control-plane binaries and Toxiproxy (built and cached by
`hack/build-control-plane.sh` and `hack/build-toxiproxy.sh` on first use) and the Python environment of
`hack/test` (`./hack/reliability` provides all three).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from testbed import scenarios
from testbed.controlplane import ControlPlane
from testbed.faults import TOXIPROXY_BUILD_SCRIPT, FaultyPath
from testbed.kube import Kube
from testbed.kubedc import KubeDC
from testbed.storm import StormConfig, storm_pair

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "reliability.json"
DOC = ROOT / "docs" / "RELIABILITY.md"
IDLE_TIMEOUT = 3.0


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


async def _section(
    out: dict[str, Any], name: str, repeat: int, make: Callable[[], Awaitable[scenarios.Bed]],
    scenario: Callable[[scenarios.Bed], Awaitable[Any]],
) -> None:  # fmt: skip
    """Run ``scenario`` ``repeat`` times, each on a fresh Bed; record results (or the failure) and the load."""
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        bed = await make()
        load_before = _load()
        try:
            result = await scenario(bed)
            runs.append({"ok": True, "load": load_before, **_plain(result)})
        except Exception as exc:
            runs.append({"ok": False, "load": load_before, "error": f"{type(exc).__name__}: {exc}"[:600]})
            traceback.print_exc()
        finally:
            await bed.close()
        print(f"[reliability] {name}: {runs[-1]}", file=sys.stderr, flush=True)
    out[name] = runs


def _plain(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        data = dataclasses.asdict(result)
        data.pop("log", None)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}
    if isinstance(result, tuple):
        return {"gone": result[0], "relists": result[1]}
    return {"value": result}


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    record: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_at_start": _load(),
        "idle_timeout": IDLE_TIMEOUT,
    }
    started = time.monotonic()
    plane = ControlPlane()
    await anyio.to_thread.run_sync(plane.start)
    try:
        t = time.monotonic()
        path = await anyio.to_thread.run_sync(FaultyPath.start, plane)
        record["faulty_path_start_seconds"] = round(time.monotonic() - t, 1)
        try:
            async with Kube.from_kubeconfig(plane.admin_kubeconfig) as api, KubeDC(api) as kubedc:

                async def bed() -> scenarios.Bed:
                    b = scenarios.Bed(plane, api, kubedc, path, workdir, idle_timeout=IDLE_TIMEOUT)
                    b.clear()
                    return b

                scenarios_run: dict[str, Any] = {}
                r = args.repeat
                await _section(scenarios_run, "silent_watch", r, bed, scenarios.silent_watch)
                await _section(scenarios_run, "stalled_path", 1, bed, scenarios.stalled_path)
                await _section(scenarios_run, "failed_requests", 1, bed, scenarios.failed_requests)
                await _section(scenarios_run, "latency_and_resets", 1, bed, scenarios.latency_and_resets)
                await _section(scenarios_run, "forbidden_writes", 1, bed, scenarios.forbidden_writes)
                await _section(scenarios_run, "compaction_with_watch_cache", 1, bed, scenarios.compaction)
                await _section(scenarios_run, "dropped_startup", 1, bed, scenarios.dropped_startup)
                await _section(scenarios_run, "failover_sigkill", r, bed, scenarios.failover_after_sigkill)
                await _section(scenarios_run, "handover_sigterm", r, bed, scenarios.handover_after_sigterm)
                record["scenarios"] = scenarios_run
        finally:
            await anyio.to_thread.run_sync(path.stop)
    finally:
        await anyio.to_thread.run_sync(plane.stop)

    storm_plane = ControlPlane(audit=True, apiserver_flags=("--watch-cache=false",))
    await anyio.to_thread.run_sync(storm_plane.start)
    try:
        config = StormConfig(challenges=args.challenges, projects=args.projects, wire_within=240)
        record["storm_load_at_start"] = _load()
        record["storm_projects"] = args.projects
        async with Kube.from_kubeconfig(storm_plane.admin_kubeconfig) as api:
            calm, storm = await storm_pair(storm_plane, api, workdir, config)
        record["storm_load_at_end"] = _load()
        record["storm"] = {"calm": calm.summary(), "storm": storm.summary()}
    finally:
        await anyio.to_thread.run_sync(storm_plane.stop)
    record["properties"] = _properties()
    record["toxiproxy"] = _toxiproxy_version()
    record["seconds"] = round(time.monotonic() - started)
    return record


def _properties() -> dict[str, Any]:
    """The hypothesis properties over every parser and reconciler (tests/unit/test_properties_*.py)."""
    files = ["tests/unit/test_properties_parsers.py", "tests/unit/test_properties_reconcilers.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    summary = next((ln for ln in reversed(proc.stdout.splitlines()) if " passed" in ln or " failed" in ln), "")
    # Bounded digits: the statistics quote the strategies, whose sample strings hold 200,000 digits.
    examples = [int(n) for n in re.findall(r"- (\d{1,9}) passing, \d{1,9} failing", proc.stdout)]
    return {"summary": summary.strip("= "), "examples": sum(examples), "properties": len(examples)}


def _toxiproxy_version() -> str:
    match = re.search(r"TOXIPROXY_VERSION:-(v[\d.]+)", TOXIPROXY_BUILD_SCRIPT.read_text())
    return match.group(1) if match else "?"


# --- the document ------------------------------------------------------------------------------------------


def _runs(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list(record["scenarios"].get(name, []))


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{low:.2f} / {mid:.2f} / {high:.2f} s (min / median / max of {len(values)})"


def _field(record: dict[str, Any], name: str, key: str) -> list[float]:
    return [float(r[key]) for r in _runs(record, name) if r.get("ok") and key in r]


def _failures(record: dict[str, Any], name: str) -> str:
    bad = [r["error"] for r in _runs(record, name) if not r.get("ok")]
    return f" **{len(bad)} run(s) failed**: {'; '.join(bad)}" if bad else ""


def _storm_rows(calm: dict[str, Any], storm: dict[str, Any]) -> list[str]:
    ratio = storm["requests"] / calm["requests"] if calm["requests"] else float("nan")
    rows = [
        ("challenges wired", f"{calm['wired']} / {calm['challenges']}", f"{storm['wired']} / {storm['challenges']}"),
        ("seconds until all wired (or given up)", calm["seconds_to_wire"], storm["seconds_to_wire"]),
        ("API requests (fault proxy's count)", calm["requests"], f"{storm['requests']} (**{ratio:.2f}x**)"),
        ("requests failed on purpose (429/500/503)", calm["injected"], storm["injected"]),
        ("duplicate Backends / routes / claims", len(calm["duplicates"]), len(storm["duplicates"])),
        ("orphaned Backends / routes", len(calm["orphans"]), len(storm["orphans"])),
        ("EIP port clashes", len(calm["port_clashes"]), len(storm["port_clashes"])),
        ("writes without a precondition (audit log)", len(calm["unconditional"]), len(storm["unconditional"])),
        ("writes answered 409 (stale update refused, or name taken)", calm["conflicts"], storm["conflicts"]),
        ("writes answered 403", calm["forbidden"], storm["forbidden"]),
        ("410 Gone seen (summed over the processes)", calm["gone"], storm["gone"]),
        ("full lists (summed over the processes)", calm["relists"], storm["relists"]),
        ("exits nobody asked for", len(calm["crashes"]), len(storm["crashes"])),
    ]
    return [f"| {a} | {b} | {c} |" for a, b, c in rows]


def render(record: dict[str, Any]) -> str:
    calm, storm = record["storm"]["calm"], record["storm"]["storm"]
    kill, term = _field(record, "failover_sigkill", "seconds"), _field(record, "handover_sigterm", "seconds")
    silent = _field(record, "silent_watch", "detected")
    silent_wired = _field(record, "silent_watch", "wired")
    forbidden = _runs(record, "forbidden_writes")
    gone = _runs(record, "compaction_with_watch_cache")
    flaky = {name: _runs(record, name) for name in ("failed_requests", "latency_and_resets")}
    pairs = _runs(record, "failover_sigkill") + _runs(record, "handover_sigterm")
    props = record["properties"]
    lines = [
        "# Reliability under faults",
        "",
        "Written by `./hack/reliability` (`python -m bench.reliability`); do not edit by hand. "
        f"Measured {record['date']} on {record['machine']}, load average at start {record['load_at_start']} "
        f"(1 / 5 / 15 min; the machine is shared), in {record['seconds']} s. Raw figures: "
        "`bench/results/reliability.json`. The quick versions run in `./hack/test` (`tests/e2e/test_faults.py`).",
        "",
        "## How faults are made",
        "",
        "The reconciler (`python -m reconciler run`, ServiceAccount identity, `manifests/rbac.yaml`) talks to the "
        "real kube-apiserver through `reconciler -> Toxiproxy -> fault proxy -> kube-apiserver` "
        f"(`testbed/faults.py`); the tests, cert-manager and kube-dc stand-ins talk to it directly. Toxiproxy "
        f"{record['toxiproxy']} (`hack/build-toxiproxy.sh`, Go module proxy) passes TLS through and makes the "
        "network faults (latency, `reset_peer`, a path that is down, a stalled stream: a latency toxic of one hour "
        "holds every byte without losing one). The fault proxy (`testbed/faultproxy.py`, our own, in its own "
        "process) terminates TLS with the API server's certificate (the test bed's CA signs it for 127.0.0.1), "
        "answers a fraction of the requests 429 (with `Retry-After: 1`), 500 or 503, cuts or freezes the open "
        "watch streams alone, and counts every request. `RECONCILER_WATCH_IDLE_TIMEOUT` is "
        f"{record['idle_timeout']:g} s in these runs (default 90 s).",
        "",
        "## The storm",
        "",
        f"{storm['challenges']} cert-manager-shaped challenges (Challenge, solver Pod, Service and HTTPRoute as "
        f"cert-manager makes them) across {record['storm_projects']} cloud projects, arriving in ten batches, "
        "wired by one reconciler with `--max-challenges-per-project 100` (otherwise its defaults); first without "
        "faults (the baseline), then the same storm with every fault below, on a control plane of its own (API "
        "server audit log of the reconciler's writes, watch cache off so that a compaction is what a resumed "
        "watch meets). Checked from the cluster as it is and the audit "
        "log: each solver Service a LoadBalancer on its project's EIP address with its own port, one Backend at "
        "that address and port, one companion route to it; every update, patch and delete carrying a "
        "resourceVersion (and uid) precondition, so none can undo a newer change.",
        "",
        f"Load average: {record.get('storm_load_at_start', '?')} at the start of the storms, "
        f"{record.get('storm_load_at_end', '?')} at the end.",
        "",
        "Faults, in order (seconds after the reconciler started):",
        "",
        *[f"- {f}" for f in storm["faults"]],
        f"- throughout: {storm['injected']} requests answered 429/500/503 (10%)",
        "",
        "| | without faults | with faults |",
        "| --- | --- | --- |",
        *_storm_rows(calm, storm),
        "",
    ]
    if storm["unwired"]:
        lines += [
            f"**Not wired under faults**: {', '.join(storm['unwired'])}.",
            "",
        ]
    if storm["unconditional"]:
        lines += ["Writes without a precondition: " + "; ".join(storm["unconditional"]), ""]
    lines += [
        f"Audited writes with faults: {', '.join(f'{k}: {v}' for k, v in storm['writes'].items())}.",
        "",
        "## Each fault alone",
        "",
        "| fault | what happened | figures |",
        "| --- | --- | --- |",
        f"| watch streams frozen (connection open, no byte: our proxy) | each frozen watch counted "
        f"`acme_gateway_watch_restarts_total{{reason=\"silent\"}}`, logged, re-opened from its resourceVersion; a "
        f"challenge created at the freeze was wired through the new watches | detection {_spread(silent)}; "
        f"new challenge wired {_spread(silent_wired)}{_failures(record, 'silent_watch')} |",
        f"| every byte held on open and new connections (Toxiproxy, latency 1 h) | watches given up as silent, "
        f"re-opened, and served once the bytes flowed | detection "
        f"{_spread(_field(record, 'stalled_path', 'detected'))}; wired after the path flowed "
        f"{_spread(_field(record, 'stalled_path', 'recovered'))}{_failures(record, 'stalled_path')} |",
        *[_flaky_row(name, runs) for name, runs in flaky.items()],
        f"| etcd compacted while the path was down, API server watch cache on | "
        f"{_gone_text(gone)} | {_failures(record, 'compaction_with_watch_cache') or '—'} |",
        f"| 403 on every write for 2 s (an API server whose authorizer has not synced) | {_forbidden_text(forbidden)}"
        f" | {_failures(record, 'forbidden_writes') or '—'} |",
        f"| every write's connection closed unanswered while the reconciler starts (its access reviews) | "
        f"{_dropped_text(_runs(record, 'dropped_startup'))} | {_failures(record, 'dropped_startup') or '—'} |",
        "",
        "## High availability (two replicas, `--leader-elect`, default lease 15 s / renew 10 s / retry 2 s)",
        "",
        "| event | measured | target |",
        "| --- | --- | --- |",
        f"| standby ready with warm caches (every informer synced) | {sum(1 for r in pairs if r.get('standby_warm'))}"
        f" of {len(pairs)} pairs | all |",
        f"| leader SIGKILL -> a challenge created then is wired by the other replica | {_spread(kill)}"
        f"{_failures(record, 'failover_sigkill')} | ≤ 17 s (lease + 2 s) |",
        f"| leader SIGTERM -> first write by the other replica | {_spread(term)}"
        f"{_failures(record, 'handover_sigterm')} | ≤ 2 s |",
        f"| SIGTERMed leader: exit code, Lease handed over | exit "
        f"{sorted({r.get('old_exit') for r in _runs(record, 'handover_sigterm')}, key=str)}, transitions "
        f"{[r.get('lease_transitions') for r in _runs(record, 'handover_sigterm')]} | 0, 1 |",
        "",
        "After a SIGKILL the standby cannot know the holder is gone: it takes the Lease once the last renewal it "
        "saw is one lease duration old. It dates each renewal by the Lease watch event that carried it and tries "
        "when that term ends (lease duration + 0.05 s), so the takeover lands about 15 s after the last renewal "
        "plus the new leader's first write. A 403 while the API server restarts (its RBAC authorizer not yet "
        "synced) is counted `result=\"forbidden\"` and retried with back-off, never remembered as a rejection. "
        "A SIGTERMed leader stops taking work, finishes the writes in progress, releases the Lease (the standby "
        "watches it and takes it at once) and exits 0.",
        "",
        "## Bad input (property-based, hypothesis)",
        "",
        f"`tests/unit/test_properties_parsers.py` and `test_properties_reconcilers.py`: {props['summary']}"
        f" ({props['examples']} generated examples over {props['properties']} "
        "properties). Every view parser (`model.py` `*.from_raw`, `ServedRoute.parser`) gets arbitrary JSON-like "
        "mappings, realistic objects with fields replaced by any JSON value, deleted or truncated, and strings of "
        "200,000 characters: each returns a view or raises only what `Informer._project` catches. Every "
        "reconciler (services with domain claims, backends, routes, shadows, diagnosis) runs over worlds in which "
        "one to four objects are so mangled: no exception escapes, every refusal, skip and Event reason is from "
        "the closed sets of `reconcile/reasons.py`, no write is decided for an unusable solver or outside a cloud "
        "project, and every patch and delete carries its precondition.",
        "",
        "Found and fixed in the parsers (`reconciler/model.py`, `hostnames.py`, `gateways.py`; the guard is "
        "`reconciler/shapes.py`): a field of the wrong JSON type (`spec: true`, a string where a "
        "list of objects belongs) raised `AttributeError`, which the informer does not catch (a list that always "
        "fails never syncs; a watch event that always fails is read again forever); it is now the `TypeError` "
        "the informer skips and counts as `INVALID`. An HTTPRoute whose backendRefs are not objects broke the "
        "cache's route index and every route reconcile; such a route is now refused when it is parsed.",
        "",
    ]
    return "\n".join(lines)


def _flaky_row(name: str, runs: list[dict[str, Any]]) -> str:
    title = {
        "failed_requests": "30% of all requests answered 429 (Retry-After: 1), 500 or 503, start-up included",
        "latency_and_resets": "150 ± 100 ms latency on every byte, every connection reset three times",
    }[name]
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return f"| {title} | **failed**: {'; '.join(r.get('error', '') for r in runs)} | |"
    r = ok[0]
    answers = ", ".join(f"{k}: {int(v)}" for k, v in sorted(r["answers"].items()))
    return (
        f"| {title} | {r['wired']} of {r['challenges']} challenges wired, {r['backends']} Backends, "
        f"{int(r['rejected'])} writes rejected | {r['seconds']:.1f} s; the reconciler's answers by code: {answers} |"
    )


def _first_ok(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in runs if r.get("ok")), None)


def _gone_text(runs: list[dict[str, Any]]) -> str:
    r = _first_ok(runs)
    if r is None:
        return "not measured"
    return (
        f"{int(r['gone'])} watches answered 410 Gone, {int(r['relists'])} full lists; a new challenge wired after it"
        " (with the watch cache on, a watch resumes from the cache's window: the storm turns the cache off to meet"
        " the compaction)"
    )


def _forbidden_text(runs: list[dict[str, Any]]) -> str:
    r = _first_ok(runs)
    if r is None:
        return "not measured"
    forbidden, rejected = int(r.get("forbidden", 0)), int(r["rejected"])
    if r["wired_within_30s"] and rejected == 0:
        return f"{forbidden} write(s) answered 403, retried with back-off (`forbidden`); the challenge was wired"
    return (
        f"**not wired within 30 s** ({forbidden} answered 403, {rejected} remembered as rejected), though the "
        "permission was back after 2 s"
    )


def _dropped_text(runs: list[dict[str, Any]]) -> str:
    r = _first_ok(runs)
    if r is None:
        return "not measured"
    how = "**with a Python traceback**" if r["traceback"] else "with one ERROR line"
    return f"exit {r['exit_code']} {how}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n")[0])
    parser.add_argument("--challenges", type=int, default=300)
    parser.add_argument("--projects", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the timed scenarios (silent watch, HA)")
    parser.add_argument("--render", action="store_true", help="only write the document again from the JSON")
    args = parser.parse_args(argv)
    if args.render:
        record = json.loads(RESULTS.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="reliability-") as workdir:
            record = anyio.run(measure, args, Path(workdir))
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    DOC.write_text(render(record))
    print(f"wrote {DOC.relative_to(ROOT)} and {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
