"""The run folder: a second `train` on a folder in use is refused at once (a lock, not a race), the
lock file goes with the lock and a killed run's never blocks; nothing is written before a run starts,
and a run that ends before its first step leaves nothing; a second run with no name chosen goes
beside the first. What a new or resumed run may start in is in test_loop.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from microgpt_train import cli
from microgpt_train.run_folder import RunFolder, RunFolderBusyError, free_name, run_lock

from .conftest import run_cli, tiny_flags


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
        assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [".lock"]  # nothing was written
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is in use by another train process" in err and err.count("\n") == 1
    assert list((tmp_path / "busy").iterdir()) == []  # the lock file goes with the lock
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


def test_a_folder_made_by_a_start_without_a_trained_step_is_taken_away(tmp_path):
    with RunFolder(tmp_path / "new", resume=False, main=True, files=("a.txt",)) as folder:
        folder.start(lambda: (tmp_path / "new" / "a.txt").write_text("x"))
        assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [".lock", "a.txt"]
    assert not (tmp_path / "new").exists()
    with RunFolder(tmp_path / "kept", resume=False, main=True, files=("a.txt",)) as folder:
        folder.start(lambda: (tmp_path / "kept" / "a.txt").write_text("x"))
        folder.trained()
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["a.txt"]  # and no .lock


def test_in_a_folder_it_did_not_make_it_takes_away_only_what_it_added(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    (tmp_path / "mine" / "a.txt").write_text("an earlier start's")
    with RunFolder(tmp_path / "mine", resume=False, main=True, files=("a.txt", "b.txt")) as folder:
        folder.start(lambda: (tmp_path / "mine" / "b.txt").write_text("x"))
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["a.txt", "notes.txt"]


def test_free_name_counts_up_past_taken_folders(tmp_path):
    assert free_name(tmp_path, "quickstart") == "quickstart"
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart-2").mkdir()
    assert free_name(tmp_path, "quickstart") == "quickstart-3"


def test_a_missing_data_file_is_the_first_thing_said_and_leaves_no_folder(tmp_path, capsys):
    flags = tiny_flags(tmp_path, "m1", tokenizer="")
    flags[flags.index("--data") + 1] = str(tmp_path / "nope.txt")
    assert cli.main(flags) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "nope.txt" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_offline_hub_dataset_fails_before_any_work_and_leaves_no_folder(tmp_path):
    done = run_cli(["--preset", "seed-5m", "--runs-dir", str(tmp_path / "runs")], timeout=240)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "stas/openwebtext-10k" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_second_run_with_no_name_goes_beside_the_first(tmp_path, tiny_tokenizer_dir):
    """`uv run train` typed twice: the second run trains in runs/quickstart-2 and says so."""
    flags = tiny_flags(tmp_path, "unused", tokenizer=str(tiny_tokenizer_dir), max_steps=1, eval_every=0)
    at = flags.index("--name")
    flags = flags[:at] + flags[at + 2 :]  # no --name: the preset's, quickstart
    first, second = run_cli(flags, timeout=240), run_cli(flags, timeout=240)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "holds an earlier run" not in first.stderr
    assert (
        f"{tmp_path / 'quickstart'} holds an earlier run, so this one is {tmp_path / 'quickstart-2'} "
        "(--name chooses the folder; --resume --name quickstart continues the earlier one)"
    ) in second.stderr
    assert (tmp_path / "quickstart" / "model").is_dir() and (tmp_path / "quickstart-2" / "model").is_dir()
    assert not any((tmp_path / name / ".lock").exists() for name in ("quickstart", "quickstart-2"))
    named = run_cli([*flags, "--name", "quickstart"], timeout=240)  # a name chosen is never changed
    assert named.returncode == 2 and "already holds a finished run (step 1" in named.stderr
