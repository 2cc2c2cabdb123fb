"""How a microGPT command stops on Ctrl-C or SIGTERM: at once, in one line, and never from inside JAX.

Python's own SIGINT handler raises `KeyboardInterrupt` wherever the main thread happens to be. In a
process running JAX that goes wrong three ways: raised in Python code that C++ called (a JAX callback),
it becomes a C++ exception, and a second signal during the unwinding aborts the process (``terminate
called ...``, exit 134); raised in a garbage-collection callback, it is printed and dropped, so the
signal is lost; and during a compilation (seconds) it waits for the compilation to return. A terminal
sends SIGINT to the whole process group and ``uv run`` forwards it once more, so two signals are the
rule, not the exception.

So every command runs under `Interrupts`. Its handlers never raise: the signal's number is written to
a wakeup file descriptor (`signal.set_wakeup_fd`), and a watcher thread reads it at once, whatever
the main thread is doing (loading, compiling, decoding). Then, by default, the watcher stops the
process: it waits for a `critical` section to end (a file being written, a line being printed), runs
the `on_stop` callbacks (end the output line, remove what a failed start made), prints the `message`
(``interrupted``) on stderr and exits with 128 + the signal's number. Inside `deferred()`, a signal
only records itself in `signum`; the caller stops at its next safe point (`train` finishes the step
and saves a checkpoint), and later signals print a note once and change nothing. A signal the
process was started with ignored (a script's ``command &``, ``nohup``) stays ignored.

    with Interrupts() as interrupts:
        interrupts.on_stop(end_the_line)
        with interrupts.critical():
            write_a_file()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = [
    "STOP_GRACE_SECONDS",
    "Interrupts",
    "active",
    "cleanup",
    "critical",
    "not_ignored",
    "remove_folder",
]

STOP_GRACE_SECONDS = 10.0  # the longest a stop waits for a critical section or a blocked stdout
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_active: list[Interrupts] = []


def active() -> Interrupts | None:
    """The `Interrupts` a command has installed in this process, or None (library use)."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section that the active command's stop waits for (`Interrupts.critical`); nothing without one.

    Library code marks what must not be cut in half: a folder swapped in, a run folder set up."""
    interrupts = active()
    if interrupts is None:
        yield
    else:
        with interrupts.critical():
            yield


@contextlib.contextmanager
def cleanup(callback: Callable[[], object]) -> Iterator[None]:
    """Inside, a stop of the active command runs `callback` first (`Interrupts.on_stop`): remove a
    half-written folder. Nothing without an active command (an exception unwinds as usual there)."""
    interrupts = active()
    if interrupts is None:
        yield
        return
    interrupts.on_stop(callback)
    try:
        yield
    finally:
        interrupts.remove_on_stop(callback)


def remove_folder(path: str | os.PathLike[str], tries: int = 5) -> None:
    """Removes the folder `path` (for `cleanup` callbacks), trying again while the main thread, which
    a stop does not pause, may still be adding a file to it; nothing when it does not exist."""
    for _ in range(tries):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return


def _say(text: str) -> None:
    """`text` and a line end on stderr, written straight to the file descriptor (no locks to wait on)."""
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode("utf-8", "replace"))


class Interrupts:
    """SIGINT and SIGTERM for one command (see the module docstring).

    Attributes:
      signum: the first signal received, or None.
      message: what a stop prints on stderr (a command may change it as it goes).
    """

    def __init__(self, *, message: str = "interrupted", grace: float = STOP_GRACE_SECONDS) -> None:
        self.signum: int | None = None
        self.message = message
        self.grace = grace
        self._on_stop: list[Callable[[], object]] = []
        self._critical = threading.RLock()
        self._deferred: list[str | None] = []  # notes of the deferred() sections in force
        self._repeats_noted = False
        self._installed = False
        self._old: dict[int, object] = {}
        self._old_wakeup = -1
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None

    # --------------------------------------------------------------------------------- installing
    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may install handlers: the process keeps Python's own
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # set_wakeup_fd needs a descriptor that never blocks
        for sig in not_ignored(_STOP_SIGNALS):
            self._old[sig] = signal.signal(sig, _record)
        self._old_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        watcher = threading.Thread(target=self._watch, args=(self._reader,), name="microgpt-signals")
        watcher.daemon = True
        watcher.start()
        self._installed = True
        _active.append(self)
        return self

    def reinstall(self) -> None:
        """Takes SIGINT and SIGTERM back from a library that installed its own handlers below Python's
        (`jax.distributed.initialize`'s preemption notifier catches SIGTERM in C++)."""
        if self._installed:
            for sig in self._old:
                signal.signal(sig, _record)

    def __exit__(self, *exc: object) -> None:
        if not self._installed:
            return
        self._installed = False
        _active.remove(self)
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if self._writer is not None:
            self._writer.close()  # the watcher's read returns b"" and it ends
        if self._reader is not None:
            with contextlib.suppress(OSError):
                self._reader.shutdown(socket.SHUT_RDWR)

    # --------------------------------------------------------------------------------- the command
    def on_stop(self, callback: Callable[[], object]) -> None:
        """Runs `callback` (in the watcher thread, inside the critical lock) when a signal stops the
        process; callbacks run newest first, and one that raises does not keep the others from running."""
        self._on_stop.append(callback)

    def remove_on_stop(self, callback: Callable[[], object]) -> None:
        """Undoes `on_stop(callback)` (under the critical lock, so not while a stop runs it)."""
        with self._critical:
            if callback in self._on_stop:
                self._on_stop.remove(callback)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section a stop waits for (at most `grace` seconds): a file written whole, a line printed."""
        with self._critical:
            yield

    @contextlib.contextmanager
    def deferred(self, note: str | None = None) -> Iterator[Interrupts]:
        """Signals inside only set `signum` (the first one, and `note` on stderr when given); the caller
        polls `signum` and stops at a safe point. Later signals say once that the stop is under way."""
        self._deferred.append(note)
        try:
            yield self
        finally:
            self._deferred.pop()

    # --------------------------------------------------------------------------------- the watcher
    def _watch(self, reader: socket.socket) -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                self._received(signum)

    def _received(self, signum: int) -> None:
        """The watcher's reaction to a signal. Only the first one can stop the process: after a first
        one that a deferred section recorded, the caller is stopping at its safe point, and a second
        one that arrived meanwhile (a terminal's and `uv run`'s) may be read only after the section
        has ended, so where it is read says nothing about when it came."""
        first = self.signum is None
        if first:
            self.signum = signum
        if first and not self._deferred:
            self._stop(signum)
        elif first:
            if self._deferred[-1]:
                _say(f"\n{signal.Signals(signum).name}: {self._deferred[-1]}")
        elif not self._repeats_noted:
            self._repeats_noted = True
            _say(f"{signal.Signals(signum).name} again: already stopping, please wait")

    def _stop(self, signum: int) -> None:
        """Ends the process: critical sections done, `on_stop` callbacks run, `message` printed."""
        code = 128 + signum
        watchdog = threading.Timer(self.grace, os._exit, (code,))
        watchdog.daemon = True
        watchdog.start()  # whatever blocks below (a stuck write, a full pipe), the process ends
        self._critical.acquire()  # released by the exit
        for callback in reversed(self._on_stop):
            with contextlib.suppress(BaseException):
                callback()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        if self.message:
            _say(self.message)
        os._exit(code)


def not_ignored(sigs: tuple[int, ...]) -> list[int]:
    """Those of `sigs` this process does not ignore. A signal ignored from the start stays ignored, as
    Python itself leaves it: a script's ``command &`` (or ``nohup``) starts it with SIGINT ignored, so
    that the Ctrl-C meant for the script's foreground command does not stop it too."""
    return [sig for sig in sigs if signal.getsignal(sig) != signal.SIG_IGN]


def _record(signum: int, frame: object) -> None:
    """The Python-level handler: nothing to do here (the watcher thread has the signal), and above
    all no `KeyboardInterrupt` raised at a random place in the main thread."""
