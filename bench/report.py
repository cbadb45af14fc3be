"""Results -> `results.json`, a markdown table of issue 12's targets (ratios reconciler/floor, met or
missed), and two plots (latency CDF; storm timeline). Plots need matplotlib (the `bench` extra); without
it the JSON and the table are still written.

    python -m bench.report bench/results/quick/results.json   # redraw from a saved run
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

R = dict[str, Any]

IDLE_CPU_TARGET = 0.01
"""'Near-zero CPU' when idle, made concrete: at most 1% of one core over the idle window."""


@dataclass(frozen=True, slots=True)
class Row:
    target: str
    reconciler: float | None
    floor: float | None
    unit: str
    goal: str
    met: bool | None
    ratio: float | None = None


def _get(results: R, *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def rows(results: R) -> list[Row]:
    """One row per target of the issue that this run measured."""
    out: list[Row] = []

    def val(*path: str) -> Any:
        return _get(results, *path)

    def ratio(target: str, rec: Any, flo: Any, unit: str, limit: float) -> None:
        r = _ratio(rec, flo)
        out.append(Row(target, rec, flo, unit, f"<= {limit}x floor", _at_most(r, limit), r))

    def reported(target: str, rec: Any, flo: Any, unit: str) -> None:
        out.append(Row(target, rec, flo, unit, "(reported)", None, _ratio(rec, flo)))

    for q in ("p50", "p99") if val("latency") else ():
        lat = ("ip_to_routed_ms", q)
        ratio(f"single challenge, LB address -> routed, {q}", val("latency", "reconciler", *lat),
              val("latency", "floor", *lat), "ms", 1.5)  # fmt: skip

    rec, limited = val("storm", "reconciler-default"), val("storm", "reconciler-qps20")
    fast, slow = val("storm", "floor-unlimited"), val("storm", "floor-qps20")
    if rec and fast:
        ratio(
            "storm total, default settings vs unthrottled floor", rec["total_seconds"], fast["total_seconds"], "s", 1.2
        )
        ratio("storm per-challenge p99 (created -> routed), default settings", rec["created_to_routed_ms"]["p99"],
              fast["created_to_routed_ms"]["p99"], "ms", 2.0)  # fmt: skip
        wpc = rec["writes_per_challenge"]
        out.append(
            Row("storm writes per challenge", wpc, fast["writes_per_challenge"], "", "= 3.0", abs(wpc - 3) < 1e-9)
        )
        conflicts = rec["window"]["conflicts"]
        out.append(Row("storm write conflicts (409)", conflicts, fast["window"]["conflicts"], "", "0", conflicts == 0))
        ratio("storm CPU per challenge, default settings vs unthrottled floor", rec["cpu_per_challenge_ms"],
              fast["cpu_per_challenge_ms"], "ms", 1.5)  # fmt: skip
        api, floor_api = rec["window"]["apiserver"], fast["window"]["apiserver"]
        rejected = api["429"] + api["apf_rejected"]
        out.append(Row("storm 429s + APF rejections, default settings", rejected,
                       floor_api["429"] + floor_api["apf_rejected"], "", "0", rejected == 0))  # fmt: skip
        reported("storm API server CPU, default settings", rec["window"]["apiserver_cpu_seconds"],
                 fast["window"]["apiserver_cpu_seconds"], "s")  # fmt: skip
        reported("storm RSS after the storm", rec["window"]["rss_mib"], fast["window"]["rss_mib"], "MiB")
        reported("storm API requests per challenge (writes, Events, reads)", rec.get("api_requests_per_challenge"),
                 fast.get("api_requests_per_challenge"), "")  # fmt: skip
    if limited and slow:
        reported("storm total, --qps 20 --burst 40 on both sides", limited["total_seconds"], slow["total_seconds"], "s")
        reported("storm CPU per challenge, --qps 20 on both sides", limited["cpu_per_challenge_ms"],
                 slow["cpu_per_challenge_ms"], "ms")  # fmt: skip

    sc, fl, pop = val("scale", "reconciler"), val("scale", "floor") or {}, val("scale", "population")
    if sc and pop:
        out.append(Row("scale: ready", sc["ready_seconds"], fl.get("ready_seconds"), "s", "<= 5 s",
                       _at_most(sc["ready_seconds"], 5.0)))  # fmt: skip
        out.append(Row("scale: RSS settled", sc["rss_settled_mib"], fl.get("rss_settled_mib"), "MiB", "<= 100 MiB",
                       _at_most(sc["rss_settled_mib"], 100.0)))  # fmt: skip
        lbs, runs = pop["load_balancers"], sc["reconciles_after_ready_total"]
        out.append(Row("scale: reconciles after ready", runs, 0, "", f"<= {lbs} (LoadBalancers)", runs <= lbs))
        writes = sum(sc["writes_at_start"].values()) + sc["idle_writes"]
        out.append(Row("scale: writes (start-up + idle)", writes, fl.get("idle_writes"), "", "0", writes == 0))
        share = sc["idle_cpu_seconds"] / sc["idle_seconds"]
        out.append(Row(f"scale: CPU over {sc['idle_seconds']:.0f} idle s", sc["idle_cpu_seconds"],
                       fl.get("idle_cpu_seconds"), "s", f"<= {IDLE_CPU_TARGET:.0%} of a core",
                       share <= IDLE_CPU_TARGET))  # fmt: skip

    rc, fc = val("churn", "reconciler"), val("churn", "floor") or {}
    if rc:
        ratio("churn: CPU per churned Challenge event", rc["cpu_per_event_us"], fc.get("cpu_per_event_us"), "us", 1.5)
        adds = sum(rc["queue_adds"].values())
        out.append(Row("churn: work-queue adds from churn", adds, 0, "", "0", adds == 0))
        wiring = ("wiring_during_churn", "ip_to_routed_ms", "p99")
        ratio("churn: wiring p99 during churn", val("churn", "reconciler", *wiring), val("churn", "floor", *wiring),
              "ms", 1.5)  # fmt: skip
    return out


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def markdown(results: R) -> str:
    meta = results.get("meta", {})
    loads = meta.get("load_average", {})
    host = meta.get("machine", {})
    lines = [
        f"# Benchmark: {meta.get('size', '?')} run",
        "",
        f"`{meta.get('command', 'python -m bench.run')}` at {meta.get('started', '?')}, "
        f"commit `{meta.get('commit', '?')}`, {host.get('cpus', '?')} CPUs ({host.get('cpu_model', '?')}).",
        f"Load average at start {loads.get('start')}, at end {loads.get('end')}; per workload in the JSON.",
        "",
        "| target | reconciler | floor | ratio | goal | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows(results):
        unit = f" {row.unit}" if row.unit else ""
        met = "-" if row.met is None else ("met" if row.met else "**missed**")
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append(
            f"| {row.target} | {_num(row.reconciler)}{unit} | {_num(row.floor)}{unit} | {ratio} | {row.goal} | {met} |"
        )
    lines += ["", *_details(results)]
    return "\n".join(lines) + "\n"


def _details(results: R) -> list[str]:
    out: list[str] = []
    storm = results.get("storm") or {}
    if storm:
        out += [
            "## Storm runs",
            "",
            "| run | total s | generator s | p50 / p99 ms | created->LB p50 / p99 ms | writes/ch | CPU ms/ch "
            "| limiter wait s | 409 | 429 | apiserver CPU s | bench CPU s | load avg |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, r in storm.items():
            w = r["window"]
            ctr, lb = r["created_to_routed_ms"], r["created_to_lb_ms"]
            out.append(
                f"| {name} | {_num(r['total_seconds'])} | {_num(r['generator_seconds'])} | "
                f"{_num(ctr['p50'])} / {_num(ctr['p99'])} | "
                f"{_num(lb['p50'])} / {_num(lb['p99'])} | {r['writes_per_challenge']:.2f} | "
                f"{_num(r['cpu_per_challenge_ms'])} | "
                f"{_num(w['throttled_seconds'])} | {_num(w['apiserver']['409'])} | {_num(w['apiserver']['429'])} | "
                f"{_num(w['apiserver_cpu_seconds'])} | {_num(w.get('bench_cpu_seconds'))} | "
                f"{w['load_average'][1][0]:.2f} |"
            )
        out.append("")
    for name in ("latency", "churn", "scale"):
        section = results.get(name)
        if section:
            out += [f"## {name}", "", "```json", json.dumps(_trim(section), indent=1)[:6000], "```", ""]
    profiles = results.get("profiles")
    if profiles:
        out += ["## Profiles", "", "```json", json.dumps(profiles, indent=1)[:8000], "```", ""]
    return out


def _trim(node: Any) -> Any:
    """Without the long sample lists, for reading."""
    if isinstance(node, dict):
        return {k: _trim(v) for k, v in node.items() if not k.endswith(("samples_ms", "timeline_s"))}
    return node


def plots(results: R, out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    curves: list[tuple[str, list[float], str]] = []
    for who, style in (("reconciler", "-"), ("floor", "-")):
        samples = _get(results, "latency", who, "samples_ms")
        if samples:
            curves.append((f"{who}", samples, style))
        samples = _get(results, "churn", who, "wiring_during_churn", "samples_ms")
        if samples:
            curves.append((f"{who}, during status churn", samples, "--"))
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, samples, style in curves:
            xs = sorted(samples)
            ax.step(
                xs, [(i + 1) / len(xs) for i in range(len(xs))], style, where="post", label=f"{label} (n={len(xs)})"
            )
        ax.set_xscale("log")
        ax.set_xlabel("LB address -> Backend and route in place (ms, log)")
        ax.set_ylabel("fraction of challenges")
        ax.set_title("One challenge at a time: reconciler vs floor")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        save(fig, "latency-cdf.png")

    storm = results.get("storm") or {}
    if storm:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, r in storm.items():
            routed: list[float] = r["timeline_s"]
            line = ax.step([0, *routed], range(len(routed) + 1), where="post", label=f"{name}: routed")
            lbs: list[float] = r.get("lb_timeline_s") or []
            if lbs:
                ax.step([0, *lbs], range(len(lbs) + 1), ":", where="post", color=line[0].get_color(), alpha=0.7)
        ax.set_xlabel("seconds since the storm started (dotted: Service patched to LoadBalancer)")
        ax.set_ylabel("challenges")
        first = next(iter(storm.values()))
        ax.set_title(f"Storm: {first['challenges']} challenges over {first['projects']} projects")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, "storm-timeline.png")
    return made


def write(results: R, out_dir: Path, log: Callable[[str], None] = print) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    (out_dir / "results.md").write_text(markdown(results))
    for path in [out_dir / "results.json", out_dir / "results.md", *plots(results, out_dir)]:
        log(f"wrote {path}")


def main() -> None:
    path = Path(sys.argv[1])
    write(json.loads(path.read_text()), path.parent)


if __name__ == "__main__":
    main()
