"""Stopping on purpose, with real signals sent to this process: the first SIGINT or SIGTERM only sets
the flag (the step finishes), a Ctrl-C after either stops at once, the old handlers come back, and
`train` exits 128 + the signal's number with the message that says how to resume."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from microgpt_train import TrainingInterrupted
from microgpt_train import cli as train_cli
from microgpt_train.interrupts import StopFlag

from .conftest import tiny_flags


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_only_sets_the_flag(signum):
    with StopFlag() as stop:
        assert stop.signum is None and stop.any_process() is None
        signal.raise_signal(signum)  # no exception: the current step runs on
        assert stop.signum == signum and stop.any_process() == signum


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_ctrl_c_after_a_first_signal_stops_at_once(first):
    with StopFlag() as stop:
        signal.raise_signal(first)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert stop.signum == first  # what asked for the stop first is what the run reports


def test_a_second_sigterm_does_not_abort_the_save():
    with StopFlag() as stop:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # e.g. a scheduler repeating itself: still a clean stop
        assert stop.signum == signal.SIGTERM


def test_the_old_handlers_come_back_even_after_an_error():
    seen = []
    old_int = signal.signal(signal.SIGINT, lambda s, f: seen.append(s))
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RuntimeError), StopFlag():
            raise RuntimeError("a failed step")
        signal.raise_signal(signal.SIGINT)
        assert seen == [signal.SIGINT] and signal.getsignal(signal.SIGTERM) is old_term
    finally:
        signal.signal(signal.SIGINT, old_int)


def test_outside_the_main_thread_it_installs_nothing_and_never_fires():
    before = signal.getsignal(signal.SIGINT)
    result = {}

    def worker():
        with StopFlag() as stop:
            result["inside"] = signal.getsignal(signal.SIGINT)
            result["signum"] = stop.any_process()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=10)
    assert result == {"inside": before, "signum": None}


def test_training_interrupted_names_the_signal_step_and_resume_command(tmp_path):
    err = TrainingInterrupted(42, tmp_path / "my-run", signal.SIGTERM)
    assert isinstance(err, KeyboardInterrupt) and not isinstance(
        err, Exception
    )  # no `except Exception` eats it
    assert (err.step, err.run_dir, err.signum) == (42, tmp_path / "my-run", signal.SIGTERM)
    assert str(err) == (
        f"SIGTERM at step 42: checkpoint saved in {tmp_path / 'my-run'}; "
        "continue it with --resume --name my-run"
    )
    assert TrainingInterrupted(1, Path("runs/x")).signum == signal.SIGINT
    assert str(TrainingInterrupted(1, Path("runs/x"))).startswith("SIGINT at step 1:")


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (
            TrainingInterrupted(3, Path("runs/tiny"), signal.SIGTERM),
            128 + signal.SIGTERM,
            "SIGTERM at step 3",
        ),
        (
            TrainingInterrupted(3, Path("runs/tiny"), signal.SIGINT),
            128 + signal.SIGINT,
            "--resume --name tiny",
        ),
        (KeyboardInterrupt(), 128 + signal.SIGINT, "interrupted"),  # a second Ctrl-C: no checkpoint
    ],
)
def test_the_train_command_exits_128_plus_the_signal(tmp_path, monkeypatch, capsys, raised, code, message):
    def interrupted(config, resume=False):
        raise raised

    monkeypatch.setattr("microgpt_train.loop.train", interrupted)
    assert train_cli.main(tiny_flags(tmp_path, "tiny")) == code
    assert message in capsys.readouterr().err
