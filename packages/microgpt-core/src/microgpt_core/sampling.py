"""Sampling: choosing the next token from logits, and the decode loop compiled once per generation.

    p(x) = softmax(z / τ)   restricted to the k highest logits (top-k, Fan et al. 2018) and then to
                            the smallest set of tokens whose probability sums to at least p
                            (nucleus / top-p, Holtzman et al. 2019); τ = 0 means argmax (greedy).

`generate_tokens` runs one prefill over the (right-padded) prompts, then a `lax.while_loop` of
one-token decode steps over a preallocated `KVCache`. The whole generation is one XLA program:
nothing is retraced per token and no shape grows, so generating 50 or 500 tokens compiles once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core.cache import decode_weights, forward_cached, init_cache, split_cache
from microgpt_core.config import GPTConfig
from microgpt_core.model import compiler_options

__all__ = ["Generation", "SamplingError", "filter_logits", "generate_tokens", "greedy", "sample_logits"]

Params = dict[str, Any]


class SamplingError(ValueError):
    """A sampling argument is out of range; the message names it and what is valid."""


class Generation(NamedTuple):
    """What `generate_tokens` returns.

    Attributes:
      tokens: (B, N) int32 new tokens; after a row's end-of-text token the row holds `eot_id`.
      num_tokens: (B,) int32 tokens generated per row before its end-of-text token (or N).
    """

    tokens: jax.Array
    num_tokens: jax.Array


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raises `SamplingError` for a temperature < 0, a top_k < 1 or a top_p outside (0, 1]."""
    if not isinstance(temperature, int | float) or isinstance(temperature, bool) or not temperature >= 0:
        raise SamplingError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise SamplingError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, int | float) or not 0 < top_p <= 1):
        raise SamplingError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")


def greedy(logits: jax.Array) -> jax.Array:
    """argmax_v z_v, the smallest index on ties (cheaper on CPU than `jnp.argmax`).

    Args:
      logits: (B, V).
    Returns:
      (B,) int32.
    """
    V = logits.shape[-1]
    best = jnp.max(logits, axis=-1, keepdims=True)  # (B, 1)
    index = jnp.where(logits == best, jnp.arange(V, dtype=jnp.int32), V)  # (B, V)
    return jnp.min(index, axis=-1)  # (B,)


def filter_logits(
    logits: jax.Array, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> jax.Array:
    """The logits of the distribution to sample from: z / τ, set to -∞ outside top-k and top-p.

    Top-p keeps the smallest set of highest-probability tokens whose total probability (after
    top-k) reaches p: in descending order of probability, token i is kept when the mass before it
    is < p (so the token that crosses p is kept).

    Args:
      logits: (B, V) scores z.
      temperature: τ > 0.
      top_k: keep only the k highest logits (None: all).
      top_p: keep the smallest nucleus of mass >= p (None or 1: all).
    Returns:
      (B, V) float32.
    """
    z = logits.astype(jnp.float32) / temperature  # (B, V)
    if top_k is not None and top_k < z.shape[-1]:
        kth = jax.lax.top_k(z, top_k)[0][:, -1:]  # (B, 1) the k-th largest logit
        z = jnp.where(z < kth, -jnp.inf, z)  # (B, V)
    if top_p is None or top_p >= 1:
        return z
    order = jnp.argsort(-z, axis=-1)  # (B, V) token ids by descending logit
    probs = jax.nn.softmax(jnp.take_along_axis(z, order, axis=-1), axis=-1)  # (B, V) sorted probs
    keep_sorted = jnp.cumsum(probs, axis=-1) - probs < top_p  # (B, V) mass before token < p
    rows = jnp.arange(z.shape[0])[:, None]  # (B, 1)
    keep = jnp.zeros(z.shape, bool).at[rows, order].set(keep_sorted)  # (B, V) back in id order
    return jnp.where(keep, z, -jnp.inf)  # (B, V)


def sample_logits(
    logits: jax.Array,
    rng: jax.Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> jax.Array:
    """Draws one token per row from softmax(`filter_logits`(z)); temperature 0 returns the argmax.

    Args:
      logits: (B, V) scores z.
      rng: PRNG key (unused when greedy).
      temperature: τ >= 0; 0 (or top_k = 1) is greedy.
      top_k, top_p: see `filter_logits`.
    Returns:
      (B,) int32 token ids.
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0 or top_k == 1:
        return greedy(logits)
    z = filter_logits(logits, temperature, top_k, top_p)  # (B, V)
    return jax.random.categorical(rng, z, axis=-1).astype(jnp.int32)  # (B,)


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
    eot_id: int | None = None,
    on_token: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> Generation:
    """Continues each prompt by up to `max_new_tokens` tokens, stopping a row at `eot_id`.

    Args:
      params: model parameters.
      config: the model's configuration.
      prompt: (B, P) int prompts, right-padded (the padding's value does not matter).
      lengths: (B,) int true prompt lengths, 1 <= lengths[b] <= P.
      rng: PRNG key (unused when temperature is 0).
      max_new_tokens: N >= 1; needs max(lengths) + N <= context_length.
      temperature, top_k, top_p: see `sample_logits`.
      eot_id: end-of-text id; a row stops after producing it (None: never stop early).
      on_token: optional host callback `on_token(step, tokens)` with step () and tokens (B,),
        called in order for each generated position (rows that have stopped repeat `eot_id`).
    Returns:
      `Generation(tokens (B, N), num_tokens (B,))`.
    """
    check_sampling(temperature, top_k, top_p)
    prompt = jnp.asarray(prompt)
    lengths = jnp.asarray(lengths)
    if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise SamplingError(
            f"prompt must be a (batch, length) integer array, got {prompt.dtype}{prompt.shape}"
        )
    B, P = prompt.shape
    if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise SamplingError(f"lengths must be ({B},) integers, got {lengths.dtype}{lengths.shape}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise SamplingError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > P:
        raise SamplingError(f"lengths must be in [1, {P}] (the prompt width), got min {lo} max {hi}")
    if hi + max_new_tokens > config.context_length:
        raise SamplingError(
            f"the longest prompt ({hi} tokens) plus max_new_tokens ({max_new_tokens}) exceeds "
            f"context_length {config.context_length}"
        )
    if eot_id is not None and not 0 <= eot_id < config.vocab_size:
        raise SamplingError(f"eot_id must be in [0, {config.vocab_size}), got {eot_id}")
    return _generation_program(config)(
        params, prompt.astype(jnp.int32), lengths.astype(jnp.int32), rng,
        config=config, max_new_tokens=max_new_tokens, temperature=float(temperature),
        top_k=top_k, top_p=top_p, eot_id=eot_id, on_token=on_token,
    )  # fmt: skip


def _generation_program(config: GPTConfig) -> Callable:
    """`_generate` jitted with the compiler options for decoding `config` on this backend."""
    return _jit_generate(tuple(sorted(compiler_options(config, decode=True).items())))


@functools.cache
def _jit_generate(options: tuple[tuple[str, Any], ...]) -> Callable:
    static = ("config", "max_new_tokens", "temperature", "top_k", "top_p", "eot_id", "on_token")
    return jax.jit(_generate, static_argnames=static, compiler_options=dict(options))


def _generate(
    params, prompt, lengths, rng, *, config, max_new_tokens, temperature, top_k, top_p, eot_id, on_token
):
    """The compiled generation: prefill, first sample, then a while-loop of decode steps."""
    B, P = prompt.shape
    N = max_new_tokens
    pad = 0 if eot_id is None else eot_id
    sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p)
    emit = (lambda step, tok: jax.debug.callback(on_token, step, tok, ordered=True)) if on_token else None

    cache = init_cache(config, B, min(P + N - 1, config.context_length))
    logits, cache = forward_cached(params, cache, prompt, jnp.zeros((B,), jnp.int32), config)  # (B, P, V)
    last_logits = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]  # (B, V)
    token = sample(last_logits, jax.random.fold_in(rng, 0))  # (B,); the key of step i is fold_in(rng, i)
    done = token == eot_id if eot_id is not None else jnp.zeros((B,), bool)  # (B,)
    num = jnp.where(done, 0, 1).astype(jnp.int32)  # (B,)
    out = jnp.full((B, N), pad, jnp.int32).at[:, 0].set(token)  # (B, N)
    if emit:
        emit(jnp.int32(0), token)
    weights = decode_weights(params, config, B)  # sliced (and laid out) once, outside the loop
    cache = split_cache(cache)  # per layer: each step updates every layer's cache in place

    def keep_going(state):
        step, _, _, _, done, _ = state
        return (step < N) & ~jnp.all(done)

    def decode_step(state):
        step, out, cache, token, done, num = state
        positions = lengths + step - 1  # (B,) position of `token`
        logits, cache = forward_cached(params, cache, token[:, None], positions, config, weights=weights)
        new = jnp.where(done, pad, sample(logits[:, 0], jax.random.fold_in(rng, step)))  # (B,)
        out = jax.lax.dynamic_update_slice(out, new[:, None], (0, step))  # (B, N)
        stopped = done | (new == eot_id) if eot_id is not None else done
        num = num + (~stopped).astype(jnp.int32)
        if emit:
            emit(step, new)
        return step + 1, out, cache, new, stopped, num

    state = (jnp.int32(1), out, cache, token, done, num)
    _, out, _, _, _, num = jax.lax.while_loop(keep_going, decode_step, state)
    return Generation(tokens=out, num_tokens=num)
