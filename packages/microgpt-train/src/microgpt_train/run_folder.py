"""The run folder ``runs/<name>/``: who may use it (a lock), and whether a run may start in it.

    train_config.json   the resolved run config          metrics.jsonl, loss.png
    tokenizer/          the BPE trained for the run      checkpoints/<step>/{state,meta,model}/
    model/              the finished model               .lock   held by the `train` using the folder

A new run refuses a folder that already holds a model or checkpoints (it would overwrite them); a
resumed run needs a checkpoint. The lock is an advisory `flock` held by process 0 for the whole run:
a second `train` on the same folder is refused at once, and a killed one releases it (the kernel
drops the lock with the process), so a stale lock never blocks a restart.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from microgpt_core.folders import MODEL_DIR, checkpoint_steps
from microgpt_core.jsonfile import read_json_object
from microgpt_train.config import RunConfigError

__all__ = ["RunFolderBusyError", "check_run_folder", "listing", "run_lock"]

LOCK_FILE = ".lock"


class RunFolderBusyError(RunConfigError):
    """Another `train` process is using this run folder."""


def listing(folder: Path) -> str:
    """`folder`'s entries, folders marked with a slash (for messages)."""
    if not folder.is_dir():
        return "nothing"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name != LOCK_FILE)
    return ", ".join(names) or "nothing"


def check_run_folder(run_dir: Path, *, resume: bool) -> int | None:
    """The newest checkpoint step (None for a new run); `RunConfigError` when the run may not start."""
    steps = checkpoint_steps(run_dir)
    if resume:
        if not steps:
            what = f"it holds {listing(run_dir)}" if run_dir.is_dir() else "it does not exist"
            raise RunConfigError(
                f"--resume: {run_dir} has no checkpoint to resume from ({what}); start the run without "
                "--resume, or check --name and --runs-dir"
            )
        return steps[-1]
    if steps:
        raise RunConfigError(
            f"{run_dir} already holds checkpoints (newest: step {steps[-1]}): pass --resume to continue "
            "it, or choose another --name"
        )
    if (run_dir / MODEL_DIR).exists():
        raise RunConfigError(
            f"{run_dir} already holds a trained model ({MODEL_DIR}/, with no checkpoints to resume): "
            f"choose another --name, or delete {run_dir} to train it again"
        )
    return None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Holds the run folder's lock (creating the folder); `RunFolderBusyError` if another holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            holder = _read_holder(path)
            raise RunFolderBusyError(
                f"{run_dir} is in use by another train process ({holder}): wait for it to finish, or "
                f"choose another --name"
            )
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": stamp}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; a second run is not detected
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(path: Path) -> str:
    try:
        holder = read_json_object(path, error=ValueError)
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError):
        return "its pid is unknown"
