"""A request to the slot engine, the events it streams back, and the stream that carries them.

`Request` is checked when it is made (core's `sampling.check_sampling` and `check_penalties`, and
the same rules for the other fields), and against the engine's model when it is submitted
(`check_fits`), so a bad request never reaches the device: both raise `SamplingError` (a
ValueError) naming the field.

A `Stream` yields `Token` events, then one final event: `Finished` (reason "stop": the end-of-text
token, which is not yielded; "length": max_new_tokens; "cancelled") or `Failed` (the engine's loop
raised). It is read from a plain thread (`for event in stream`, `stream.get(timeout)`,
`stream.collect(timeout)`) or from asyncio (`async for event in stream`: the engine thread wakes the
waiting task with `loop.call_soon_threadsafe`). `stream.cancel()` (the client is gone) frees the
request's slot at the engine's next step; leaving a `with` / `async with` block cancels too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from microgpt_core.config import is_integer
from microgpt_core.sampling import SamplingError, check_penalties, check_sampling

__all__ = [
    "EngineError",
    "EngineStopped",
    "Event",
    "Failed",
    "Finished",
    "MAX_LOGPROBS",
    "QueueFull",
    "Request",
    "Stream",
    "Token",
    "check_fits",
]

MAX_LOGPROBS = 20  # the most alternatives a request may ask for (OpenAI's top_logprobs limit)


class EngineError(RuntimeError):
    """The engine cannot take or finish a request."""


class QueueFull(EngineError):
    """`max_queue` requests are already waiting for a slot: try again later (HTTP 503)."""


class EngineStopped(EngineError):
    """The engine is stopping or has stopped (after `stop()`, or after its loop failed)."""


@dataclass(frozen=True, kw_only=True)
class Request:
    """One generation: a prompt and how to continue it.

    Attributes:
      prompt: token ids (at least one), each in [0, vocab_size); stored as a tuple.
      max_new_tokens: N >= 1; len(prompt) + N must fit the engine's max_len.
      temperature, top_k, top_p, min_p: as `microgpt_core.sampling.sample_logits` (None: off).
      presence_penalty, frequency_penalty: in [-2, 2], subtracted from a token's logit once if it
        was generated, and once per time it was (OpenAI's penalties; the prompt does not count).
      repetition_penalty: > 0; the logits of tokens in the prompt or generated are divided by it
        when positive, multiplied when negative (Keskar et al. 2019; 1 is off).
      seed: in [0, 2**32); token i is drawn with jax.random.fold_in(jax.random.key(seed), i).
      logprobs: 0..20, how many most likely alternatives each `Token` reports; the chosen token's
        own log-probability is always reported.
      eot_id: the end-of-text id that finishes the request (reason "stop"; it is not yielded), or
        None.
    """

    prompt: Sequence[int]
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int = 0
    logprobs: int = 0
    eot_id: int | None = None

    def __post_init__(self) -> None:
        prompt = self.prompt
        if isinstance(prompt, str | bytes) or not isinstance(prompt, Sequence) or len(prompt) < 1:
            raise SamplingError(f"prompt must be a non-empty sequence of token ids, got {prompt!r:.80}")
        if not all(is_integer(t) and t >= 0 for t in prompt):
            raise SamplingError(f"prompt must hold token ids (integers >= 0), got {prompt!r:.80}")
        object.__setattr__(self, "prompt", tuple(int(t) for t in prompt))
        check_sampling(self.temperature, self.top_k, self.top_p, self.min_p)
        if not is_integer(self.max_new_tokens) or self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        check_penalties(self.presence_penalty, self.frequency_penalty, self.repetition_penalty)
        if not is_integer(self.seed) or not 0 <= self.seed < 2**32:
            raise SamplingError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not is_integer(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise SamplingError(f"logprobs must be an integer in [0, {MAX_LOGPROBS}], got {self.logprobs!r}")
        if self.eot_id is not None and (not is_integer(self.eot_id) or self.eot_id < 0):
            raise SamplingError(f"eot_id must be an integer >= 0 or None, got {self.eot_id!r}")


def check_fits(request: Request, vocab_size: int, max_len: int, widest_prompt: int) -> None:
    """`SamplingError` naming the field unless the request fits the engine's model: its token ids
    and eot_id in [0, vocab_size), its prompt at most `widest_prompt` (the largest bucket) and
    len(prompt) + max_new_tokens at most `max_len`."""
    V, P, N = vocab_size, len(request.prompt), request.max_new_tokens
    if max(request.prompt) >= V:
        raise SamplingError(f"prompt holds token id {max(request.prompt)}, outside [0, {V})")
    if request.eot_id is not None and request.eot_id >= V:
        raise SamplingError(f"eot_id must be in [0, {V}) or None, got {request.eot_id}")
    if P > widest_prompt:
        raise SamplingError(f"prompt has {P} tokens, more than the largest bucket ({widest_prompt})")
    if P + N > max_len:
        raise SamplingError(f"the prompt ({P} tokens) plus max_new_tokens ({N}) exceeds max_len {max_len}")


@dataclass(frozen=True)
class Token:
    """One generated token: its id, its log-probability, and the `logprobs` most likely tokens with
    theirs (best first), all under the model's raw distribution (before penalties, temperature and
    filters)."""

    id: int
    logprob: float
    top_ids: tuple[int, ...] = ()
    top_logprobs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Finished:
    """The last event of a request that ran.

    Attributes:
      reason: "stop" (end-of-text), "length" (max_new_tokens) or "cancelled".
      num_tokens: tokens yielded (the end-of-text token not counted).
      prompt_tokens: the prompt's length.
      queue_time: seconds from submission to the slot.
      time_to_first_token: seconds from submission to the first token (None if none came).
      token_gaps: seconds between consecutive tokens (num_tokens - 1 of them).
    """

    reason: Literal["stop", "length", "cancelled"]
    num_tokens: int
    prompt_tokens: int
    queue_time: float | None = None
    time_to_first_token: float | None = None
    token_gaps: tuple[float, ...] = ()


@dataclass(frozen=True)
class Failed:
    """The last event of a request whose engine failed: `error` is what its loop raised."""

    error: BaseException


Event = Token | Finished | Failed


@dataclass(eq=False)
class Stream:
    """The events of one submitted request, in order (see the module docstring).

    Iterating ends after the final event (`Finished` or `Failed`), which is yielded.
    """

    request: Request
    _wake_engine: Callable[[], None] = field(repr=False)
    submitted: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._events: collections.deque[Event] = collections.deque()
        self._ready = threading.Condition()
        self._cancelled = False
        self._closed = False  # the final event was taken
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None

    # The engine's side ---------------------------------------------------------------------
    def put(self, event: Event) -> None:
        """Called by the engine thread: queue the event and wake whoever waits."""
        with self._ready:
            self._events.append(event)
            self._ready.notify_all()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, future = waiter
            with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody listens
                loop.call_soon_threadsafe(_wake, future)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    # The client's side ---------------------------------------------------------------------
    def cancel(self) -> None:
        """The client is gone: the engine frees the slot at its next step and finishes the stream
        with reason "cancelled" (a no-op once the request has finished)."""
        self._cancelled = True
        self._wake_engine()

    def get(self, timeout: float | None = None) -> Event:
        """The next event, waiting up to `timeout` seconds (None: until it comes).

        Raises:
          TimeoutError: nothing came in time.
          StopIteration: the final event was already taken.
        """
        with self._ready:
            if not self._ready.wait_for(lambda: self._events or self._closed, timeout):
                raise TimeoutError(f"no event from the engine within {timeout} s")
            return self._take()

    def _take(self) -> Event:
        if not self._events:
            raise StopIteration
        event = self._events.popleft()
        self._closed = not isinstance(event, Token)
        return event

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Every event, each awaited up to `timeout` seconds (TimeoutError after that)."""
        while True:
            try:
                event = self.get(timeout)
            except StopIteration:
                return
            yield event
            if not isinstance(event, Token):
                return

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def collect(self, timeout: float | None = None) -> tuple[list[Token], Finished]:
        """All the tokens and the `Finished` event (each event awaited up to `timeout` seconds).

        Raises:
          EngineError: the engine failed (its error is the cause).
        """
        tokens: list[Token] = []
        for event in self.events(timeout):
            if isinstance(event, Failed):
                raise EngineError(f"the engine failed: {event.error!r}") from event.error
            if isinstance(event, Finished):
                return tokens, event
            tokens.append(event)
        raise EngineError("the stream was already read to its end")

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Event:
        loop = asyncio.get_running_loop()
        while True:
            with self._ready:
                if self._events or self._closed:
                    try:
                        return self._take()
                    except StopIteration:
                        raise StopAsyncIteration from None
                future = loop.create_future()
                self._waiter = (loop, future)
            await future

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
