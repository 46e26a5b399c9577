"""The targets and the table of ``edge_latency.py`` (kept apart: the measuring is long enough).

Targets (the edge runtime issues): runtime p99 <= 1.5 x (ping-pong p99 + inference p99) at each
rate; miss rate <= 0.1% at 500 Hz; 8 robots x 100 Hz with p99 < 2 ms; the server's CPU per
action <= 1.5 x (a bare pyzmq echo's CPU per message + bare inference's CPU per call), measured
in the same turns; server RSS <= 150 MB.
"""

from __future__ import annotations

from typing import Any

CPU_RATIO_LIMIT = 1.5


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target, with its measured value."""
    out: dict[str, dict[str, Any]] = {}
    for loop in r["loops"]:
        key = f"{int(loop['rate_hz'])}hz"
        bare = r["ping_pong_us"][key]["p99"] + r["inference_us"][key]["p99"]
        ratio = loop["round_trip_us"]["p99"] / bare
        ran = loop["state"] != "FAULT" and loop["round_trip_us"].get("count", 0) > 0
        out[f"runtime_p99_vs_bare_{key}"] = {
            "value": round(ratio, 2),
            "limit": 1.5,
            "met": ran and ratio <= 1.5,  # a loop that faulted or measured nothing meets nothing
        }
    miss = next(loop for loop in r["loops"] if loop["rate_hz"] == 500)["miss_rate"]
    fleet_p99 = r["robots_8x100hz"]["round_trip_p99_us_worst"]
    out["miss_rate_500hz"] = {"value": miss, "limit": 0.001, "met": miss <= 0.001}
    fleet_ok = r["robots_8x100hz"]["faults"] == 0 and fleet_p99 > 0
    out["fleet_8x100hz_p99_us"] = {
        "value": fleet_p99, "limit": 2000, "met": fleet_ok and fleet_p99 < 2000,
    }  # fmt: skip
    cpu = r["cpu_us_per_message"]
    ratio = cpu["server_per_action"] / (cpu["bare_echo"] + cpu["bare_inference"])
    out["server_cpu_vs_bare"] = {
        "value": round(ratio, 2), "limit": CPU_RATIO_LIMIT, "met": ratio <= CPU_RATIO_LIMIT,
    }  # fmt: skip
    rss = r["server_rss_mb"]
    out["server_rss_mb"] = {"value": rss, "limit": 150, "met": rss <= 150}
    return out


def print_table(r: dict[str, Any]) -> None:
    """The run's figures for people, calibration first."""

    def row(name: str, s: dict[str, float]) -> None:
        print(f"{name:<34} {s['p50']:>9.1f} {s['p99']:>9.1f} {s['p99.9']:>9.1f} {s['max']:>9.1f}")

    b2b = r["ping_pong_us"]["back_to_back"]
    print(
        f"\ncalibration: bare pyzmq ping-pong back to back p50 {b2b['p50']:.0f} us, "
        f"p99 {b2b['p99']:.0f} us ({r['conditions']})"
    )
    print(f"{'round trip / call (us)':<34} {'p50':>9} {'p99':>9} {'p99.9':>9} {'max':>9}")
    row("bare pyzmq ping-pong, back to back", b2b)
    row("bare inference, back to back", r["inference_us"]["back_to_back"])
    for loop in r["loops"]:
        key = f"{int(loop['rate_hz'])}hz"
        row(f"bare ping-pong @ {key}", r["ping_pong_us"][key])
        row(f"bare inference @ {key}", r["inference_us"][key])
        row(f"runtime round trip @ {key}", loop["round_trip_us"])
    head = ("loop", "cycles", "missed", "miss rate", "longest run", "state")
    print("\n{:<10} {:>8} {:>7} {:>10} {:>12} {:>9}".format(*head))
    for loop in r["loops"]:
        print(
            f"{loop['rate_hz']:>6} Hz {loop['cycles']:>8} {loop['missed']:>7} "
            f"{loop['miss_rate']:>10.4%} {loop['longest_miss_run']:>12} {loop['state']:>9}"
        )
    f = r["robots_8x100hz"]
    print(
        f"\n8 robots x 100 Hz: p50 {f['round_trip_p50_us_median']:.0f} us, worst p99 "
        f"{f['round_trip_p99_us_worst']:.0f} us, worst miss rate {f['miss_rate_worst']:.4%}, "
        f"faults {f['faults']} (in warm-up, re-armed: {f['warm_up_faults']})"
    )
    cpu = r["cpu_us_per_message"]
    print(
        f"CPU per message (us, the same paced turns): server {cpu['server_per_action']:.0f} per "
        f"action; bare echo server {cpu['bare_echo']:.0f} + bare inference "
        f"{cpu['bare_inference']:.0f}; in the 8-robot fleet {cpu['server_per_action_fleet']:.0f}"
        f" per action; server RSS {r['server_rss_mb']} MB"
    )
    faults = r["faults"]
    print(
        f"faults: {faults['faulted']}/{faults['injected']} SIGKILL/SIGSTOP latched FAULT; "
        f"detected after {faults['detected_ms']['median']} ms (max {faults['detected_ms']['max']}) "
        f"since the last action, standstill {faults['standstill_ms']['median']} ms later "
        f"(max {faults['standstill_ms']['max']})"
    )
    for name, t in r["targets"].items():
        print(f"target {name}: {t['value']} (limit {t['limit']}) {'met' if t['met'] else 'MISSED'}")
