"""Text in, text out: `generate` (batched, streaming, stop strings) and `generate_text`.

Both sit on the engine's `generate_tokens` (engine/), which runs a whole generation (prefill plus a
`while_loop` of cached decode steps) as ONE compiled program per (batch, prompt width,
max_new_tokens, sampling settings). Prompts are right-padded to a bucket width (a power of two, at
least 16, at most the context), so prompts of nearby lengths share a compiled program.

Text is decoded per row, token by token, through an incremental UTF-8 decoder (`row_text.py`): a
character split across tokens is emitted once complete, and the text streamed to `on_token` is
exactly the text returned. A row ends at the end-of-text token (not included), at the first stop string (not
included), or after `max_new_tokens`. Stop strings are found on the host, step by step while the
compiled loop runs (`generate_tokens(on_token=...)`, engine/streaming.py): once every row has ended,
the loop is told to stop; Ctrl-C (KeyboardInterrupt) or an exception raised by `on_token` stops it
within a step or two and reaches the caller as itself. Without `on_token` and stop strings the loop
runs without host round trips (the fastest program, and one JAX's persistent compilation cache can
keep); its wait is interruptible (`streaming.wait`): Ctrl-C raises KeyboardInterrupt at once while
the abandoned loop finishes in the background.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from microgpt_core import SamplingError
from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from microgpt_core.config import is_integer
from microgpt_core.sampling import check_penalties, check_rng, check_sampling
from microgpt_data.errors import InvalidTextError
from microgpt_infer.compile_cache import enable_compilation_cache
from microgpt_infer.engine import generate_tokens, streaming
from microgpt_infer.errors import InferError, PromptTooLongError
from microgpt_infer.folder import Model
from microgpt_infer.model import DEFAULT_MODEL_DIR, find_default_model, is_default, load_model
from microgpt_infer.row_text import RowText, check_stops

__all__ = ["generate", "generate_chat", "generate_text", "bucket_width", "check_seed", "SEED_RANGE"]

MIN_WIDTH = 16


def bucket_width(length: int, limit: int) -> int:
    """The padded prompt width: the next power of two >= max(length, 16), capped at `limit`."""
    width = MIN_WIDTH
    while width < length:
        width *= 2
    return max(min(width, limit), length)


# ------------------------------------------------------------------------------------------------
# Arguments, all checked before anything is encoded or compiled.
SEED_RANGE = (0, 2**32 - 1)  # distinct keys: without x64, jax.random.key keeps a seed's low 32 bits


def check_seed(seed: object, name: str = "rng") -> int:
    """`seed` as an int in `SEED_RANGE` (numpy integers too), or `InferError` naming `name`."""
    lo, hi = SEED_RANGE
    if not is_integer(seed) or not lo <= seed <= hi:
        raise InferError(
            f"{name} must be an integer seed in [{lo}, {hi}] (2**32 - 1; JAX keeps 32 bits of a seed, so "
            f"larger or negative seeds would repeat smaller ones), got {seed!r}"
        )
    return int(seed)


def _as_key(rng: object) -> jax.Array:
    """A typed key from a key (typed or legacy `PRNGKey`), an int seed, or None (a fresh seed)."""
    if rng is None:
        return jax.random.key(secrets.randbits(32))
    if is_integer(rng):
        return jax.random.key(check_seed(rng))
    try:
        return check_rng(rng)
    except SamplingError as e:
        raise InferError(f"{e}; or an integer seed in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], or None") from None


def _prompt_list(prompts: object) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, list | tuple):
        raise InferError(f"prompts must be a str or a list of str, got {type(prompts).__name__}")
    if not prompts:
        raise InferError("prompts is an empty list; pass a str or a list of at least one str")
    for i, text in enumerate(prompts):
        if not isinstance(text, str):
            raise InferError(f"prompts[{i}] must be a str, got {type(text).__name__}")
    return list(prompts)


def _encode(model: Model, texts: list[str], single: bool, special: bool) -> list[list[int]]:
    """Token ids of each prompt; `InvalidTextError` (lone surrogates) names the prompt."""
    tokenizer = model.tokenizer
    try:
        if len(texts) > 1:
            return tokenizer.encode_batch(texts, allow_special=special)
        return [tokenizer.encode(texts[0], allow_special=special)]
    except InvalidTextError:
        for i, text in enumerate(texts):
            try:
                tokenizer.encode(text)
            except InvalidTextError as e:
                which = "the prompt" if single else f"prompts[{i}]"
                raise InvalidTextError(f"{which}: {e}") from None
        raise


def generate(
    model: Model,
    prompts: str | Sequence[str],
    *,
    rng: jax.Array | int | None = None,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    repetition_penalty: float = 1.0,
    stop: str | Sequence[str] | None = None,
    on_token: Callable[[int, str], None] | None = None,
    crop_prompt: bool = False,
    allow_special: bool = False,
) -> str | list[str]:
    """Continues each prompt with up to `max_new_tokens` sampled tokens.

        x_{t+1} ~ softmax(z_t / τ) restricted to top-k / top-p / min-p  (τ = 0: argmax)

    Args:
      model: from `load_model`.
      prompts: one text, or a list of texts of any lengths (generated together as one batch).
        An empty prompt starts from the end-of-text token.
      rng: a `jax.random.key(seed)`, a legacy `jax.random.PRNGKey(seed)`, an int seed in
        [0, 2**32 - 1], or None for a fresh random seed.
      max_new_tokens: N >= 1 new tokens at most per prompt (prompt + N within the context).
      temperature: τ >= 0, finite; 0 is greedy (deterministic).
      top_k: sample among the k most likely tokens only (None: all).
      top_p: sample from the smallest set of tokens whose probability reaches p (None: all).
      min_p: sample among the tokens at least min_p times as likely as the most likely (None: all).
      presence_penalty, frequency_penalty: OpenAI's, in [-2, 2]: each generated token's logit is
        lowered by presence (once it has occurred) plus frequency times its count so far.
      repetition_penalty: θ > 0 (Keskar et al. 2019): a token of the prompt or generated has its
        logit divided by θ when positive, multiplied by θ when negative (1: none).
      stop: a string or a list of strings; a row ends before the first occurrence of any of them.
      on_token: called as `on_token(row, text)` with each new piece of a row's text as it is
        generated (streaming), in the calling thread; the pieces of a row concatenate to its
        returned text. An exception it raises stops the generation and reaches the caller as
        itself; it may call `generate` itself.
      crop_prompt: keep only the last `context_length - max_new_tokens` tokens of a longer prompt,
        instead of raising `PromptTooLongError`.
      allow_special: True: a special token's spelling in a prompt ("<|endoftext|>") is that token, as
        a chat template's text needs (`generate_chat`); False: it is ordinary text.
    Returns:
      The continuation (without the prompt): a str for a str prompt, a list for a list.
    Raises:
      PromptTooLongError: a prompt plus `max_new_tokens` exceeds the context (names the prompt).
      SamplingError, InferError: an argument out of range (names it and what is valid).
      InvalidTextError: a prompt that is not valid Unicode (a lone surrogate; names the prompt).
      KeyboardInterrupt: Ctrl-C; the generation stops within a few steps.
    """
    if not isinstance(model, Model):
        raise InferError(f"model must be a Model from load_model(...), got {type(model).__name__}")
    single = isinstance(prompts, str)
    texts = _prompt_list(prompts)
    settings = _Settings.check(
        model, rng, max_new_tokens, (temperature, top_k, top_p, min_p),
        (presence_penalty, frequency_penalty, repetition_penalty), stop, on_token,
    )  # fmt: skip
    for name, flag in (("crop_prompt", crop_prompt), ("allow_special", allow_special)):
        if not isinstance(flag, bool):
            raise InferError(f"{name} must be True or False, got {flag!r}")
    enable_compilation_cache()
    ids = _encode(model, texts, single, allow_special)
    prompt, lengths = _prompt_batch(model, ids, single, settings.max_new_tokens, crop_prompt)
    rows = [RowText(model.tokenizer, settings.stops) for _ in texts]
    _run(model, prompt, lengths, rows, settings, on_token)
    results = [row.text for row in rows]
    return results[0] if single else results


def generate_chat(model: Model, messages: Sequence[dict[str, str]], **options: object) -> str:
    """The assistant's next message in a conversation, as `serve`'s chat endpoint writes it.

        reply = generate_chat(model, [{"role": "user", "content": "What is a list?"}], temperature=0)

    The messages are rendered by the model folder's chat template (`chat.load_chat_template`: a chat
    model that `train` fine-tuned carries one), else by `chat.DEFAULT_CHAT_TEMPLATE` with its stops;
    the text is encoded with special tokens allowed, and the reply ends at end-of-text.

    Args:
      model: from `load_model`.
      messages: a non-empty list of ``{"role": "system" | "user" | "assistant", "content": str}``.
      **options: `generate`'s keyword arguments (rng, max_new_tokens, temperature, top_k, top_p,
        min_p, the penalties, stop, on_token, crop_prompt); the template's stops join `stop`.
    Returns:
      The reply's text.
    Raises:
      ChatTemplateError: a malformed message (names its index and field) or a failing template.
      InferError: jinja2 is missing (it comes with the ``serve`` extra), or `generate`'s errors.
    """
    from microgpt_infer import chat

    if not isinstance(model, Model):
        raise InferError(f"model must be a Model from load_model(...), got {type(model).__name__}")
    if "allow_special" in options:
        raise InferError("generate_chat always reads the template's special tokens; drop allow_special")
    template = chat.load_chat_template(model.source) if model.source is not None else None
    text, stops = chat.render_reply_prompt(messages, template, model.tokenizer.eot_token)
    stop = options.pop("stop", None)
    if stops:
        stop = (*check_stops(stop), *stops)
    return generate(model, text, stop=stop, allow_special=True, **options)  # type: ignore[arg-type]


class _Settings(NamedTuple):
    """The checked sampling arguments of one `generate` call."""

    key: jax.Array
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    min_p: float | None
    penalties: tuple[float, float, float]  # presence, frequency, repetition
    stops: tuple[str, ...]

    @classmethod
    def check(cls, model, rng, max_new_tokens, sampling, penalties, stop, on_token) -> _Settings:
        T = model.config.context_length
        if not is_integer(max_new_tokens) or not 1 <= max_new_tokens < T:
            raise SamplingError(
                f"max_new_tokens must be an integer in [1, {T - 1}] (context_length {T} minus a prompt "
                f"token), got {max_new_tokens!r}"
            )
        temperature, top_k, top_p, min_p = check_sampling(*sampling)
        penalties = check_penalties(*penalties)
        stops = check_stops(stop)
        key = _as_key(rng)
        if on_token is not None and not callable(on_token):
            raise InferError(f"on_token must be a callable or None, got {type(on_token).__name__}")
        return cls(key, int(max_new_tokens), temperature, top_k, top_p, min_p, penalties, stops)


def _prompt_batch(
    model: Model, ids: list[list[int]], single: bool, max_new_tokens: int, crop_prompt: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The prompts' token ids right-padded to one bucket width, (B, P), and their lengths (B,).

    An empty prompt is the end-of-text token; a prompt longer than the context leaves room for is
    cropped to its last tokens with `crop_prompt`, else `PromptTooLongError` names it.
    """
    T = model.config.context_length
    room = T - max_new_tokens
    for i, row in enumerate(ids):
        if not row:
            ids[i] = [model.tokenizer.eot_id]
        elif len(row) > room:
            if not crop_prompt:
                which = "the prompt" if single else f"prompts[{i}]"
                raise PromptTooLongError(
                    f"{which} has {len(row)} tokens; with max_new_tokens={max_new_tokens} the model's "
                    f"context_length {T} leaves room for {room}. Shorten it, lower max_new_tokens, or "
                    f"pass crop_prompt=True (CLI: --crop-prompt) to keep its last {room} tokens"
                )
            ids[i] = row[-room:]
    lengths = np.array([len(row) for row in ids], np.int32)  # (B,)
    prompt = np.zeros((len(ids), bucket_width(int(lengths.max()), T)), np.int32)  # (B, P) right-padded
    for i, row in enumerate(ids):
        prompt[i, : len(row)] = row
    return prompt, lengths


def _run(
    model: Model,
    prompt: np.ndarray,
    lengths: np.ndarray,
    rows: list[RowText],
    settings: _Settings,
    on_token: Callable[[int, str], None] | None,
) -> None:
    """Generates the tokens and feeds them, step by step, to each row's text (and to `on_token`)."""

    def consume(step: int, tokens: np.ndarray) -> bool:
        """Decodes one step of every row; True (stop the loop) once every row has ended."""
        for r, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            piece = row.push(token)
            if piece and on_token is not None:
                on_token(r, piece)
        return all(row.done for row in rows)

    eot_id = model.tokenizer.eot_id if model.tokenizer.eot_id < model.config.vocab_size else None
    kwargs = dict(
        rng=settings.key, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
        top_k=settings.top_k, top_p=settings.top_p, min_p=settings.min_p, eot_id=eot_id,
        presence_penalty=settings.penalties[0], frequency_penalty=settings.penalties[1],
        repetition_penalty=settings.penalties[2],
    )  # fmt: skip
    if on_token is None and not settings.stops:  # nothing to do per step: one program, waited for
        out = streaming.wait(generate_tokens(model.params, model.config, prompt, lengths, **kwargs))
        for step, tokens in enumerate(np.asarray(out.tokens).T):  # (N, B)
            if consume(step, tokens):
                break
    else:  # streamed: each step's text as it comes, and the loop ends once every row has stopped
        generate_tokens(model.params, model.config, prompt, lengths, on_token=consume, **kwargs)
    for r, row in enumerate(rows):
        piece = row.finish()
        if piece and on_token is not None:
            on_token(r, piece)


# ------------------------------------------------------------------------------------------------
_LOADED: dict[tuple, Model] = {}


def _resolve(model: Model | str | os.PathLike[str] | None) -> Model:
    """A `Model`, loading (once per source and file version) a folder or repo id given by name."""
    if isinstance(model, Model):
        return model
    if model is not None and not isinstance(model, str | os.PathLike):
        raise InferError(
            f"model must be a Model, a model folder or a Hub repo id (str or path), or None, got "
            f"{type(model).__name__}"
        )
    source = model if model is not None else find_default_model()
    path = DEFAULT_MODEL_DIR if is_default(source) else Path(os.fspath(source)).expanduser()
    stamp = tuple(
        (path / name).stat().st_mtime_ns if (path / name).exists() else 0
        for name in (CONFIG_FILE, WEIGHTS_FILE)
    )
    key = (str(path.resolve()) if path.exists() else os.fspath(source), stamp)
    if key not in _LOADED:
        _LOADED.clear()  # keep one model in memory
        _LOADED[key] = load_model(source)
    return _LOADED[key]


def generate_text(
    rng: jax.Array | int | None,
    text: str,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    *,
    model: Model | str | os.PathLike[str] | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    repetition_penalty: float = 1.0,
    stop: str | Sequence[str] | None = None,
    on_token: Callable[[int, str], None] | None = None,
) -> str:
    """The original microGPT call: `text` followed by up to `max_new_tokens` sampled tokens.

    Args:
      rng: a `jax.random.key(seed)`, a legacy `jax.random.PRNGKey(seed)` (as the original took), or
        an int seed.
      text: the prompt.
      max_new_tokens, temperature: as in the original (temperature 0: greedy).
      model: a `Model`, "default" (the model this package ships), a model folder (a training run's:
        "runs/NAME/model") or a Hub repo id; default `$MICROGPT_MODEL`, else "default". Loaded once
        and kept for later calls.
      top_k, top_p, min_p, presence_penalty, frequency_penalty, repetition_penalty, stop, on_token:
        see `generate`.
    Returns:
      The prompt and its continuation, as one string.
    Raises:
      ModelNotFoundError: the model named is neither a folder nor a repo id; the message says how
        to get one.
    """
    resolved = _resolve(model)
    continuation = generate(
        resolved, text, rng=rng, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, min_p=min_p, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, repetition_penalty=repetition_penalty, stop=stop,
        on_token=on_token,
    )  # fmt: skip
    return text + continuation
