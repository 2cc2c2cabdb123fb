"""Continuous batching over fixed decode slots: the engine a server runs (as JetStream does in JAX).

    submit(request) ─> queue (at most max_queue, else QueueFull) ─┐
                                                                   v
    engine thread, forever:  admit queued requests into free slots: one prefill for up to k of
                             them of one prompt bucket width, into their slots' rows of the
                             caches (slots.admit), which also samples each one's first token
                             ONE compiled decode step advances every busy slot (slots.step),
                             started before the previous step's tokens are handed out, so the
                             device computes while the host delivers
                             hand each busy slot's token to its Stream; free the slots whose
                             request finished (end-of-text, max_new_tokens) or was cancelled

**Fixed shapes.** The device state is N slots of `max_len` positions (`slots.Slots`): per-layer
caches (N, Hkv, max_len, Dh), each slot's position, step index, key and settings as (N,) arrays,
and the penalties' token counts and prompt masks as (N, V). A prompt is right-padded to the smallest
of `prompt_buckets` (powers of two) that holds it, so `admit` compiles once per batch size k of
`admissions` and bucket. A step runs
the first w slots over their first W cache positions, the smallest (w, W) of `widths` x `windows`
that holds every busy slot (requests take the lowest free slot), so one client does not pay for 16
slots of 256 positions; `step` compiles once per shape. `warmup()` compiles them all, and after it
nothing compiles, whatever the load.

**A request's text does not depend on the load.** Token i of a request is drawn with the key
fold_in(key(seed), i) of that row alone, with that row's settings, counts and prompt mask; its
prefill runs alone (batch 1); and in the decode step every row computes from its own inputs. A
narrower step must also give a row the same numbers as the full one: `warmup()` keeps only the
shapes that do, bit for bit, on this machine (`shapes.same_rows`); until it runs, and on a machine
where none do, every step is full. So the same request gives the same tokens alone or among 15
others, in any slot (tests/infer/test_batching.py). These
sampled tokens differ from `microgpt_core.sampling.generate_tokens`, which draws a whole batch
from one key per step (a row's draw there depends on the batch); greedy tokens equal its.

Cancelling a stream frees its slot at the next step. `stop(timeout)` refuses new requests, cancels
the queued ones, lets the running ones finish until the timeout, cancels the rest and joins the
thread. If the loop raises, every open stream gets a `Failed` event, `error` holds the exception,
and `submit` raises `EngineStopped`. The engine holds the parameters twice, their matrices in the
compute dtype (`decode.cast_matrices`, the same numbers for every matmul): whole, for the reference
prefill, and sliced per layer (`decode.decode_weights`), for the step.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

import jax
import numpy as np

from microgpt_core.config import GPTConfig, is_integer
from microgpt_core.params import Params
from microgpt_infer.engine import shapes
from microgpt_infer.engine import slots as device
from microgpt_infer.engine.requests import (
    MAX_LOGPROBS,
    EngineError,
    EngineStopped,
    Failed,
    Finished,
    QueueFull,
    Request,
    Stream,
    Token,
    check_fits,
)

__all__ = [
    "Engine",
    "EngineMetrics",
    "default_admissions",
    "default_buckets",
    "default_widths",
    "default_windows",
]

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.1  # an idle loop wakes this often to notice the interpreter exiting


def default_buckets(max_len: int) -> tuple[int, ...]:
    """Powers of two from 16 up to max_len, and max_len itself."""
    return _doubling(16, max_len)


def default_widths(slots: int) -> tuple[int, ...]:
    """Step widths: powers of two from 2 up to `slots`, and `slots` itself (1 only when it is 1: a
    one-row step rounds differently, see shapes.py)."""
    return _doubling(2, slots)


def _doubling(start: int, top: int) -> tuple[int, ...]:
    """start, 2 start, 4 start, ... below `top`, then `top`."""
    sizes, size = [], start
    while size < top:
        sizes.append(size)
        size *= 2
    return (*sizes, top)


def default_admissions(slots: int) -> tuple[int, ...]:
    """Admission batch sizes: 1, 4, 8 and 16, those that fit `slots`."""
    return tuple(k for k in (1, 4, 8, 16) if k <= slots)


def default_windows(max_len: int) -> tuple[int, ...]:
    """Attention windows: a quarter, a half and all of `max_len`."""
    return tuple(sorted({w for w in (max_len // 4, max_len // 2, max_len) if w >= 1}))


@dataclass(frozen=True)
class EngineMetrics:
    """Counters at one moment: requests in slots and waiting, submitted and refused since the
    start, tokens generated since the start."""

    running: int
    queued: int
    total_requests: int
    rejected_requests: int
    total_tokens: int


@dataclass(eq=False)
class _Running:
    """A request in a slot, as the engine thread sees it."""

    stream: Stream
    admitted: float
    position: int  # where the slot's next fed token sits: its step attends positions < this
    dispatched: int = 1  # tokens asked of the device so far (token 0 by the admission)
    num_tokens: int = 0
    first: float | None = None
    last: float | None = None
    gaps: list[float] | None = None


class Engine:
    """Continuous batching over `slots` decode slots of `max_len` positions (module docstring).

    Args:
      params, config: the model.
      slots: N, how many requests decode together.
      max_len: positions per slot (default and at most config.context_length); a request needs
        len(prompt) + max_new_tokens <= max_len.
      max_queue: how many requests may wait for a slot before `submit` raises `QueueFull`.
      prompt_buckets: prompt widths, one prefill compilation each (default `default_buckets`);
        a prompt longer than the largest is refused.
      widths, windows: the step shapes to try (defaults `default_widths`, `default_windows`); the
        full one, (slots, max_len), is always among them.
      admissions: how many requests one prefill may admit together (default `default_admissions`;
        1 is always among them).
    """

    def __init__(
        self,
        params: Params,
        config: GPTConfig,
        *,
        slots: int = 8,
        max_len: int | None = None,
        max_queue: int = 64,
        prompt_buckets: tuple[int, ...] | None = None,
        widths: tuple[int, ...] | None = None,
        windows: tuple[int, ...] | None = None,
        admissions: tuple[int, ...] | None = None,
    ) -> None:
        max_len = config.context_length if max_len is None else max_len
        for name, value, lo, hi in (
            ("slots", slots, 1, None),
            ("max_len", max_len, 2, config.context_length),
            ("max_queue", max_queue, 0, None),
        ):
            if not is_integer(value) or value < lo or (hi is not None and value > hi):
                raise ValueError(f"{name} must be an integer in [{lo}, {hi or 'inf'}], got {value!r}")
        buckets = default_buckets(max_len) if prompt_buckets is None else tuple(prompt_buckets)
        if not buckets or not all(is_integer(b) and 1 <= b <= max_len for b in buckets):
            raise ValueError(f"prompt_buckets must be integers in [1, max_len={max_len}], got {buckets!r}")
        self.config, self.slots, self.max_len, self.max_queue = config, int(slots), int(max_len), max_queue
        self.prompt_buckets = tuple(sorted(set(int(b) for b in buckets)))
        widths = default_widths(self.slots) if widths is None else tuple(widths)
        windows = default_windows(self.max_len) if windows is None else tuple(windows)
        admissions = default_admissions(self.slots) if admissions is None else tuple(admissions)
        limits = (("widths", widths, self.slots), ("windows", windows, self.max_len))
        for name, sizes, top in (*limits, ("admissions", admissions, self.slots)):
            if not sizes or not all(is_integer(n) and 1 <= n <= top for n in sizes):
                raise ValueError(f"{name} must be integers in [1, {top}], got {sizes!r}")
        shapes = {(int(w), int(W)) for w in (*widths, self.slots) for W in (*windows, self.max_len)}
        self.step_shapes = tuple(sorted(shapes, key=lambda shape: (shape[0] * shape[1], shape)))
        self.verified_shapes: tuple[tuple[int, int], ...] = ((self.slots, self.max_len),)
        self.admission_shapes = tuple(
            (k, P) for k in sorted({1, *map(int, admissions)}) for P in self.prompt_buckets
        )
        self.verified_admissions = tuple((1, P) for P in self.prompt_buckets)
        self.top_k = min(MAX_LOGPROBS, config.vocab_size)  # alternatives computed every step
        self.programs = device.programs(config)
        device_0 = jax.devices()[0]  # committed, like every program output: one signature per program
        self._params = self.programs.cast(jax.device_put(params, device_0), config=config)
        self._weights = self.programs.weights(self._params, config=config)
        self._state = jax.device_put(device.init_slots(config, self.slots, self.max_len), device_0)
        self.error: BaseException | None = None
        self._queue: collections.deque[Stream] = collections.deque()
        self._running: list[_Running | None] = [None] * self.slots
        self._lock = threading.Condition()  # guards the queue, the counters and the stop flags
        self._device = threading.Lock()  # one caller of the programs at a time (warmup, the loop)
        self._stopping, self._deadline = False, float("inf")
        self._total, self._rejected, self._tokens = 0, 0, 0
        self._pending: tuple[device.Draw, list[tuple[int, _Running]]] | None = None  # a step in flight
        self._thread = threading.Thread(target=self._run, name="microgpt-engine")
        self._thread.start()

    # ---------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Stream:
        """Queues a request; its `Stream` yields its tokens as the engine makes them.

        Raises:
          SamplingError: the request does not fit this model (a token id, eot_id, the length).
          QueueFull: `max_queue` requests are already waiting.
          EngineStopped: after `stop()`, or after the loop failed.
        """
        if not isinstance(request, Request):
            raise TypeError(f"submit takes a Request, got {type(request).__name__}")
        check_fits(request, self.config.vocab_size, self.max_len, self.prompt_buckets[-1])
        stream = Stream(request, self._wake)
        with self._lock:
            if self._stopping:
                why = "the engine is stopping" if self.error is None else "the engine failed"
                raise EngineStopped(why) from self.error
            if len(self._queue) >= self.max_queue:
                self._rejected += 1
                raise QueueFull(f"{len(self._queue)} requests are waiting for a slot (max_queue)")
            self._queue.append(stream)
            self._total += 1
            self._lock.notify_all()
        return stream

    def metrics(self) -> EngineMetrics:
        with self._lock:
            running = sum(r is not None for r in self._running)
            return EngineMetrics(running, len(self._queue), self._total, self._rejected, self._tokens)

    def warmup(self) -> None:
        """Compiles every program (the prefill at each batch and bucket, the step at each shape)
        before any request: after this, nothing compiles. It also keeps the shapes that give a
        request the numbers it gets alone and in the full step on this machine
        (`verified_admissions`, `verified_shapes`); before it, requests are admitted one at a time
        and every step is full. Call it before submitting (it uses the first slots)."""
        with self._device:
            if any(r is not None for r in self._running):
                raise EngineError("warmup() runs before any request is submitted")
            admissions = shapes.same_admissions(
                self.programs, self._params, self.admission_shapes, config=self.config, top_k=self.top_k,
                slots=self.slots, max_len=self.max_len,
            )  # fmt: skip
            for k, width in admissions:  # every program signature the loop can call
                dummy = [(slot, Request(prompt=[0] * width, max_new_tokens=1)) for slot in range(k)]
                jax.block_until_ready(self._admit(dummy, width, k))
            self.verified_admissions = tuple(admissions)
            log.info("admission shapes (requests, prompt width) kept: %s", admissions)
            jax.block_until_ready(self._step(self.slots, self.max_len))
            verified = shapes.same_rows(
                self.programs, self._params, self._weights, self.step_shapes, config=self.config,
                top_k=self.top_k, slots=self.slots, max_len=self.max_len,
            )  # fmt: skip
            for width, window in verified:  # every program signature the loop can call
                jax.block_until_ready(self._step(width, window))
            full = (self.slots, self.max_len)  # always kept: the step every machine can take
            self.verified_shapes = tuple(verified) if full in verified else (*verified, full)
            log.info("decode step shapes (slots, positions) kept: %s", verified)

    def stop(self, timeout: float = 30.0) -> bool:
        """Refuses new requests, cancels the queued ones, lets the running ones finish for up to
        `timeout` seconds, then cancels the rest and joins the loop. True once the thread is gone."""
        with self._lock:
            self._stopping = True
            self._deadline = min(self._deadline, time.monotonic() + timeout)
            queued, self._queue = list(self._queue), collections.deque()
            self._lock.notify_all()
        for stream in queued:
            stream.put(Finished("cancelled", 0, len(stream.request.prompt)))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout + 10.0)  # a step in flight ends first
        return not self._thread.is_alive()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    # The engine thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._next_round():
                pass
        except BaseException as error:  # noqa: BLE001 - every client hears of it, then the engine stops
            self._fail(error)

    def _next_round(self) -> bool:
        """One round: cancellations, admissions, one step. False when the loop should end."""
        with self._lock:
            while not self._stopping and not self._queue and not any(self._running):
                self._lock.wait(IDLE_WAIT_S)
                if not threading.main_thread().is_alive():  # the interpreter is exiting
                    self._stopping, self._deadline = True, 0.0
            queued = [s for s in self._queue if s.cancelled]
            for stream in queued:
                self._queue.remove(stream)
        for stream in queued:
            stream.put(Finished("cancelled", 0, len(stream.request.prompt)))
        late = time.monotonic() >= self._deadline
        for slot, running in enumerate(self._running):
            if running is not None and (late or running.stream.cancelled):
                self._finish(slot, "cancelled")
        if self._stopping and not any(self._running):
            return False
        with self._device:
            self._admit_queued()
            pending, self._pending = self._pending, self._dispatch()
            if pending is not None:  # the previous step's tokens, handed out while this one runs
                draw, stepped = jax.device_get(pending[0]), pending[1]
                for slot, running in stepped:
                    if self._running[slot] is running:  # not finished or cancelled meanwhile
                        self._deliver(slot, draw, slot)
        return True

    def _dispatch(self) -> tuple[device.Draw, list[tuple[int, _Running]]] | None:
        """Starts one step of the slots that need another token (asynchronously: the device runs it
        while the loop hands out the previous step's tokens). A request that turns out to have
        ended (end-of-text) in the previous step is stepped once for nothing; its row is dropped."""
        stepped = [
            (slot, r) for slot, r in enumerate(self._running)
            if r is not None and r.dispatched < r.stream.request.max_new_tokens
        ]  # fmt: skip
        if not stepped:
            return None
        width, window = self._shape(stepped[-1][0] + 1, max(r.position for _, r in stepped))
        draw = self._step(width, window)
        for _, running in stepped:
            running.position, running.dispatched = running.position + 1, running.dispatched + 1
        return draw, stepped

    def _shape(self, rows: int, position: int) -> tuple[int, int]:
        """The cheapest kept step shape that steps `rows` slots whose positions are <= `position`."""
        return next(s for s in self.verified_shapes if s[0] >= rows and s[1] >= position)

    def _pop(self) -> Stream | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _admit_queued(self) -> None:
        """Admits queued requests into the free slots, in batches of prompts of one bucket width,
        and delivers their first tokens (a request that ends there frees its slot for the next)."""
        while True:
            pairs = []
            for slot in (s for s in range(self.slots) if self._running[s] is None):
                if (stream := self._pop()) is None:
                    break
                pairs.append((slot, stream))
            if not pairs:
                return
            while pairs:
                width = self._bucket(pairs[0][1].request)
                same = [pair for pair in pairs if self._bucket(pair[1].request) == width]
                sizes = sorted(k for k, P in self.verified_admissions if P == width)
                batch = same[: sizes[-1]]
                self._start(batch, width, next(k for k in sizes if k >= len(batch)))
                taken = {slot for slot, _ in batch}
                pairs = [pair for pair in pairs if pair[0] not in taken]

    def _bucket(self, request: Request) -> int:
        """The prompt width P the request's prompt is padded to: the smallest bucket that holds it.
        (A request is always admitted at its own width: a prefill's numbers may depend on P.)"""
        return next(b for b in self.prompt_buckets if b >= len(request.prompt))

    def _start(self, batch: list[tuple[int, Stream]], width: int, k: int) -> None:
        """Admits the requests into their free slots and delivers their first tokens."""
        now = time.monotonic()
        for slot, stream in batch:
            position = len(stream.request.prompt)  # token 0 is fed at the next step, after the prompt
            self._running[slot] = _Running(stream, admitted=now, position=position, gaps=[])
        draw = jax.device_get(self._admit([(slot, s.request) for slot, s in batch], width, k))
        for row, (slot, _) in enumerate(batch):
            self._deliver(slot, draw, row)

    def _admit(self, batch: list[tuple[int, Request]], width: int, k: int) -> device.Draw:
        """Runs `admit` for the (slot, request) pairs at prompt width P = `width`, in a batch of k
        (rows past the requests are padding, for slot N, which the program drops)."""
        rows = np.full((k,), self.slots, np.int32)
        prompts, lengths = np.zeros((k, width), np.int32), np.ones((k,), np.int32)
        seeds = np.zeros((k,), np.uint32)
        values = {name: np.full((k,), neutral) for name, neutral in device.NEUTRAL._asdict().items()}
        for row, (slot, r) in enumerate(batch):
            P = len(r.prompt)
            rows[row], prompts[row, :P], lengths[row], seeds[row] = slot, r.prompt, P, r.seed
            for name, value in (
                ("temperature", r.temperature), ("top_k", r.top_k or 0),
                ("top_p", 1.0 if r.top_p is None else r.top_p), ("min_p", r.min_p or 0.0),
                ("presence", r.presence_penalty), ("frequency", r.frequency_penalty),
                ("repetition", r.repetition_penalty),
            ):  # fmt: skip
                values[name][row] = value
        self._state, draw = self.programs.admit(
            self._params, self._state, rows, prompts, lengths, seeds, device.Settings(**values),
            config=self.config, top_k=self.top_k,
        )  # fmt: skip
        return draw

    def _step(self, width: int, window: int) -> device.Draw:
        self._state, draw = self.programs.step(
            self._params, self._weights, self._state, config=self.config, top_k=self.top_k,
            width=width, window=window,
        )  # fmt: skip
        return draw

    def _deliver(self, slot: int, draw: device.Draw, row: int) -> None:
        """Hands row `row` of the draw to the request in `slot`; frees the slot if it is done."""
        running = self._running[slot]
        request, token, now = running.stream.request, int(draw.tokens[row]), time.monotonic()
        if request.eot_id is not None and token == request.eot_id:
            return self._finish(slot, "stop")
        k = request.logprobs
        top_ids, top_logprobs = draw.top_ids[row, :k].tolist(), draw.top_logprobs[row, :k].tolist()
        running.stream.put(Token(token, float(draw.logprobs[row]), tuple(top_ids), tuple(top_logprobs)))
        if running.last is not None:
            running.gaps.append(now - running.last)
        running.first = now if running.first is None else running.first
        running.last, running.num_tokens = now, running.num_tokens + 1
        with self._lock:
            self._tokens += 1
        if running.num_tokens == request.max_new_tokens:
            self._finish(slot, "length")

    def _finish(self, slot: int, reason: str) -> None:
        running, self._running[slot] = self._running[slot], None
        stream = running.stream
        first = None if running.first is None else running.first - stream.submitted
        stream.put(
            Finished(
                reason, running.num_tokens, len(stream.request.prompt), running.admitted - stream.submitted,
                first, tuple(running.gaps),
            )
        )  # fmt: skip

    def _fail(self, error: BaseException) -> None:
        """The loop raised: record it, stop, and end every open stream with `Failed`."""
        log.error("the batching engine failed: %r", error, exc_info=error)
        with self._lock:
            self.error, self._stopping = error, True
            streams = [r.stream for r in self._running if r is not None] + list(self._queue)
            self._running, self._queue = [None] * self.slots, collections.deque()
        for stream in streams:
            stream.put(Failed(error))
