"""From a parsed `Job` to engine requests, and from each request's `Stream` to the text of a choice.

Choice i of a request (prompts in order, `n` choices each: i = prompt index * n + j) is one engine
`Request` drawn with seed (seed + i) mod 2**32, or from a random seed when the request names none:
the same request with the same seed gives the same choices, alone or under any load.

A choice's text is built token by token by `RowText`, as `generate` does: the text stops before the
first stop string (never sent; text that could still turn out to start one is held back while
streaming), and then the engine stream is cancelled, which frees its slot at the next step.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from microgpt_core.sampling import SamplingError
from microgpt_data.errors import InvalidTextError
from microgpt_data.tokenizer import Tokenizer
from microgpt_infer.engine import Engine, QueueFull, Request, Stream
from microgpt_infer.engine.requests import EngineError, EngineStopped, Failed, Finished, Token, check_fits
from microgpt_infer.row_text import RowText
from microgpt_infer.server.metrics import Metrics
from microgpt_infer.server.schema import Job, RequestError, param_of

__all__ = ["Choice", "Piece", "encode_prompts", "pieces", "submit", "too_long"]

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions
RETRY_AFTER_S = "1"


@dataclass(eq=False)
class Choice:
    """One submitted choice: its index, engine stream, prompt and what it has produced so far."""

    index: int
    stream: Stream
    prompt: list[int]
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)


@dataclass(frozen=True)
class Piece:
    """Text that became final, the tokens it came with, and the finish reason on the last piece."""

    text: str
    tokens: list[Token]
    finish_reason: str | None = None


def encode_prompts(
    tokenizer: Tokenizer, prompts: list[str | list[int]], *, allow_special: bool
) -> list[list[int]]:
    """Token ids of each prompt (lists of ids pass through); an empty prompt is the end-of-text token."""
    ids = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, list):
            ids.append(prompt)
            continue
        try:
            row = tokenizer.encode(prompt, allow_special=allow_special)
        except InvalidTextError as e:
            which = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
            raise RequestError(f"{which}: {e}", "prompt") from None
        ids.append(row or [tokenizer.eot_id])
    return ids


def submit(
    engine: Engine,
    job: Job,
    prompts: list[list[int]],
    *,
    eot_id: int | None,
    max_tokens_limit: int,
    chat: bool,
) -> list[Choice]:
    """Checks every choice's `Request`, then submits them all (none if any is refused).

    Raises:
      RequestError: 400 naming the field; 503 with Retry-After when the engine's queue is full.
    """
    prompt_param = "messages" if chat else "prompt"
    limit = max_tokens_limit
    if job.max_tokens is not None and job.max_tokens > limit:
        raise RequestError(f"max_tokens must be at most {limit}, got {job.max_tokens}", "max_tokens")
    base = secrets.randbelow(2**32) if job.seed is None else job.seed
    requests = []
    for p, ids in enumerate(prompts):
        room = engine.max_len - len(ids)
        wanted = job.max_tokens or (min(limit, room) if chat else min(limit, DEFAULT_COMPLETION_TOKENS))
        if room < 1 or len(ids) > engine.prompt_buckets[-1]:
            raise too_long(prompt_param, len(ids), engine.max_len)
        if wanted > room:
            raise RequestError(
                f"the {prompt_param} ({len(ids)} tokens) plus max_tokens ({wanted}) exceeds the model's "
                f"context of {engine.max_len} tokens", prompt_param, code="context_length_exceeded",
            )  # fmt: skip
        for j in range(job.n):
            index = p * job.n + j
            try:
                request = Request(
                    prompt=ids, max_new_tokens=wanted, seed=(base + index) % 2**32,
                    logprobs=job.logprobs or 0, eot_id=eot_id, **job.sampling,
                )  # fmt: skip
                check_fits(request, engine.config.vocab_size, engine.max_len, engine.prompt_buckets[-1])
            except SamplingError as e:
                param = param_of(str(e), chat)
                raise RequestError(str(e), prompt_param if param == "prompt" else param) from None
            requests.append((index, request))
    choices: list[Choice] = []
    try:
        for index, request in requests:
            choices.append(Choice(index, engine.submit(request), list(request.prompt)))
    except SamplingError as e:
        cancel(choices)
        raise RequestError(str(e), param_of(str(e), chat)) from None
    except QueueFull as e:
        cancel(choices)
        raise RequestError(
            f"the server is busy: {e}", None, status=503, code="queue_full", type="server_error",
            headers={"Retry-After": RETRY_AFTER_S},
        ) from None  # fmt: skip
    except EngineStopped as e:
        cancel(choices)
        raise RequestError(f"the server is stopping: {e}", None, status=503, type="server_error") from None
    return choices


def too_long(prompt_param: str, tokens: int, context: int) -> RequestError:
    """The 400 for a prompt of `tokens` tokens that the model's `context` cannot take."""
    return RequestError(
        f"the {prompt_param} has {tokens} tokens; the model's context is {context}", prompt_param,
        code="context_length_exceeded",
    )  # fmt: skip


def cancel(choices: list[Choice]) -> None:
    for choice in choices:
        choice.stream.cancel()


async def pieces(
    choice: Choice, tokenizer: Tokenizer, stops: tuple[str, ...], metrics: Metrics
) -> AsyncIterator[Piece]:
    """The choice's text as it becomes final; the last piece carries the finish reason.

    Tokens whose text is held back ride with the next piece. Also fills `choice.text`,
    `choice.tokens` and `choice.finish_reason`.
    """
    row = RowText(tokenizer, stops)
    pending: list[Token] = []
    async for event in choice.stream:
        if isinstance(event, Token):
            if row.done:  # a stop string was found; the cancelled request may still send a token
                continue
            text = row.push(event.id)
            choice.tokens.append(event)
            pending.append(event)
            if row.done:
                choice.stream.cancel()
                choice.finish_reason = "stop"
                choice.text += text
                yield Piece(text, pending, "stop")
                pending = []
            elif text:
                choice.text += text
                yield Piece(text, pending)
                pending = []
        elif isinstance(event, Finished):
            metrics.finished(event)
            if choice.finish_reason is None:
                choice.finish_reason = "length" if event.reason == "length" else "stop"
                tail = row.finish()
                choice.text += tail
                yield Piece(tail, pending, choice.finish_reason)
        elif isinstance(event, Failed):
            raise EngineError(f"the engine failed: {event.error!r}") from event.error
