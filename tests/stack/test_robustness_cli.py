"""``factoryfloor robustness BUNDLE``: the report, the runtime's settings, and hostile inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from factoryfloor.cli import main
from factoryfloor.stack.robustness import axes as axes_module
from factoryfloor.stack.robustness.axes import AXES, measured_latency_axis, read_round_trip

PRETRAINED = Path(__file__).resolve().parents[2] / "factoryfloor/policies/pretrained"
STATE = PRETRAINED / "pick_place_panda.ffpolicy"
CAMERA = PRETRAINED / "pick_place_panda_camera.ffpolicy"


def _run(tmp_path: Path, *extra: str, axes: str = "latency_periods,part_friction") -> dict:
    out = tmp_path / "report"
    args = ["robustness", str(STATE), "--axes", axes, "--episodes", "2", "--out", str(out)]
    assert main([*args, *extra]) == 0
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "report.json").read_text())


def test_the_report_pairs_every_cell_with_the_nominal_seeds(tmp_path, capsys):
    report = _run(tmp_path)
    table = capsys.readouterr().out
    assert report["format"] == "factoryfloor-robustness" and report["seeds"] == [500_000, 500_001]
    assert report["bundle"]["task_id"] == "factoryfloor/PickPlace-v0"
    nominal = report["nominal"]["success_rate"]
    assert nominal == 1.0  # the shipped bundle: 95.5% over 200 seeds
    rows = {a["name"]: a for a in report["axes"]}
    assert list(rows) == ["latency_periods", "part_friction"]
    for axis in rows.values():
        assert [lv["level"] for lv in axis["levels"]] == list(AXES[axis["name"]].levels)
        for lv in axis["levels"]:
            assert lv["retained"] == pytest.approx(lv["success_rate"] / nominal)
            assert len(lv["successes"]) == 2
        assert axis["retained_min"] == min(lv["retained"] for lv in axis["levels"])
    # under the runtime's defaults (hold window 20 ms, max age 50 ms) an answer two control
    # periods late is too old: the safety layer brakes, every episode ends in a fault
    latency = {lv["level"]: lv for lv in rows["latency_periods"]["levels"]}
    for late in (latency[2.0], latency[3.0]):
        assert late["fault_reasons"] == {"no valid action for N ms (hold window spent)": 2}
    assert latency[1.0]["faults"] == 0 and latency[1.0]["link"]["too_old"] == 0
    assert "retains (worst level)" in table and "latency_periods" in table


def test_a_longer_hold_window_and_max_age_ride_out_the_same_latency(tmp_path):
    report = _run(tmp_path, "--hold-window-ms", "100", "--max-action-age-ms", "200",
                  axes="latency_periods")  # fmt: skip
    assert report["runtime"] == {"hold_window_ms": 100.0, "max_action_age_ms": 200.0}
    for lv in report["axes"][0]["levels"]:  # answers come, late: none is too old, no hold ends
        assert lv["link"]["too_old"] == 0
        assert not any("hold window" in reason for reason in lv["fault_reasons"])


def test_the_measured_latency_axis_comes_from_the_runtimes_metrics(tmp_path):
    metrics = tmp_path / "client.jsonl"
    rtt = {"round_trip": {"p50": 600.0, "p99": 2400.0, "max": 9000.0}}
    lines = [
        {"component": "client", "latency_us": {"round_trip": {"p50": 1.0, "p99": 2.0}}},
        {"cycles": 120, "state": "RUNNING", "client": {"latency_us": rtt}},  # run-sim's report
        {"cycles": 121, "state": "RUNNING", "client": {"latency_us": {}}},  # none: skipped
    ]
    metrics.write_text("".join(json.dumps(x) + "\n" for x in lines))  # fmt: skip
    assert read_round_trip(metrics) == (0.6, 2.4)
    report = _run(tmp_path, "--latency-from", str(metrics), axes="drop_rate")
    measured = report["axes"][-1]
    assert measured["name"] == "measured_latency_ms"
    assert [lv["level"] for lv in measured["levels"]] == [0.6, 2.4, 42.4]  # + one 40 ms period
    axis = measured_latency_axis(0.9586, 2.6168, 0.04)  # levels rounded to 1 µs: 2.617 > p99
    links = [axis.cell(level, 0.04).link for level in axis.levels]
    assert [(round(x.latency_s, 7), x.jitter_s) for x in links] == [
        (0.000959, 0.0), (0.002617, 0.0), (0.0026168, 0.04),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--axes", "gravity"], "unknown axis 'gravity'"),
        (["--axes", "light_gain"], "does not apply to a state bundle"),
        (["--axes", ","], "names no axis"),
        (["--hold-window-ms", "nan"], "outside"),
        (["--episodes", "0"], "below 1"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    code = main(["robustness", str(STATE), "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r" / "report.json").exists()


def test_a_tampered_or_missing_bundle_is_refused_before_any_cell_runs(tmp_path, capsys):
    data = bytearray(STATE.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered := tmp_path / "edited.ffpolicy").write_bytes(bytes(data))
    for path in (tampered, tmp_path / "missing.ffpolicy"):
        assert main(["robustness", str(path), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cell" not in err, err


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("not json\n", "is not a JSON object"),
        ("[" * 100_000 + "\n", "is not a JSON object"),
        ('{"latency_us": {"server": {"p50": 1}}}\n', "no round_trip"),
        ('{"latency_us": {"round_trip": {"p50": "x", "p99": 1}}}\n', "no numeric p50"),
        ('{"latency_us": {"round_trip": {"p50": 5000, "p99": 10}}}\n', "not plausible"),
        ('{"latency_us": {"round_trip": {"p50": NaN, "p99": NaN}}}\n', "not plausible"),
        ("", "no round_trip"),
    ],
)
def test_a_hostile_metrics_file_is_one_line(tmp_path, capsys, content, says):
    metrics = tmp_path / "m.jsonl"
    metrics.write_text(content)
    code = main(["robustness", str(STATE), "--latency-from", str(metrics), "--out",
                 str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1, err


def test_an_oversized_or_absent_metrics_file_is_refused(tmp_path, monkeypatch):
    metrics = tmp_path / "m.jsonl"
    metrics.write_text('{"latency_us": {"round_trip": {"p50": 1, "p99": 2}}}\n' * 10)
    monkeypatch.setattr(axes_module, "MAX_METRICS_BYTES", 100)
    with pytest.raises(ValueError, match="not a metrics file"):
        read_round_trip(metrics)
    with pytest.raises(ValueError, match="no metrics file"):
        read_round_trip(tmp_path / "absent.jsonl")


def test_every_axis_names_its_unit_and_ordered_levels():
    assert not math.isnan(sum(level for a in AXES.values() for level in a.levels))
    for axis in AXES.values():
        assert axis.unit and axis.doc and axis.kind in ("sim", "sensor", "link")
        assert len(axis.levels) == len(set(axis.levels)) >= 2
        assert axis.applies(True) or axis.applies(False)
        cell = axis.cell(axis.levels[0], 0.04)
        assert cell.perturb or cell.wrap is not None or cell.link != type(cell.link)()


def test_camera_bundles_get_the_image_axes_and_state_bundles_the_pose_error():
    camera = {n for n, a in AXES.items() if a.applies(True)}
    state = {n for n, a in AXES.items() if a.applies(False)}
    assert {"light_gain", "colour_jitter", "camera_offset_m"} <= camera - state
    assert "part_pose_error_m" in state - camera
    assert CAMERA.is_file()
