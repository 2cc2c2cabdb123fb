"""Streaming: a compiled loop hands each step's values to a Python callback in the calling thread.

A compiled program cannot call arbitrary Python safely: an exception raised inside a JAX host
callback reaches the caller as an opaque ``XlaRuntimeError``, a callback that starts another
computation can deadlock, and Ctrl-C waits for the whole program. So the callback never runs inside
the program. Instead:

    caller thread                        worker thread              the compiled loop, step s
    -------------                        -------------              -------------------------
    stream(program, on_step):
      start the worker  ───────────────> program(stream_id)  ─────> halt = emit(stream_id, s, values)
      queue.get()  <──────────────────────────────────────────────  (host_step: queue.put; return halt)
      on_step(s, values) -> True?  ─ sets the stream's halt flag ─>  the loop condition reads halt
      ...                                result -> queue

- `emit(stream_id, step, values)` (inside the program) is an `io_callback` to `_host_step`, which
  puts ``(step, values)`` on the stream's queue and returns the stream's halt flag without waiting
  for the consumer. The loop stops at the first step that reads the flag set, so a stop, an
  exception or a Ctrl-C in the caller ends the device loop within a step or two.
- `stream_id` is a traced int32 argument that `_host_step` looks up in a registry of live streams:
  the compiled program is the same for every callback function (it compiles once per shapes and
  settings, not once per callback).
- `stream` calls `on_step` in the calling thread, in step order, and returns the program's result
  with the step at which `on_step` returned True (None if it never did). Steps the device ran after
  that step are not delivered. An exception from `on_step` (KeyboardInterrupt included, and one
  arriving while the caller waits) halts the program, waits for the worker to finish, and is
  re-raised as itself. Calling `stream` from inside `on_step` works: each call has its own stream.
- `wait(tree)` waits for the arrays of a program dispatched without streaming (asynchronously, as
  JAX does), polling `is_ready()`, so that Ctrl-C interrupts the wait at once. Nothing can halt such
  a program: it finishes in the background, in XLA's threads. (Waiting in a Python thread instead,
  with `block_until_ready`, aborts the process if the interpreter exits while that thread waits.)

`stream` always waits for its worker before it returns or raises, for the same reason: a daemon
thread still inside XLA when the interpreter exits aborts the process.

On CPU a program with host callbacks runs to its end in the thread that dispatched it, which is why
the program runs in a worker thread and the caller drains a queue.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

__all__ = ["emit", "stream", "wait"]

T = TypeVar("T")

# How often the caller wakes to hand the steps that arrived to the callback (and at once when the
# program ends): the device loop never waits for the callback.
POLL_SECONDS = 0.01
# `wait` sleeps between polls from WAIT_FIRST_S up to WAIT_MAX_S (x1.5 each time): it returns at most
# about 1 ms (or half the time waited so far) after the arrays are ready.
WAIT_FIRST_S, WAIT_MAX_S = 5e-5, 1e-3


class _Stream:
    """One live stream: the queue its program fills and the flag that halts it."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self.halt = False
        self.finished = threading.Event()


_STREAMS: dict[int, _Stream] = {}
_IDS = itertools.count(1)
_LOCK = threading.Lock()


def _host_step(packed: jax.Array) -> np.ndarray:
    """Runs on the host for each step of a streaming program: enqueue, return the halt flag.

    `packed` is [stream id, step, *values]: one operand, read into numpy once (a host callback gets
    `jax.Array`s, and indexing one is a dispatch of its own: 30 us, against 1 us for numpy).
    """
    ids = np.array(packed)  # (2 + n,) a copy: the buffer is only lent for the call
    live = _STREAMS.get(int(ids[0]))
    if live is None:  # the caller is gone: stop the program
        return np.bool_(True)
    live.queue.put(("step", int(ids[1]), ids[2:]))
    return np.bool_(live.halt)


def emit(stream_id: jax.Array, step: jax.Array, values: jax.Array) -> jax.Array:
    """Inside a compiled program: sends (step, values) to the stream's caller; returns halt ().

    Args:
      stream_id: () int32, the traced id `stream` passes to the program.
      step: () int, the loop's step.
      values: (n,) integers (a step's tokens), sent as int32.
    Returns:
      () bool: True once the caller asked the program to stop.
    """
    packed = jnp.concatenate([jnp.stack([stream_id, step]).astype(jnp.int32), values.astype(jnp.int32)])
    return io_callback(_host_step, jax.ShapeDtypeStruct((), jnp.bool_), packed)


def _start(work: Callable[[], Any], live: _Stream) -> threading.Thread:
    """A daemon thread running `work()` to completion; its result or exception goes on the queue."""

    def run() -> None:
        try:
            live.queue.put(("done", jax.block_until_ready(work()), None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which re-raises it
            live.queue.put(("error", e, None))
        live.finished.set()

    thread = threading.Thread(target=run, name="microgpt-stream", daemon=True)
    thread.start()
    return thread


def stream(
    program: Callable[[jax.Array], T], on_step: Callable[[int, np.ndarray], Any]
) -> tuple[T, int | None]:
    """Runs `program(stream_id)` in a worker thread, calling `on_step(step, values)` here, in order.

    Args:
      program: calls a compiled program that uses `emit(stream_id, ...)` in each step of its loop.
      on_step: called in the calling thread with each step's (int, numpy array); returning True
        (exactly True, or numpy's True) halts the program after that step.
    Returns:
      (the program's result, the step at which `on_step` returned True, or None).
    Raises:
      Whatever `on_step` or the program raised, as itself, after the program has stopped.
    """
    live = _Stream()
    with _LOCK:
        stream_id = next(_IDS) % 2**31
        _STREAMS[stream_id] = live
    thread = None
    stopped: int | None = None
    try:
        thread = _start(lambda: program(jnp.int32(stream_id)), live)
        while True:
            live.finished.wait(POLL_SECONDS)  # woken at the end, else every POLL_SECONDS
            for kind, value, values in _drain(live.queue):
                if kind == "step":
                    if stopped is None and _is_true(on_step(value, values)):
                        stopped, live.halt = value, True
                elif kind == "error":
                    raise value
                else:
                    return value, stopped
    finally:
        live.halt = True
        try:
            if thread is not None:
                thread.join()  # within a step or two: the program reads the halt flag every step
        finally:
            with _LOCK:
                del _STREAMS[stream_id]


def _drain(q: queue.SimpleQueue) -> list:
    """Everything on `q` now, in order, without waiting."""
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def _is_true(result: object) -> bool:
    """Only True itself halts: not the int `file.write` returns, nor any other truthy value."""
    return result is True or result is np.True_


def wait(tree: T) -> T:
    """`tree` once every array in it is ready; the wait can be interrupted by Ctrl-C.

    Args:
      tree: a pytree of `jax.Array`s, e.g. what a jitted program returned (dispatched asynchronously).
    Returns:
      `tree`.
    Raises:
      KeyboardInterrupt: at once on Ctrl-C; the computation finishes in the background.
    """
    pause = WAIT_FIRST_S
    for leaf in jax.tree_util.tree_leaves(tree):
        while hasattr(leaf, "is_ready") and not leaf.is_ready():
            time.sleep(pause)
            pause = min(pause * 1.5, WAIT_MAX_S)
    return tree
