"""How every benchmark here takes its times: one helper, standard library only.

The scripts next to this file import it (they run as `uv run python bench/NAME.py`, so this folder is
on `sys.path`); so does `peer_hf.py` under the peer's own interpreter, which has no microgpt and no
JAX: asynchronous work is waited for by the `sync` the caller passes (`jax.block_until_ready`).

    times = timed(fn, repeats=5, warmup=1, sync=jax.block_until_ready)   # seconds of each timed call
    times.faults_per_call, times.sys_s_per_call   # minor page faults, system seconds (getrusage)
    rate(batch * 256, times)          # {"median": tokens/s at the median call, "best": at the fastest}
    with stopwatch() as watch:        # one-shot: a compile, a cold process
        ...
    watch.seconds
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Stopwatch", "Times", "rate", "stopwatch", "summary", "timed"]


class Times(list):
    """Seconds of each timed call, in order (a plain list to `statistics` and `json`); `result`: what
    the last call returned; `faults_per_call` and `sys_s_per_call`: the process's minor page faults
    and system seconds over the timed calls (`getrusage`), per call."""

    result: Any = None
    faults_per_call: int = 0
    sys_s_per_call: float = 0.0


def timed(
    fn: Callable[[], Any], repeats: int = 1, warmup: int = 0, *, sync: Callable[[Any], Any] | None = None
) -> Times:
    """Calls `fn()` `warmup` times untimed, then `repeats` times timed; `sync(result)`, when given, runs
    inside each timed call (for JAX: ``jax.block_until_ready``, so the figure is the computation's and
    not the dispatch's). Returns the seconds of each timed call, with the last call's result."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    wait = sync or (lambda result: result)
    for _ in range(warmup):
        wait(fn())
    times = Times()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        start = time.perf_counter()
        result = wait(fn())
        times.append(time.perf_counter() - start)
        times.result = result
    after = resource.getrusage(resource.RUSAGE_SELF)
    times.faults_per_call = (after.ru_minflt - before.ru_minflt) // repeats
    times.sys_s_per_call = round((after.ru_stime - before.ru_stime) / repeats, 3)
    return times


class Stopwatch:
    """`seconds`: how long the ``with stopwatch()`` block took (None while it runs)."""

    seconds: float | None = None


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Times one block: ``with stopwatch() as watch: ...``, then ``watch.seconds``."""
    watch = Stopwatch()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - start


def summary(values: list[float], digits: int = 3, best: Callable = min) -> dict[str, float]:
    """{"median", "best"} of `values`, rounded (`best=max` for rates, where more is better)."""
    return {"median": round(statistics.median(values), digits), "best": round(best(values), digits)}


def rate(units: float, times: list[float], digits: int = 1) -> dict[str, float]:
    """`units` per second at the median call and at the fastest: {"median", "best"}."""
    return {
        "median": round(units / statistics.median(times), digits),
        "best": round(units / min(times), digits),
    }
