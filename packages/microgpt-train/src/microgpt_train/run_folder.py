"""The run folder ``runs/<name>/``: when it is made, who may use it (a lock), whether a run may start
in it, and what is left of it when a run never starts.

    train_config.json   the resolved run config          metrics.jsonl, loss.png
    tokenizer/          the BPE trained for the run      checkpoints/<step>/{state,meta,model}/
    model/              the finished model               .lock   held by the `train` using the folder
    tensorboard/, wandb/  what those trackers write (--tracker)

A new run refuses a folder that already holds a model or checkpoints (it would overwrite them); a
resumed run needs a checkpoint. Nothing is written before the run starts (`RunFolder.start`, once
its data, tokenizer and compiled step are ready), and a run that ends before its first step (a
failure, a Ctrl-C) takes away what its start wrote, the folder too when it made it. The lock is an
advisory `flock` held by process 0 from the start to the end: a second `train` on the same folder
is refused at once, and a killed one releases it (the kernel drops the lock with the process), so a
stale lock never blocks a restart. The lock file is removed with the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from microgpt_core.jsonfile import read_json_object
from microgpt_data import signals
from microgpt_infer.run_layout import MODEL_DIR, checkpoint_steps
from microgpt_train.config import RunConfig, RunConfigError

__all__ = [
    "RunFolder",
    "beside_earlier_runs",
    "RunFolderBusyError",
    "check_not_busy",
    "check_run_folder",
    "free_name",
    "listing",
    "run_lock",
]

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
    if steps and (run_dir / MODEL_DIR).exists():
        raise RunConfigError(
            f"{run_dir} already holds a finished run (step {steps[-1]}, its model in {MODEL_DIR}/): choose "
            f"another --name, or train it further with --resume --max-steps N (N > {steps[-1]})"
        )
    if steps:
        raise RunConfigError(
            f"{run_dir} already holds a run that stopped at step {steps[-1]}: pass --resume to continue "
            "it, or choose another --name"
        )
    if (run_dir / MODEL_DIR).exists():
        raise RunConfigError(
            f"{run_dir} already holds a trained model ({MODEL_DIR}/, with no checkpoints to resume): "
            f"choose another --name, or delete {run_dir} to train it again"
        )
    return None


def free_name(runs_dir: Path, name: str) -> str:
    """`name` when ``runs_dir/name`` does not exist, else the first of name-2, name-3, ... that does
    not: where a second ``uv run train`` without --name goes, beside the first run, never over it."""
    candidate, n = name, 1
    while (runs_dir / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def beside_earlier_runs(config: RunConfig) -> RunConfig:
    """A run with no name chosen goes to a new folder when its preset's is taken (NAME-2, NAME-3, ...),
    never over an earlier run; process 0 picks, every process takes its pick."""
    import jax

    name = free_name(Path(config.runs_dir), config.name)
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        picked = np.frombuffer(name.encode().ljust(_NAME_BYTES, b"\0")[:_NAME_BYTES], np.uint8)
        picked = multihost_utils.broadcast_one_to_all(picked)
        name = bytes(np.asarray(picked)).rstrip(b"\0").decode()
    if name == config.name:
        return config
    earlier = Path(config.runs_dir) / config.name
    if jax.process_index() == 0:
        print(
            f"{earlier} holds an earlier run, so this one is {Path(config.runs_dir) / name} (--name chooses "
            f"the folder; --resume --name {config.name} continues the earlier one)",
            file=sys.stderr,
            flush=True,
        )
    return dataclasses.replace(config, name=name)


_NAME_BYTES = 1024


class RunFolder:
    """One run's folder over the run's life (see the module docstring); process 0 writes it.

    `start(write)` takes the lock and runs `write()` (the run config, the tokenizer); `trained()`
    marks the first step done; `close()` takes away what `start` made if no step was trained, and
    gives the lock up. A command's Ctrl-C waits for `start` (`signals.critical`).
    """

    def __init__(self, run_dir: Path, *, resume: bool, main: bool, files: tuple[str, ...] = ()) -> None:
        """`files`: the names a run writes in its folder; those it adds to an existing folder (a
        resumed run's, or one a user made) are removed again when no step was trained."""
        self.run_dir, self.resume, self.main, self.files = run_dir, resume, main, files
        self.made: list[Path] = []  # what start() made, removed again if no step is trained
        self.has_trained = False
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunFolder:
        return self

    def start(self, write: Callable[[], object] | None = None) -> int | None:
        """Takes the lock, checks the folder again and runs `write`; the newest checkpoint step."""
        with signals.critical():
            if self.main:
                if not self.run_dir.exists():
                    self.made.append(self.run_dir)
                else:
                    self.made += [self.run_dir / f for f in self.files if not (self.run_dir / f).exists()]
                self._stack.enter_context(run_lock(self.run_dir))
            latest = check_run_folder(self.run_dir, resume=self.resume)  # again: no other run can change it
            if write is not None:
                write()
            return latest

    def trained(self) -> None:
        self.has_trained = True

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.main and not self.has_trained:
                for path in reversed(self.made):
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                self.made.clear()
        finally:
            self._stack.close()


def check_not_busy(run_dir: Path) -> None:
    """`RunFolderBusyError` at once when another `train` holds the folder's lock (writes nothing)."""
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        if not _try_lock(fd):
            raise RunFolderBusyError(_busy(run_dir, path))
    finally:
        os.close(fd)


def _busy(run_dir: Path, path: Path) -> str:
    return (
        f"{run_dir} is in use by another train process ({_read_holder(path)}): wait for it to finish, or "
        "choose another --name"
    )


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Holds the run folder's lock (creating the folder); `RunFolderBusyError` if another holds it.

    The lock file is removed when the lock is given up, so it never outlives its holder but for a
    killed process's (whose lock the kernel has dropped: the next run takes it over)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise RunFolderBusyError(_busy(run_dir, path))
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed it between our open and our lock: take the new one
    try:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": stamp}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding it: a waiting process sees a removed file and retries
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


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
