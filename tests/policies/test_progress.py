"""Progress: periodic lines when not on a terminal, nothing when turned off."""

from __future__ import annotations

import io

from factoryfloor.policies.progress import Progress


def test_not_a_terminal_gets_periodic_lines_and_a_last_one():
    stream = io.StringIO()
    with Progress("cloning", 3, "epochs", every_s=0.0, stream=stream) as bar:
        for epoch in range(3):
            bar.advance(note=f"loss {0.1 / (epoch + 1):.3f}")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("cloning (loss 0.100): 1/3 epochs, ")
    assert lines[-1].startswith("cloning (loss 0.033): 3/3 epochs, ") and lines[-1].endswith(" s")
    assert len(lines) == 4  # one per advance, and the closing line


def test_lines_are_spaced_and_turned_off():
    stream = io.StringIO()
    with Progress("recording", 100, "episodes", every_s=3600.0, stream=stream) as bar:
        for _ in range(100):
            bar.advance()
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[-1]]
    assert "100/100 episodes" in stream.getvalue()
    quiet = io.StringIO()
    with Progress("recording", 5, "episodes", stream=quiet, enabled=False) as bar:
        bar.advance(5)
    assert quiet.getvalue() == ""
