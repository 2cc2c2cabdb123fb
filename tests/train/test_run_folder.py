"""The run folder's lock: a second `train` on a folder in use is refused at once (a lock, not a race),
and a killed run leaves no lock behind. What a new or resumed run may start in is in test_loop.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from microgpt_train import cli
from microgpt_train.run_folder import RunFolderBusyError, run_lock

from .conftest import tiny_flags


def test_a_second_train_on_a_folder_in_use_is_refused(tmp_path, tiny_tokenizer_dir, capsys):
    flags = tiny_flags(tmp_path, "busy", tokenizer=str(tiny_tokenizer_dir))
    with run_lock(tmp_path / "busy"):  # another open file: flock refuses it as it would another process
        with (
            pytest.raises(
                RunFolderBusyError, match=rf"in use by another train process \(pid {os.getpid()} on "
            ),
            run_lock(tmp_path / "busy"),
        ):
            pass
        assert cli.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is in use by another train process" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [".lock"]  # nothing was written
    with run_lock(tmp_path / "busy"):  # released
        pass


def test_a_killed_run_leaves_no_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from microgpt_train.run_folder import run_lock
            with run_lock(__import__("pathlib").Path({str(tmp_path / "run")!r})):
                print("locked", flush=True)
                time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusyError, match=f"pid {holder.pid} "), run_lock(tmp_path / "run"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with run_lock(tmp_path / "run"):  # the kernel dropped the dead process's lock
        pass
