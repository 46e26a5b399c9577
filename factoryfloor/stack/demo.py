"""``factoryfloor demo``: the whole stack in one command (``make demo``).

It starts the edge policy server with the shipped pretrained bundle in its own process
(``policy_server.ServerProcess``), runs the
simulated controller against it over loopback TCP in real time, shows progress in the terminal,
and ends with a summary table. It writes into ``--out``:

    demo.mp4                    the cell camera (re-simulated from the commands applied) with an
                                overlay: episode, outcome, the policy's round trip per step
    metrics.json                success, latency percentiles, deadline misses, faults, server
    latency_histogram.png       round trips of every action
    success_per_episode.png     one bar per episode
    server_metrics.jsonl        the policy server's own metrics snapshots

It exits 1 when the success rate is below ``min_success``, a fault latched, or the server died.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryfloor.edge_runtime.bundle import BundleError, load_bundle
from factoryfloor.edge_runtime.client import EdgeClient
from factoryfloor.edge_runtime.controller import ControllerRuntime, RuntimeReport
from factoryfloor.edge_runtime.realtime import check_priority
from factoryfloor.edge_runtime.safety import Decision, State
from factoryfloor.edge_runtime.serve import ServeOptions
from factoryfloor.edge_runtime.server import ServerConfig
from factoryfloor.sim.registry import TASKS, task_entry
from factoryfloor.stack import demo_report
from factoryfloor.stack.demo_console import Console
from factoryfloor.stack.policy_server import ServerJob, ServerProcess
from factoryfloor.stack.sim_cell import SimController, cell_kwargs

LATE_ANSWER_WAIT_S = 0.5  # after a FAULT: how long to wait for the late answer (s)


@dataclass(kw_only=True)
class DemoOptions:
    """What ``factoryfloor demo`` runs.

    Attributes:
        task: Gymnasium id of the task.
        robot: Robot name.
        policy: A ``.ffpolicy`` path, ``"expert"``, or None for the shipped pretrained bundle.
        episodes: Episodes to run.
        seed: Seed of the first episode (the default is far from any seed used in training).
        video_episodes: Episodes in the MP4.
        gui: Open pybullet's window (needs a display).
        view: Serve the live view on localhost.
        view_port: Port of the live view (0: any free port).
        view_linger_s: Keep the live view up this long after the run (s).
        out: Output folder.
        min_success: Success rate below which the demo fails.
        hold_window_s: The safety layer's hold window (s).
        max_rearms: Faults after which the demo re-arms (as an operator would) and goes on;
            one more stops it, failed.
        rt_priority: Run the control loop and the policy server's thread under ``SCHED_FIFO``
            at this priority (None: the default scheduler). Off by default: on a 2-core VM
            under load it did not help (measured: more faults than the default scheduler).
    """

    task: str = "factoryfloor/PickPlace-v0"
    robot: str = "panda"
    policy: str | None = None
    episodes: int = 20
    seed: int = 5_000_000
    video_episodes: int = 3
    gui: bool = False
    view: bool = False
    view_port: int = 0
    view_linger_s: float = 0.0
    out: Path = field(default_factory=lambda: Path("out/demo"))
    min_success: float = 0.9
    hold_window_s: float = 0.020
    max_rearms: int = 3
    rt_priority: int | None = None


def demo_policy(options: DemoOptions) -> str:
    """The bundle path (or ``"expert"``) the demo serves: ``--policy``, else the task's shipped one.

    A bundle is loaded and verified here, before any process starts.

    Raises:
        ValueError: When no bundle is shipped for the task and robot (says which are).
        BundleError: For a missing, corrupt or tampered bundle, or one made for another task
            or robot.
    """
    return _demo_policy_and_cell(options)[0]


def _demo_policy_and_cell(options: DemoOptions) -> tuple[str, dict[str, Any]]:
    """``demo_policy`` and the cell's ``gymnasium.make`` arguments for it (``cell_kwargs``)."""
    policy = options.policy if options.policy is not None else _pretrained(options)
    env_kwargs: dict[str, Any] = {}
    if policy != "expert":
        manifest = load_bundle(policy).manifest
        env_kwargs = cell_kwargs(manifest)
        made_for = (manifest["task_id"], manifest["robot"])
        if made_for != (options.task, options.robot):
            raise BundleError(
                f"{policy} was made for {made_for[0]} with {made_for[1]}; pass --task "
                f"{made_for[0]} --robot {made_for[1]}, or another --policy"
            )
    return policy, env_kwargs


def _pretrained(options: DemoOptions) -> str:
    path = task_entry(options.task).pretrained_path(options.robot)
    if path is None:
        shipped = ", ".join(f"{e.env_id} ({r})" for e in TASKS.values() for r in e.pretrained)
        raise ValueError(
            f"no pretrained bundle for {options.task} with {options.robot} (shipped: {shipped}); "
            "pass --policy BUNDLE.ffpolicy or --policy expert"
        )
    return str(path)


class DemoRuntime(ControllerRuntime):
    """The controller runtime, also recording each step's round trip for the video overlay.

    Attributes:
        step_latency_ms: Per episode and step, the round trip of the action applied (ms), or
            None for a step that held or braked.
    """

    def __init__(self, controller: SimController, client: EdgeClient, **kwargs: Any) -> None:
        super().__init__(controller, client, **kwargs)
        self.sim = controller
        self.step_latency_ms: list[list[float | None]] = [[]]

    def cycle(self) -> Decision:
        """One cycle; remembers the round trip of the action it applied (None if held)."""
        episodes_before = len(self.sim.results)
        decision = super().cycle()
        rtt = self.client.last_round_trip_s
        fresh = decision.state is State.RUNNING and rtt is not None
        self.step_latency_ms[-1].append(rtt * 1e3 if fresh and rtt is not None else None)
        if len(self.sim.results) > episodes_before:
            self.step_latency_ms.append([])
        return decision


def _render_mode(options: DemoOptions, console: Console) -> str | None:
    if not options.gui:
        return None
    if not os.environ.get("DISPLAY"):
        console.note(
            "--gui: no display here (DISPLAY is not set), so no pybullet window; running "
            "headless. Use --view for a live view in a browser instead."
        )
        return None
    return "human"


def run_demo(options: DemoOptions) -> int:
    """Run the demo (see the module docstring); returns the exit status."""
    # bad input fails here, before anything starts or is written
    policy, env_kwargs = _demo_policy_and_cell(options)
    rt = options.rt_priority
    if rt is not None:
        check_priority(rt)
    options.out.mkdir(parents=True, exist_ok=True)
    console = Console()
    controller = SimController(
        options.task, options.robot, options.episodes, options.seed,
        render_mode=_render_mode(options, console), env_kwargs=env_kwargs,
    )  # fmt: skip
    view = _start_view(options, controller, console)
    with tempfile.TemporaryDirectory(prefix="ff-demo-") as tmp:
        server = ServerProcess(_server_job(policy, options, rt), Path(tmp))
        endpoint = server.start()
        client = EdgeClient(endpoint)
        finished = False
        try:
            runtime = DemoRuntime(
                controller, client, hold_window_s=options.hold_window_s, name="demo",
                rt_priority=rt,
            )  # fmt: skip
            welcome = runtime.rearm()
            console.start(options, welcome, endpoint, view.url if view else None)
            report, faults = _run_cell(runtime, options, console, view)
            client.send_bye()
            finished = True
        finally:
            client.close()
            server_ok = server.stop()
            if view is not None:  # after Ctrl-C or a failure the page goes at once
                _linger(view, options.view_linger_s if finished else 0.0, console)
    metrics = demo_report.metrics(options, policy, report, client, server_ok, faults)
    metrics["scheduling"] = f"SCHED_FIFO {rt}" if rt is not None else "default (SCHED_OTHER)"
    demo_report.write_outputs(options, controller, runtime.step_latency_ms, metrics, console)
    controller.close()
    console.summary(metrics)
    return 0 if metrics["passed"] else 1


def _run_cell(
    runtime: DemoRuntime, options: DemoOptions, console: Console, view: Any
) -> tuple[RuntimeReport, list[dict[str, Any]]]:
    """Run the episodes; after a FAULT, explain it and re-arm as an operator would.

    Returns:
        The last segment's report with the loop figures of all segments, and one record per
        fault (its reason, the explanation, the trace of its last cycles).
    """
    faults: list[dict[str, Any]] = []
    loops: list[dict[str, Any]] = []
    while True:
        report = runtime.run(None, 0.25, lambda r: _progress(r, console, view, len(faults)))
        loops.append(report.loop)
        _progress(report, console, view, len(faults))
        if report.state != State.FAULT.value:
            break
        faults.append(_fault_record(runtime, report))
        console.note(f"FAULT {len(faults)}: {faults[-1]['explanation']}")
        if len(faults) > options.max_rearms:
            console.note(f"{len(faults)} faults: more than --max-rearms {options.max_rearms}; stop")
            break
        console.note("re-arming with a new session, as an operator would")
        runtime.rearm()
    report.loop = _merged_loops(loops)
    return report, faults


def _fault_record(runtime: DemoRuntime, report: RuntimeReport) -> dict[str, Any]:
    """The fault, explained; waits briefly for the late answer to say how late it was."""
    stats = runtime.client.metrics.latencies.get("round_trip")
    before = len(stats.samples) if stats is not None else 0
    runtime.client.receive_action(LATE_ANSWER_WAIT_S)  # too old to use, but timed on arrival
    stats = runtime.client.metrics.latencies.get("round_trip")
    late_s = stats.samples[-1] if stats is not None and len(stats.samples) > before else None
    return {
        "reason": report.reason,
        "explanation": runtime.explain_fault(late_s),
        "late_answer_ms": None if late_s is None else round(late_s * 1e3, 2),
        "episode": len(runtime.sim.results),
        "trace": report.trace,
    }


def _merged_loops(loops: list[dict[str, Any]]) -> dict[str, Any]:
    """Loop figures over every segment between re-arms (the last segment's lateness)."""
    merged = dict(loops[-1])
    merged["cycles"] = sum(loop["cycles"] for loop in loops)
    merged["missed"] = sum(loop["missed"] for loop in loops)
    merged["miss_rate"] = merged["missed"] / max(1, merged["cycles"])
    merged["longest_miss_run"] = max(loop["longest_miss_run"] for loop in loops)
    return merged


def _start_view(options: DemoOptions, controller: SimController, console: Console) -> Any:
    if not options.view:
        return None
    from factoryfloor.stack.live_view import LiveView

    view = LiveView(options.task, options.robot, options.view_port)
    controller.on_reset, controller.on_step = view.episode, view.step
    console.note(f"live view: {view.url}")
    return view


def _progress(report: RuntimeReport, console: Console, view: Any, faults: int = 0) -> None:
    console.progress(report)
    if view is not None:
        view.metrics({**_live_metrics(report), "faults": faults})


def _live_metrics(report: RuntimeReport) -> dict[str, Any]:
    rtt = report.client["latency_us"].get("round_trip", {})
    info = report.controller
    return {
        "episodes": info.get("episodes"),
        "successes": info.get("successes"),
        "state": report.state,
        "reason": report.reason or "none",
        "cycles": report.loop["cycles"],
        "round_trip_p50_ms": round(rtt.get("p50", 0) / 1e3, 2),
        "round_trip_p99_ms": round(rtt.get("p99", 0) / 1e3, 2),
        "deadline_misses": report.loop["missed"],
        "status": f"running: {info.get('episodes', 0)} episodes done",
    }


def _linger(view: Any, seconds: float, console: Console) -> None:
    """Keep the live view up ``seconds`` after the run, saying so on the terminal and page."""
    if seconds > 0:
        text = f"the run has ended; this page stays up {seconds:.0f} s more (Ctrl-C ends it)"
        view.status(text)
        console.note(f"live view stays up {seconds:.0f} s more: {view.url} (Ctrl-C ends it)")
        time.sleep(seconds)
    view.close()


def _server_job(policy: str, options: DemoOptions, rt_priority: int | None) -> ServerJob:
    return ServerJob(
        policy=policy, task=options.task, robot=options.robot, rt_priority=rt_priority,
        config=ServerConfig(bind="tcp://127.0.0.1:0"),
        options=ServeOptions(
            report_every_s=5.0, metrics_jsonl=options.out / "server_metrics.jsonl"
        ),
    )  # fmt: skip


__all__ = ["DemoOptions", "demo_policy", "run_demo"]
