"""`generate_tokens` on the engine: the reference generation with the fast decode step, compiled with
the decode options, and its tokens streamed to a callback while the loop runs.

The loop is core's own (`sampling.prefill`, then `sampling.decode_loop`); only its step differs:
`decode.decode_step` over per-layer caches and weights sliced once, instead of `forward_cached` over
the stacked ones, attending over growing windows of the cache where `decode.step_windows` finds they
pay. tests/infer/test_engine.py checks that both give the same tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core.config import GPTConfig
from microgpt_core.params import Params
from microgpt_core.sampling import (
    STATIC_ARGNAMES,
    Generation,
    SamplingError,
    check_generation,
    decode_loop,
    penalized,
    prefill,
    sample_logits,
)
from microgpt_infer.engine import decode, streaming
from microgpt_infer.engine.options import compiler_options

__all__ = ["generate_tokens"]


def generate_tokens(
    params: Params,
    config: GPTConfig,
    prompt: jax.Array,
    lengths: jax.Array,
    *,
    rng: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    repetition_penalty: float = 1.0,
    eot_id: int | None = None,
    on_token: Callable[[int, np.ndarray], bool | None] | None = None,
) -> Generation:
    """`microgpt_core.sampling.generate_tokens`, the same tokens, faster, optionally streamed.

    Args: as core's `generate_tokens`, plus
      on_token: optional `on_token(step, tokens)` with step an int and tokens (B,) int32 numpy,
        called in the calling thread, in order, while the loop runs (rows that have stopped repeat
        `eot_id`). Returning True stops every row after that step (the rows then hold `eot_id`, or
        0 without one). An exception it raises stops the loop and reaches the caller as itself; it
        may itself call `generate_tokens`.
    Returns:
      `Generation(tokens (B, N), num_tokens (B,))`: without `on_token`, dispatched asynchronously
      (wait with `streaming.wait` for a wait that Ctrl-C can interrupt); with it, once done.
    """
    prompt, lengths, rng, settings = check_generation(
        config, prompt, lengths, rng=rng, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, min_p=min_p, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, repetition_penalty=repetition_penalty, eot_id=eot_id,
    )  # fmt: skip
    if on_token is not None and not callable(on_token):
        raise SamplingError(f"on_token must be a callable or None, got {type(on_token).__name__}")
    slots = min(prompt.shape[1] + max_new_tokens - 1, config.context_length)  # about prefill's cache
    windows = decode.step_windows(params, config, *prompt.shape, slots)
    program = functools.partial(
        _program(config), params, prompt, lengths, rng, config=config, windows=windows, **settings
    )
    if on_token is None:
        return program()
    out, stopped = streaming.stream(program, on_token)
    pad = 0 if settings["eot_id"] is None else settings["eot_id"]
    return out if stopped is None else _cut(out, stopped, pad)


def _cut(out: Generation, step: int, pad: int) -> Generation:
    """`out` as if the loop had stopped after `step` (the device may have run a step or two more)."""
    tokens = np.array(out.tokens)  # (B, N)
    tokens[:, step + 1 :] = pad
    num = np.minimum(np.asarray(out.num_tokens), step + 1)  # (B,)
    return Generation(tokens=jnp.asarray(tokens), num_tokens=jnp.asarray(num))


def _program(config: GPTConfig) -> Callable:
    """`_generate` jitted with the compiler options for decoding `config` on this backend."""
    return _jit_generate(tuple(sorted(compiler_options(config).items())))


@functools.cache
def _jit_generate(options: tuple[tuple[str, Any], ...]) -> Callable:
    return jax.jit(_generate, static_argnames=(*STATIC_ARGNAMES, "windows"), compiler_options=dict(options))


def _generate(
    params, prompt, lengths, rng, stream=None, *,
    config, max_new_tokens, temperature, top_k, top_p, min_p, presence_penalty, frequency_penalty,
    repetition_penalty, eot_id, windows,
):  # fmt: skip
    """The compiled generation: the reference prefill, then `decode_loop` over `decode.decode_step`
    (over growing `windows` of the cache, when not None).

    `stream` is None (one program) or a () int32 stream id (another program, whatever the callback):
    each step's tokens then go to `streaming.emit`, whose answer `halt` ends the loop.
    """
    logits, cache = prefill(params, config, prompt, lengths, max_new_tokens)  # (B, V)
    weights = decode.decode_weights(params, config)  # sliced once, outside the loop

    def step(caches, token, positions):
        logits, caches = decode.decode_step(
            params, weights, caches, token[:, None], positions, config, windows=windows
        )
        return logits[:, 0], caches  # (B, V)

    step, logits, caches = penalized(
        step, logits, decode.split_cache(cache), prompt, lengths, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, repetition_penalty=repetition_penalty,
    )  # fmt: skip
    on_step = (lambda i, tokens: streaming.emit(stream, i, tokens)) if stream is not None else None
    sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    return decode_loop(
        step, caches, logits, lengths, rng,
        sample=sample, max_new_tokens=max_new_tokens, eot_id=eot_id, on_step=on_step,
    )  # fmt: skip
