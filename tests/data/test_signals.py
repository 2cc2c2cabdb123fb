"""`Interrupts`: a signal ends a command at once with its message and status 128 + signum, after its
critical sections and `on_stop` callbacks; inside `deferred()` it only sets `signum`; Python's own
handlers come back. Whole commands under real signals: tests/infer/test_cli.py and
tests/train/test_signals.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from microgpt_data import signals
from microgpt_data.signals import Interrupts

COMMAND = textwrap.dedent("""
    import os, sys, time
    from microgpt_data import signals
    from microgpt_data.signals import Interrupts

    with Interrupts(message="interrupted here") as interrupts:
        interrupts.on_stop(lambda: os.write(1, b"first registered, run last\\n"))
        interrupts.on_stop(lambda: os.write(1, b"cleaned up\\n"))
        with signals.cleanup(lambda: os.write(1, b"never: its section ended\\n")):
            pass
        if sys.argv[1] == "critical":
            with signals.critical():
                print("ready", flush=True)
                time.sleep(1.0)  # a signal now waits for the section
                print("section done", flush=True)
        else:
            print("ready", flush=True)
        time.sleep(60)
    print("not reached")
""")


def _signalled(mode: str, signum: int) -> tuple[subprocess.CompletedProcess, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - sent
    finally:
        proc.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_command_at_once_after_its_cleanups(signum):
    done, seconds = _signalled("plain", signum)
    assert done.returncode == 128 + signum
    assert done.stdout == "cleaned up\nfirst registered, run last\n"  # newest first; nothing else
    assert done.stderr == "interrupted here\n"  # one line, no traceback
    assert seconds < 5, seconds  # not after the 60 s sleep


def test_a_stop_waits_for_a_critical_section_to_end():
    done, seconds = _signalled("critical", signal.SIGINT)
    assert done.returncode == 130 and done.stderr == "interrupted here\n"
    assert done.stdout.startswith("section done\n")
    assert 0.5 < seconds < 10, seconds


def test_a_command_started_with_sigint_ignored_keeps_ignoring_it():
    """A script's `command &` starts it with SIGINT ignored (here `trap "" INT`), so that a Ctrl-C for
    the script's foreground command leaves it running; SIGTERM still stops it."""
    ignoring = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "-c", COMMAND, "plain"]
    proc = subprocess.Popen(ignoring, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, err) == (128 + signal.SIGTERM, "interrupted here\n")
    finally:
        proc.kill()


def test_a_signal_ignored_on_entry_stays_ignored_and_the_other_is_handled():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with Interrupts() as interrupts, interrupts.deferred():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            interrupts.reinstall()  # takes back only what it handles
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.2)
            assert interrupts.signum is None
            signal.raise_signal(signal.SIGTERM)
            _wait_for(lambda: interrupts.signum is not None)
            assert interrupts.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def _wait_for(predicate) -> None:
    deadline = time.monotonic() + 10
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)  # the watcher thread is about to see it


def test_inside_deferred_a_signal_only_sets_signum():
    with Interrupts() as interrupts, interrupts.deferred() as same:
        assert same is interrupts and signals.active() is interrupts
        signal.raise_signal(signal.SIGTERM)  # never a KeyboardInterrupt, never an exit
        _wait_for(lambda: interrupts.signum is not None)
        for _ in range(3):
            signal.raise_signal(signal.SIGINT)
        _wait_for(lambda: interrupts._repeats_noted)  # read here, not once the test has ended
        assert interrupts.signum == signal.SIGTERM  # the first one is the one reported
    assert signals.active() is None


def test_deferred_note_and_repeat_note_are_printed(capfd):
    with Interrupts() as interrupts, interrupts.deferred("finishing up"):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        _wait_for(lambda: interrupts._repeats_noted)
    err = capfd.readouterr().err
    assert "SIGINT: finishing up" in err and err.count("SIGINT again: already stopping, please wait") == 1


def test_a_second_signal_read_after_the_deferred_section_ended_changes_nothing(monkeypatch):
    """Two signals inside a deferred section; on a busy machine the watcher may read the second only
    once the section has ended. It must not end the process then (the caller is already stopping)."""
    stops = []
    with Interrupts() as interrupts:
        monkeypatch.setattr(interrupts, "_stop", stops.append)
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            _wait_for(lambda: interrupts.signum is not None)
        interrupts._received(signal.SIGTERM)  # as the watcher reads the late one
        assert stops == [] and interrupts.signum == signal.SIGINT and interrupts._repeats_noted
    assert signals.active() is None


def test_python_handlers_and_the_wakeup_descriptor_come_back():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with Interrupts():
        assert signal.getsignal(signal.SIGINT) is not before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert signal.set_wakeup_fd(-1) == -1  # nothing left installed
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # Python's own Ctrl-C again


def test_outside_the_main_thread_it_installs_nothing():
    seen = {}

    def worker():
        with Interrupts() as interrupts:
            seen["active"] = signals.active()
            with interrupts.critical(), signals.critical(), signals.cleanup(lambda: None):
                seen["ran"] = True

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=10)
    assert seen == {"active": None, "ran": True}


def test_remove_folder_removes_a_tree_and_ignores_a_missing_one(tmp_path):
    (tmp_path / "staged" / "a").mkdir(parents=True)
    (tmp_path / "staged" / "a" / "file").write_text("x")
    signals.remove_folder(tmp_path / "staged")
    signals.remove_folder(tmp_path / "missing")
    assert os.listdir(tmp_path) == []
