"""Stopping on purpose, with real signals sent to this process: once the run has started the first
SIGINT or SIGTERM only sets the flag (the step finishes and is saved), later ones change nothing, the
old handlers come back, and `train` exits 128 + the signal's number with the message that says how
to resume. Whole `train` processes under real signals are in test_signals.py."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from microgpt_data import signals
from microgpt_data.signals import Interrupts
from microgpt_train import TrainingInterrupted
from microgpt_train import cli as train_cli
from microgpt_train.interrupts import StopFlag

from .conftest import tiny_flags


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_before_defer_nothing_is_installed_after_it_the_first_signal_only_sets_the_flag(signum):
    before = signal.getsignal(signal.SIGINT)
    with StopFlag() as stop:
        assert signal.getsignal(signal.SIGINT) is before  # setup: Python's own Ctrl-C still applies
        stop.defer()
        assert stop.signum is None and stop.any_process() is None
        signal.raise_signal(signum)  # no exception: the current step runs on
        assert stop.signum == signum and stop.any_process() == signum


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_later_signals_change_nothing_and_say_so_once(first, capsys):
    """A terminal's process group plus `uv run` forwarding deliver two: the save must go on."""
    with StopFlag() as stop:
        stop.defer()
        for sig in (first, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            signal.raise_signal(sig)  # never a KeyboardInterrupt
        assert stop.signum == first  # what asked for the stop first is what the run reports
    err = capsys.readouterr().err
    assert f"{signal.Signals(first).name}: finishing this step and saving its checkpoint" in err
    assert err.count("already stopping") == 1


def test_under_a_command_the_commands_watcher_takes_the_signal():
    """In `train`, StopFlag defers the command's `Interrupts` instead of installing handlers."""
    with Interrupts() as interrupts, StopFlag() as stop:
        stop.defer()
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while not interrupts._repeats_noted and time.monotonic() < deadline:
            time.sleep(0.01)  # the watcher thread reads both (its note, here and not after the test)
        assert stop.signum == signal.SIGINT == interrupts.signum
    assert signals.active() is None


def test_the_old_handlers_come_back_even_after_an_error():
    seen = []
    old_int = signal.signal(signal.SIGINT, lambda s, f: seen.append(s))
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(RuntimeError), StopFlag() as stop:
            stop.defer()
            raise RuntimeError("a failed step")
        signal.raise_signal(signal.SIGINT)
        assert seen == [signal.SIGINT] and signal.getsignal(signal.SIGTERM) is old_term
    finally:
        signal.signal(signal.SIGINT, old_int)


def test_a_signal_ignored_before_defer_stays_ignored():
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopFlag() as stop:
            stop.defer()
            signal.raise_signal(signal.SIGINT)
            assert stop.signum is None and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
            assert stop.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old_int)


def test_outside_the_main_thread_it_installs_nothing_and_never_fires():
    before = signal.getsignal(signal.SIGINT)
    result = {}

    def worker():
        with StopFlag() as stop:
            stop.defer()
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
    assert str(TrainingInterrupted(None, Path("runs/x"))) == (
        "SIGINT before the first step: nothing was trained, and nothing of runs/x was kept"
    )
    assert str(TrainingInterrupted(None, Path("runs/x"), new=False)) == (
        "SIGINT before the first step: runs/x is as it was; continue it with --resume --name x"
    )


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
        (KeyboardInterrupt(), 128 + signal.SIGINT, "interrupted"),  # Python's own, outside the main thread
    ],
)
def test_the_train_command_exits_128_plus_the_signal(tmp_path, monkeypatch, capsys, raised, code, message):
    def interrupted(config, resume=False):
        raise raised

    monkeypatch.setattr("microgpt_train.loop.train", interrupted)
    assert train_cli.main(tiny_flags(tmp_path, "tiny")) == code
    assert message in capsys.readouterr().err
