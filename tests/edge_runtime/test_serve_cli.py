"""``edge serve`` refuses what it cannot serve in one line: settings, endpoints, a taken port."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from factoryfloor.cli import build_parser, main
from factoryfloor.cli.edge import server_setting

REACH_BUNDLE = (
    Path(__file__).resolve().parents[2] / "factoryfloor/policies/pretrained/reach_panda.ffpolicy"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_sessions=16", ("max_sessions", 16)),
        ("session_timeout_s=2.5", ("session_timeout_s", 2.5)),
        ("peer_frames_per_s=none", ("peer_frames_per_s", None)),
        ("peer_frames_per_s=400", ("peer_frames_per_s", 400.0)),
        ("flood_pause_ms=0", ("flood_pause_ms", 0.0)),
        ("name=cell-3", ("name", "cell-3")),
    ],
)
def test_settings_parse_by_the_fields_type(text, expected):
    assert server_setting(text) == expected


def test_settings_reach_the_server_config():
    args = build_parser().parse_args(
        ["edge", "serve", "--policy", "x", "--set", "max_sessions=4", "--set", "ban_s=3"]
    )
    assert dict(args.set) == {"max_sessions": 4, "ban_s": 3.0}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_sessions=0", "> 0 expected"),
        ("session_timeout_s=-1", "> 0 expected"),
        ("ban_s=nan", "finite number"),
        ("max_sessions=1.5", "int expected"),
        ("nope=1", "NAME one of"),
        ("bind=tcp://0.0.0.0:1", "NAME one of"),  # its own flag
        ("max_sessions", "NAME=VALUE"),
        ("name=" + "x" * 200, "128 printable"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(text, fragment, capsys):
    assert main(["edge", "serve", "--policy", str(REACH_BUNDLE), "--set", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("bind", "fragment"),
    [
        ("nonsense", "is not a ZeroMQ endpoint"),
        ("tcp://127.0.0.1:notaport", "use tcp://HOST:PORT"),
    ],
)
def test_bad_endpoints_are_one_line_and_exit_2(bind, fragment, capsys):
    assert main(["edge", "serve", "--policy", str(REACH_BUNDLE), "--bind", bind]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err, err


def test_a_port_in_use_is_one_line_and_exit_2(capsys):
    socket = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        port = socket.bind_to_random_port("tcp://127.0.0.1")
        bind = f"tcp://127.0.0.1:{port}"
        assert main(["edge", "serve", "--policy", str(REACH_BUNDLE), "--bind", bind]) == 2
    finally:
        socket.close(0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another server running there" in err, err
