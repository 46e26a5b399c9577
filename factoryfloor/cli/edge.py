"""``factoryfloor edge``: serve, run-sim, keygen.

Thin over ``factoryfloor.stack.policy_server`` (serve), ``factoryfloor.stack.sim_cell`` (run-sim)
and ``factoryfloor.edge_runtime.auth`` (keygen).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from factoryfloor.cli._args import add_robot, add_task, count, key_id


def configure(p: argparse.ArgumentParser) -> None:
    """Add the serve, run-sim, keygen, conformance and describe subcommands to ``p``."""
    sub = p.add_subparsers(dest="edge_command", required=True, metavar="EDGE_COMMAND")
    fmt = p.formatter_class
    for name, text, configure_one, run_one in (
        ("serve", "serve a policy bundle (or the expert) over ZeroMQ", _serve_args, _run_serve),
        ("run-sim", "run the simulated cell against a policy server", _sim_args, _run_edge_sim),
        ("keygen", "create CURVE keys for a server and its controllers", _keygen_args, _keygen),
        (
            "conformance",
            "test an FFEP/2 server (--connect) or controller (--serve) against docs/protocol.md",
            _conformance_args,
            _conformance,
        ),
        (
            "describe",
            "print what an FFEP/2 server serves (its DESCRIPTION)",
            _describe_args,
            _describe,
        ),
    ):
        one = sub.add_parser(name, help=text, description=text, formatter_class=fmt)
        configure_one(one)
        one.set_defaults(edge_run=run_one)


def _serve_args(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--policy", required=True, help="a .ffpolicy bundle, or expert")
    add_task(serve, option=True)
    add_robot(serve, "robot of --policy expert: panda or xarm6")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555", help="endpoint to bind")
    serve.add_argument("--keys", type=Path, help="CURVE key folder (factoryfloor edge keygen)")
    serve.add_argument("--metrics-port", type=count(0), help="Prometheus text on 127.0.0.1:PORT")
    serve.add_argument("--metrics-jsonl", type=Path, help="append metrics snapshots here")
    serve.add_argument("--report-every", type=float, default=10.0, help="seconds between reports")
    serve.add_argument("--max-action-age-ms", type=float, default=50.0, help="sent in WELCOME")
    serve.add_argument("--ready-file", type=Path, help="write the bound endpoint here when ready")
    serve.add_argument(
        "--trust", type=Path,
        help="trust store folder of publisher .pub files: serve only bundles signed by one of "
        "them (default: $FACTORYFLOOR_TRUST, else the package's release key)",
    )  # fmt: skip
    serve.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", type=server_setting,
        help="any other ServerConfig setting, e.g. --set max_sessions=16 --set "
        "session_timeout_s=5 (repeatable; docs/protocol.md section 8)",
    )  # fmt: skip
    serve.add_argument(
        "--allow-unsigned", action="store_true",
        help="serve an unsigned or untrusted bundle on a non-loopback --bind (not for a robot)",
    )  # fmt: skip
    serve.add_argument(
        "--rt-priority", type=int,
        help="serve under SCHED_FIFO at this priority, below the controllers' (1-99; needs "
        "CAP_SYS_NICE)",
    )  # fmt: skip


def _sim_args(sim: argparse.ArgumentParser) -> None:
    add_task(sim, option=True, default="factoryfloor/PickPlace-v0")
    sim.add_argument("--connect", default="tcp://127.0.0.1:5555", help="server endpoint")
    sim.add_argument("--episodes", type=count(1), default=10, help="episodes to run")
    add_robot(sim)
    sim.add_argument("--seed", type=count(0), default=0, help="seed of the first episode")
    sim.add_argument("--hold-window-ms", type=float, default=20.0, help="hold window (ms)")
    sim.add_argument(
        "--rt-priority", type=int,
        help="run the control loop under SCHED_FIFO at this priority (1-99; needs CAP_SYS_NICE)",
    )  # fmt: skip
    sim.add_argument("--keys", type=Path, help="CURVE key folder holding this client's keys")
    sim.add_argument("--client-name", default="controller", help="client key name in --keys")
    sim.add_argument("--json", action="store_true", help="print the full report as JSON")
    sim.add_argument("--report-every", type=float, default=5.0, help="seconds between reports")
    sim.add_argument("--metrics-jsonl", type=Path, help="append the periodic reports here")
    sim.add_argument(
        "--publisher", type=key_id,
        help="accept only a bundle signed by this publisher key id (factoryfloor bundle verify)",
    )  # fmt: skip


def _keygen_args(keygen: argparse.ArgumentParser) -> None:
    keygen.add_argument("dir", type=Path, metavar="DIR", help="key folder")
    keygen.add_argument("--client", action="append", help="client name (repeatable)")


# ServerConfig fields --set may change, and how their text becomes a value (their own flags
# set the others)
_SETTING_TYPES: dict[str, Callable[[str], object]] = {
    "int": int, "float": float, "str": str,
    "float | None": lambda text: None if text.lower() == "none" else float(text),
}  # fmt: skip
_OWN_FLAGS = {"bind", "max_action_age_ms"}
_MAY_BE_ZERO = {"evict_after_s", "flood_pause_ms", "poll_timeout_ms"}


def server_setting(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` of a ``ServerConfig`` field, the value parsed by the field's type."""
    from factoryfloor.edge_runtime.server import ServerConfig

    kinds = {f.name: str(f.type) for f in fields(ServerConfig) if f.name not in _OWN_FLAGS}
    name, sep, value = text.partition("=")
    if not sep or name not in kinds:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give NAME=VALUE with NAME one of {', '.join(sorted(kinds))}"
        )
    try:
        parsed = _SETTING_TYPES[kinds[name]](value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}={value!r}: {kinds[name]} expected") from None
    if isinstance(parsed, str) and not (0 < len(parsed) <= 128 and parsed.isprintable()):
        raise argparse.ArgumentTypeError(f"{name}: 1 to 128 printable characters expected")
    if isinstance(parsed, int | float):
        zero_ok = name in _MAY_BE_ZERO
        if not math.isfinite(parsed) or parsed < 0 or (parsed == 0 and not zero_ok):
            least = ">= 0" if zero_ok else "> 0"
            raise argparse.ArgumentTypeError(f"{name}={value!r}: a finite number {least} expected")
    return name, parsed


def run(args: argparse.Namespace) -> int:
    """Run the chosen edge subcommand; its exit status."""
    return int(args.edge_run(args))


def _run_serve(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime.serve import ServeOptions
    from factoryfloor.edge_runtime.server import ServerConfig
    from factoryfloor.stack.policy_server import ServerJob, serve_policy

    if args.rt_priority is not None:
        from factoryfloor.edge_runtime.realtime import check_priority

        check_priority(args.rt_priority)  # a bad value fails before the policy loads
    options = ServeOptions(
        keys_dir=args.keys, metrics_port=args.metrics_port, metrics_jsonl=args.metrics_jsonl,
        report_every_s=args.report_every, ready_file=args.ready_file,
        rt_priority=args.rt_priority,
    )  # fmt: skip
    config = ServerConfig(
        bind=args.bind, max_action_age_ms=args.max_action_age_ms, **dict(args.set)
    )
    job = ServerJob(policy=args.policy, task=args.task, robot=args.robot, config=config,
                    options=options, trust=args.trust,
                    allow_unsigned=args.allow_unsigned)  # fmt: skip
    return serve_policy(job)


def _run_edge_sim(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime.client import EdgeClient
    from factoryfloor.stack.sim_cell import run_sim

    client = None
    if args.keys is not None:
        import zmq

        from factoryfloor.edge_runtime.auth import secure_client

        socket = zmq.Context.instance().socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        secure_client(socket, args.keys, args.client_name)
        client = EdgeClient(args.connect, socket)

    def on_report(report: dict[str, object]) -> None:
        print(_sim_summary(report), flush=True)
        if args.metrics_jsonl is not None:
            with open(args.metrics_jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(report, default=str) + "\n")

    report = run_sim(
        args.task, args.connect, args.episodes, args.robot, args.seed,
        args.hold_window_ms / 1e3, client, args.report_every, on_report, args.rt_priority,
        publisher=args.publisher,
    )  # fmt: skip
    if args.metrics_jsonl is not None:
        on_report(report)
    print(json.dumps(report, default=str) if args.json else _sim_summary(report))
    return 0 if report["state"] != "FAULT" else 1


def _sim_summary(report: dict[str, Any]) -> str:
    rtt = report["client"]["latency_us"].get("round_trip", {})
    info, loop = report["controller"], report["loop"]
    return (
        f"{info['episodes']} episodes, success rate {info['success_rate']}, state "
        f"{report['state']} {report['reason']}; round trip p50 {rtt.get('p50')} us "
        f"p99 {rtt.get('p99')} us; deadline misses {loop['missed']} of {loop['cycles']}; "
        f"held {report['safety']['held']}"
    )


def _keygen(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime.auth import keygen

    for role, path in keygen(args.dir, args.client).items():
        print(f"{role}: {path}")
    print(f"server: --keys {args.dir}; give each controller {args.dir}/server.key and its secret")
    return 0


def _conformance_args(c: argparse.ArgumentParser) -> None:
    mode = c.add_mutually_exclusive_group(required=True)
    mode.add_argument("--connect", metavar="ENDPOINT", help="test the server at ENDPOINT")
    mode.add_argument("--serve", action="store_true", help="test the controller of --controller")
    c.add_argument("--out", type=Path, metavar="FILE.json", help="write the results as JSON")
    c.add_argument("--check", action="append", metavar="NAME", help="run only these checks")
    c.add_argument("--keys", type=Path, help="CURVE key folder holding this client's keys")
    c.add_argument("--client-name", default="controller", help="client key name in --keys")
    c.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for an answer")
    c.add_argument("--bind", default="tcp://127.0.0.1:0", help="--serve: endpoint the kit binds")
    add_task(c, option=True)
    add_robot(c, "--serve: robot of --task")
    c.add_argument("--spec", type=Path, help="--serve: a DESCRIPTION JSON instead of --task")
    c.add_argument("--controller", metavar="COMMAND", help="--serve: command with {endpoint}")
    c.add_argument("--hello-timeout", type=float, default=20.0, help="--serve: s to HELLO")


def _conformance(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime import conformance as kit
    from factoryfloor.edge_runtime.conformance.runner import conformance, socket_setup

    if not args.serve:
        setup = socket_setup(args.keys, args.client_name)
        target = kit.ServerTarget(args.connect, setup, timeout_s=args.timeout)
        return conformance(kit.SERVER_CHECKS, target, args.connect, args.out, args.check)
    if not args.controller or "{endpoint}" not in args.controller:
        raise ValueError('--serve needs --controller "COMMAND ... {endpoint} ..."')
    controller = kit.ControllerTarget(
        args.controller, _served_spec(args), bind=args.bind, hello_timeout_s=args.hello_timeout
    )
    return conformance(kit.CONTROLLER_CHECKS, controller, args.controller, args.out, args.check)


def _served_spec(args: argparse.Namespace) -> Any:
    from factoryfloor.edge_runtime.conformance.runner import load_spec

    if args.spec is not None:
        return load_spec(args.spec)
    if args.task is None:
        raise ValueError("--serve needs --task TASK (with --robot) or --spec DESCRIPTION.json")
    import gymnasium as gym

    from factoryfloor.stack.sim_cell import describe_env

    env = gym.make(args.task, robot=args.robot)
    try:
        return describe_env(env, args.task, args.robot)
    finally:
        env.close()


def _describe_args(d: argparse.ArgumentParser) -> None:
    d.add_argument("--connect", default="tcp://127.0.0.1:5555", help="server endpoint")
    d.add_argument("--keys", type=Path, help="CURVE key folder holding this client's keys")
    d.add_argument("--client-name", default="controller", help="client key name in --keys")
    d.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for DESCRIPTION")


def _describe(args: argparse.Namespace) -> int:
    from factoryfloor.edge_runtime.conformance.runner import describe_endpoint, socket_setup

    setup = socket_setup(args.keys, args.client_name)
    print(json.dumps(describe_endpoint(args.connect, setup, args.timeout), indent=2))
    return 0
