"""A command started and stopped the way a user's terminal does it, for the tests of real signals.

A terminal runs a command as the foreground process group and sends Ctrl-C to the whole group;
`uv run` forwards the signal to its child once more. So `ctrl_c_twice` signals the group twice,
0.3 s apart, and `command` starts either the installed script or the same command through `uv run`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOW = ("script", "uv run")  # the two ways a command is started


def command(name: str, how: str) -> list[str]:
    """The console script `name` as a user starts it: installed, or through `uv run`."""
    if how == "script":
        return [str(Path(sys.executable).parent / name)]
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (CI installs it with pip before running the tests)"
    return [uv, "run", "--no-sync", "--project", str(REPO), name]


def start(argv: list[str], env: dict[str, str], cwd: Path, *, text: bool) -> subprocess.Popen:
    """`argv` in a process group of its own, with no terminal and no stdin."""
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=text, start_new_session=True,
    )  # fmt: skip


def ctrl_c_twice(proc: subprocess.Popen) -> float:
    """SIGINT to the process group, again 0.3 s later; the monotonic time of the first."""
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):  # it may have ended already: fine
        os.killpg(proc.pid, signal.SIGINT)
    return sent


def ended(proc: subprocess.Popen, sent: float, timeout: float = 60) -> tuple[object, object, float]:
    """`proc`'s stdout and stderr once it has ended (killed at `timeout`), and the seconds since `sent`."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return out, err, time.monotonic() - sent
