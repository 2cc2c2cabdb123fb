"""Sampling: choosing the next token from logits, and the decode loop compiled once per generation.

    p(x) = softmax((z' - max z') / τ)   z' = z outside the k highest logits set to -∞ (top-k, Fan et
                                        al. 2018), then restricted to the smallest set of tokens
                                        whose probability sums to at least p (nucleus / top-p,
                                        Holtzman et al. 2019) and to the tokens at least min_p
                                        times as likely as the most likely one (min-p, Nguyen et
                                        al. 2024); τ = 0 means argmax (greedy).

Top-k picks from the raw logits, before the temperature (so it holds for any τ). Subtracting the
maximum does not change the softmax, and it keeps z/τ finite for tiny τ: the maximum becomes 0 and
every other logit a large negative number, so a tiny temperature samples the argmax. Before all of
it, `penalize` may lower the logits of tokens already seen (repetition, presence and frequency
penalties); `top_logprobs` reports log softmax(z) of the raw logits. Each setting is one number for
every row, or a (B,) array of one per row (`sample_rows`: a batch of independent requests, as a
server's decode slots are).

`generate_tokens` runs one prefill over the (right-padded) prompts (`model.forward_cached`), then
`decode_loop`: a `lax.while_loop` of one-token steps of `forward_cached` over the preallocated
cache. The whole generation is one XLA program: nothing is retraced per token and no shape grows, so
generating 50 or 500 tokens compiles once. (microgpt_infer's engine runs the same loop with a decode
step laid out for speed, and streams its tokens.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core.cache import KVCache, init_cache
from microgpt_core.config import GPTConfig, is_integer, is_real
from microgpt_core.model import forward_cached
from microgpt_core.params import Params

__all__ = [
    "Generation",
    "SamplingError",
    "check_generation",
    "check_penalties",
    "check_rng",
    "check_sampling",
    "decode_loop",
    "filter_logits",
    "generate_tokens",
    "greedy",
    "penalize",
    "penalized",
    "prefill",
    "sample_logits",
    "sample_rows",
    "top_logprobs",
]

# The smallest normal float32: a smaller τ would round to 0 (or be flushed to 0) in float32. Any τ this
# small already puts all the probability on the maximum, so τ is taken as at least this.
MIN_TEMPERATURE = float(np.finfo(np.float32).tiny)

Setting = float | int | jax.Array
"""A sampling setting: one Python number for every row, or a (B,) array of one per row."""


class SamplingError(ValueError):
    """A sampling argument is out of range; the message names it and what is valid."""


class Generation(NamedTuple):
    """What `generate_tokens` returns.

    Attributes:
      tokens: (B, N) int32 new tokens; after a row's end-of-text token the row holds `eot_id` (0
        without one).
      num_tokens: (B,) int32 tokens generated per row before its end-of-text token (or N).
    """

    tokens: jax.Array
    num_tokens: jax.Array


# ------------------------------------------------------------------------------------------------
# Arguments: checked once, on the host, before anything is traced (`config.is_integer`, `is_real`).
def check_sampling(
    temperature: float, top_k: int | None, top_p: float | None, min_p: float | None = None
) -> tuple[float, int | None, float | None, float | None]:
    """The settings as Python numbers (numpy scalars accepted), or `SamplingError` naming the bad one.

    Valid: a finite temperature >= 0; top_k an integer >= 1 (larger than V keeps every token) or
    None; top_p a number in (0, 1] or None; min_p a number in [0, 1] or None (0 keeps every token).
    Bools are not numbers here.
    """
    if not is_real(temperature) or not (math.isfinite(temperature) and temperature >= 0):
        raise SamplingError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not is_integer(top_k) or top_k < 1):
        raise SamplingError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (not is_real(top_p) or not 0 < top_p <= 1):
        raise SamplingError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")
    if min_p is not None and (not is_real(min_p) or not 0 <= min_p <= 1):
        raise SamplingError(f"min_p must be a number in [0, 1] or None, got {min_p!r}")
    return (
        float(temperature),
        None if top_k is None else int(top_k),
        None if top_p is None else float(top_p),
        None if min_p is None or min_p == 0 else float(min_p),
    )


def check_penalties(presence: Any, frequency: Any, repetition: Any) -> tuple[float, float, float]:
    """The penalties as Python floats, or `SamplingError` naming the bad one. Valid (OpenAI's and
    vLLM's ranges): presence and frequency in [-2, 2] (0: none); repetition a finite number > 0
    (1: none)."""
    for name, value in (("presence_penalty", presence), ("frequency_penalty", frequency)):
        if not is_real(value) or not -2 <= value <= 2:
            raise SamplingError(f"{name} must be a number in [-2, 2] (0 = none), got {value!r}")
    if not is_real(repetition) or not (math.isfinite(repetition) and repetition > 0):
        raise SamplingError(f"repetition_penalty must be a finite number > 0 (1 = none), got {repetition!r}")
    return float(presence), float(frequency), float(repetition)


def check_rng(rng: Any) -> jax.Array:
    """`rng` as a typed key: a `jax.random.key(seed)` (shape ()) or a legacy `jax.random.PRNGKey(seed)`
    (uint32 (2,), wrapped with the default implementation, so both give the same samples).

    Raises:
      SamplingError: anything else (another shape or dtype, a batch of keys, an int, None).
    """
    valid = "rng must be one key: jax.random.key(seed) (shape ()) or jax.random.PRNGKey(seed) (uint32 (2,))"
    dtype, shape = getattr(rng, "dtype", None), getattr(rng, "shape", None)
    if dtype is None or shape is None:
        raise SamplingError(f"{valid}, got {type(rng).__name__}")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise SamplingError(f"{valid}, got a key array of shape {shape}")
        return rng
    if dtype == np.uint32 and shape == (2,):
        return jax.random.wrap_key_data(rng)
    raise SamplingError(f"{valid}, got {dtype}{list(shape)}")


# ------------------------------------------------------------------------------------------------
# The math.
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
    logits: jax.Array,
    temperature: Setting = 1.0,
    top_k: Setting | None = None,
    top_p: Setting | None = None,
    min_p: Setting | None = None,
) -> jax.Array:
    """The logits of the distribution to sample from: (z - max z) / τ, -∞ outside top-k, top-p, min-p.

    Top-k keeps the k highest raw logits. Top-p keeps the smallest set of highest-probability tokens
    whose total probability (after top-k and τ) reaches p: in descending order of probability, token
    i is kept when the mass before it is < p (so the token that crosses p is kept). Min-p keeps the
    tokens whose probability (after τ) is at least min_p times the largest (Nguyen et al. 2024,
    "Turning up the heat: min-p sampling for creative and coherent LLM outputs"):

        p_i >= min_p · p_max   ⟺   (z_i - max z) / τ >= ln min_p

    a ratio that renormalising after top-k or top-p does not change, so the order does not matter.

    Each setting is one Python number for every row, or a (B,) array of one per row (a batch of
    requests that each asked for their own; there top_k 0, top_p 1 and min_p 0 keep every token).

    Args:
      logits: (B, V) scores z.
      temperature: τ > 0 (taken as at least `MIN_TEMPERATURE`).
      top_k: keep only the k highest logits (None: all).
      top_p: keep the smallest nucleus of mass >= p (None or 1: all).
      min_p: keep the tokens with p >= min_p · p_max (None or 0: all).
    Returns:
      (B, V) float32, 0 at each row's maximum.
    """
    z = logits.astype(jnp.float32)  # (B, V)
    if top_k is not None:
        z = jnp.where(z < _kth_largest(z, top_k), -jnp.inf, z)  # (B, V)
    tau = _per_row(temperature)  # a number or (B, 1)
    tau = max(tau, MIN_TEMPERATURE) if _is_number(tau) else jnp.maximum(tau, MIN_TEMPERATURE)
    z = (z - jnp.max(z, axis=-1, keepdims=True)) / tau  # (B, V) <= 0
    if min_p is not None and not (_is_number(min_p) and min_p == 0):
        floor = math.log(min_p) if _is_number(min_p) else jnp.log(_per_row(min_p))  # ln 0 = -∞: all
        z = jnp.where(z >= floor, z, -jnp.inf)  # (B, V): p_i / p_max = exp(z_i) >= min_p
    if top_p is None or (_is_number(top_p) and top_p >= 1):
        return z
    if _is_number(top_p):
        return _nucleus(z, top_p)
    p = jnp.asarray(top_p)  # (B,): rows with p >= 1 keep everything, and skip the sort if all do
    return jax.lax.cond(jnp.any(p < 1), lambda z: _nucleus(z, p[:, None]), lambda z: z, z)


def _nucleus(z: jax.Array, p: float | jax.Array) -> jax.Array:
    """z outside each row's top-p nucleus set to -∞: in descending order, a token is kept while the
    probability before it is < p; the last one kept sets a threshold, so tokens tied with it stay
    too (as top-k keeps ties).

    Args:
      z: (B, V) logits after top-k and the temperature.
      p: a number, or (B, 1).
    """
    descending = -jnp.sort(-z, axis=-1)  # (B, V)
    probs = jax.nn.softmax(descending, axis=-1)  # (B, V) sorted probabilities
    keep = (jnp.cumsum(probs, axis=-1) - probs < p) | (p >= 1)  # (B, V) mass before token < p
    cutoff = jnp.min(jnp.where(keep, descending, jnp.inf), axis=-1, keepdims=True)  # (B, 1)
    return jnp.where(z >= cutoff, z, -jnp.inf)  # (B, V)


def _is_number(setting: Setting) -> bool:
    """One number for every row, known while tracing (Python or NumPy), not an array per row."""
    return isinstance(setting, int | float | np.number)


def _per_row(setting: Setting) -> float | jax.Array:
    """A setting as a Python float for one number, else (B, 1) (or ()) to broadcast against (B, V)."""
    if _is_number(setting):
        return float(setting)
    value = jnp.asarray(setting, jnp.float32)
    return value if value.ndim == 0 else value[:, None]


def _kth_largest(z: jax.Array, k: Setting) -> jax.Array:
    """(B, 1) the k-th largest logit of each row; -∞ where k keeps every token (k >= V, or 0 per row)."""
    V = z.shape[-1]
    if _is_number(k):
        return jax.lax.top_k(z, int(k))[0][:, -1:] if k < V else jnp.full((z.shape[0], 1), -jnp.inf)
    k = jnp.asarray(k)  # (B,)
    off = (k < 1) | (k >= V)  # (B,) rows that keep every token; all of them skip the sort

    def kth(z):
        descending = -jnp.sort(-z, axis=-1)  # (B, V)
        return jnp.take_along_axis(descending, jnp.clip(k - 1, 0, V - 1)[:, None], axis=-1)  # (B, 1)

    no_limit = lambda z: jnp.full((z.shape[0], 1), -jnp.inf)  # noqa: E731
    return jnp.where(off[:, None], -jnp.inf, jax.lax.cond(jnp.all(off), no_limit, kth, z))  # (B, 1)


def sample_logits(
    logits: jax.Array,
    rng: jax.Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> jax.Array:
    """Draws one token per row from softmax(`filter_logits`(z)); temperature 0 returns the argmax.

    Args:
      logits: (B, V) scores z.
      rng: a key (see `check_rng`; unused, and may be None, when greedy).
      temperature: τ >= 0, finite; 0 (or top_k = 1) is greedy.
      top_k, top_p, min_p: see `filter_logits`.
    Returns:
      (B,) int32 token ids.
    """
    temperature, top_k, top_p, min_p = check_sampling(temperature, top_k, top_p, min_p)
    if temperature == 0 or top_k == 1 or min_p == 1:
        return greedy(logits)
    z = filter_logits(logits, temperature, top_k, top_p, min_p)  # (B, V)
    return jax.random.categorical(check_rng(rng), z, axis=-1).astype(jnp.int32)  # (B,)


def sample_rows(
    logits: jax.Array,
    keys: jax.Array,
    temperature: Setting = 1.0,
    top_k: Setting | None = None,
    top_p: Setting | None = None,
    min_p: Setting | None = None,
) -> jax.Array:
    """One token per row, each row drawn with its own key from softmax(`filter_logits`(z)) (rows with
    τ = 0, k = 1 or min_p = 1 take the argmax): row b's token depends only on row b's logits, key and
    settings, never on the other rows (a batch of independent requests).

    Args:
      logits: (B, V) scores z.
      keys: (B,) typed keys, one per row.
      temperature, top_k, top_p, min_p: numbers, or (B,) arrays (see `filter_logits`).
    Returns:
      (B,) int32 token ids.
    """
    z = filter_logits(logits, temperature, top_k, top_p, min_p)  # (B, V)
    drawn = jax.vmap(lambda key, row: jax.random.categorical(key, row))(keys, z)  # (B,)
    argmax = jnp.asarray(temperature) == 0  # () or (B,)
    if top_k is not None:
        argmax = argmax | (jnp.asarray(top_k) == 1)
    if min_p is not None:
        argmax = argmax | (jnp.asarray(min_p) == 1)
    return jnp.where(argmax, greedy(logits), drawn).astype(jnp.int32)  # (B,)


def penalize(
    logits: jax.Array,
    counts: jax.Array,
    in_prompt: jax.Array,
    *,
    presence: Setting = 0.0,
    frequency: Setting = 0.0,
    repetition: Setting = 1.0,
) -> jax.Array:
    """Logits lowered for tokens that already occurred (before the temperature and the filters):

        z_i ← z_i / θ if z_i > 0 else z_i · θ     for tokens in the prompt or generated
                                                  (repetition penalty θ, Keskar et al. 2019, CTRL)
        z_i ← z_i - c_i · α_frequency - [c_i > 0] · α_presence
                                                  (OpenAI's frequency and presence penalties)

    where c_i counts token i among the generated tokens. θ = 1 and α = 0 change nothing; θ > 1 and
    α > 0 discourage repeats, θ < 1 and α < 0 encourage them.

    Args:
      logits: (B, V) scores z.
      counts: (B, V) int, each token's count among the tokens generated so far.
      in_prompt: (B, V) bool, the tokens of each row's prompt.
      presence, frequency: α_presence, α_frequency (numbers or (B,) arrays).
      repetition: θ > 0 (a number or a (B,) array).
    Returns:
      (B, V) float32.
    """
    z = logits.astype(jnp.float32)  # (B, V)
    theta = _per_row(repetition)  # () or (B, 1)
    z = jnp.where(in_prompt | (counts > 0), jnp.where(z > 0, z / theta, z * theta), z)  # (B, V)
    c = counts.astype(jnp.float32)  # (B, V)
    return z - c * _per_row(frequency) - (c > 0) * _per_row(presence)  # (B, V)


def top_logprobs(logits: jax.Array, tokens: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The model's log-probabilities, log softmax(z), of the raw logits (before penalties, temperature
    and filters, as OpenAI's `logprobs` report them): the chosen tokens' and the k most likely.

    Args:
      logits: (B, V) scores z.
      tokens: (B,) int the chosen tokens.
      k: how many of the most likely to return (0 <= k <= V).
    Returns:
      chosen (B,), and ids (B, k) int32 with their log-probabilities (B, k), most likely first.
    """
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B, V)
    chosen = jnp.take_along_axis(log_p, tokens[:, None].astype(jnp.int32), axis=-1)[:, 0]  # (B,)
    values, ids = jax.lax.top_k(log_p, k)  # (B, k) each
    return chosen, ids.astype(jnp.int32), values


# ------------------------------------------------------------------------------------------------
def check_generation(
    config: GPTConfig, prompt: Any, lengths: Any, *, rng: Any, max_new_tokens: Any, temperature: Any,
    top_k: Any, top_p: Any, eot_id: Any, min_p: Any = None, presence_penalty: Any = 0.0,
    frequency_penalty: Any = 0.0, repetition_penalty: Any = 1.0,
) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, Any]]:  # fmt: skip
    """The arguments of `generate_tokens`, checked: (prompt int32, lengths int32, the key, and the
    static settings (`max_new_tokens`, `temperature`, `top_k`, `top_p`, `min_p`, the penalties,
    `eot_id`) as Python values), or `SamplingError` naming the bad one (see `generate_tokens`)."""
    temperature, top_k, top_p, min_p = check_sampling(temperature, top_k, top_p, min_p)
    penalties = check_penalties(presence_penalty, frequency_penalty, repetition_penalty)
    rng = check_rng(rng)
    prompt = jnp.asarray(prompt)
    lengths = jnp.asarray(lengths)
    if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise SamplingError(
            f"prompt must be a (batch, length) integer array, got {prompt.dtype}{prompt.shape}"
        )
    B, P = prompt.shape
    if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise SamplingError(f"lengths must be ({B},) integers, got {lengths.dtype}{lengths.shape}")
    if not is_integer(max_new_tokens) or max_new_tokens < 1:
        raise SamplingError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > P:
        raise SamplingError(f"lengths must be in [1, {P}] (the prompt width), got min {lo} max {hi}")
    if hi + max_new_tokens > config.context_length:
        raise SamplingError(
            f"the longest prompt ({hi} tokens) plus max_new_tokens ({max_new_tokens}) exceeds "
            f"context_length {config.context_length}"
        )
    if eot_id is not None and (not is_integer(eot_id) or not 0 <= eot_id < config.vocab_size):
        raise SamplingError(f"eot_id must be an integer in [0, {config.vocab_size}) or None, got {eot_id!r}")
    settings = dict(
        max_new_tokens=int(max_new_tokens), temperature=temperature, top_k=top_k, top_p=top_p,
        min_p=min_p, presence_penalty=penalties[0], frequency_penalty=penalties[1],
        repetition_penalty=penalties[2], eot_id=None if eot_id is None else int(eot_id),
    )  # fmt: skip
    return prompt.astype(jnp.int32), lengths.astype(jnp.int32), rng, settings


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
) -> Generation:
    """Continues each prompt by up to `max_new_tokens` tokens, stopping a row at `eot_id`.

    Args:
      params: model parameters.
      config: the model's configuration.
      prompt: (B, P) int prompts, right-padded (the padding's value does not matter).
      lengths: (B,) int true prompt lengths, 1 <= lengths[b] <= P.
      rng: a key (see `check_rng`; unused when temperature is 0).
      max_new_tokens: N >= 1; needs max(lengths) + N <= context_length.
      temperature, top_k, top_p, min_p: see `sample_logits`.
      presence_penalty, frequency_penalty, repetition_penalty: see `penalize` (`check_penalties`
        gives the valid ranges); the neutral 0, 0 and 1 compile the loop without them.
      eot_id: end-of-text id; a row stops after producing it (None: never stop early).
    Returns:
      `Generation(tokens (B, N), num_tokens (B,))`, dispatched asynchronously (as JAX does).
    """
    prompt, lengths, rng, settings = check_generation(
        config, prompt, lengths, rng=rng, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, min_p=min_p, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, repetition_penalty=repetition_penalty, eot_id=eot_id,
    )  # fmt: skip
    return _generate(params, prompt, lengths, rng, config=config, **settings)


def prefill(
    params: Params, config: GPTConfig, prompt: jax.Array, lengths: jax.Array, max_new_tokens: int
) -> tuple[jax.Array, KVCache]:
    """The logits after each row's last prompt token, and the cache holding the prompts.

    Args:
      prompt: (B, P) int32, right-padded; lengths: (B,) int32 true lengths.
      max_new_tokens: N; the cache has room for P + N - 1 positions (the last token is not fed back).
    Returns:
      (B, V) float32 logits, and the `KVCache`.
    """
    B, P = prompt.shape
    cache = init_cache(config, B, min(P + max_new_tokens - 1, config.context_length))
    logits, cache = forward_cached(params, cache, prompt, jnp.zeros((B,), jnp.int32), config)  # (B, P, V)
    return jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0], cache  # (B, V)


def penalized(
    step: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]],
    logits: jax.Array,
    cache: Any,
    prompt: jax.Array,
    lengths: jax.Array,
    *,
    presence_penalty: float,
    frequency_penalty: float,
    repetition_penalty: float,
) -> tuple[Callable, jax.Array, tuple[Any, jax.Array]]:
    """The decode loop's step, first logits and cache with the penalties (`penalize`) applied: the
    step counts each token fed back to it, in a (B, V) count carried beside the cache. With every
    penalty neutral (0, 0, 1) they come back unchanged, and the loop compiles without them.

    Returns:
      the wrapped step (its cache is `(cache, counts)`), the penalised first logits (B, V), and
      the initial `(cache, counts)`.
    """
    if (presence_penalty, frequency_penalty, repetition_penalty) == (0, 0, 1):
        return step, logits, cache
    B, V = logits.shape
    rows = jnp.arange(B)  # (B,)
    valid = jnp.arange(prompt.shape[1]) < lengths[:, None]  # (B, P) the true prompt tokens
    in_prompt = jnp.zeros((B, V), bool).at[rows[:, None], prompt].max(valid)  # (B, V)
    penalties = dict(presence=presence_penalty, frequency=frequency_penalty, repetition=repetition_penalty)

    def counted(state, token, positions):
        cache, counts = state
        counts = counts.at[rows, token].add(1)  # (B, V): the generated tokens so far
        logits, cache = step(cache, token, positions)  # (B, V)
        return penalize(logits, counts, in_prompt, **penalties), (cache, counts)

    counts = jnp.zeros((B, V), jnp.int32)  # (B, V)
    return counted, penalize(logits, counts, in_prompt, **penalties), (cache, counts)


STATIC_ARGNAMES = (
    "config", "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "eot_id",
)  # fmt: skip


@functools.partial(jax.jit, static_argnames=STATIC_ARGNAMES)
def _generate(
    params, prompt, lengths, rng, *, config, max_new_tokens, temperature, top_k, top_p, min_p,
    presence_penalty, frequency_penalty, repetition_penalty, eot_id,
):  # fmt: skip
    """The compiled generation: prefill, then `decode_loop` over one-token `forward_cached` steps
    (with the penalties, when any is not neutral, `penalized`)."""
    logits, cache = prefill(params, config, prompt, lengths, max_new_tokens)  # (B, V)

    def step(cache, token, positions):
        logits, cache = forward_cached(params, cache, token[:, None], positions, config)  # (B, 1, V)
        return logits[:, 0], cache

    step, logits, cache = penalized(
        step, logits, cache, prompt, lengths, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, repetition_penalty=repetition_penalty,
    )  # fmt: skip

    sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    return decode_loop(
        step, cache, logits, lengths, rng, sample=sample, max_new_tokens=max_new_tokens, eot_id=eot_id
    )


def decode_loop(
    step: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]],
    cache: Any,
    logits: jax.Array,
    lengths: jax.Array,
    rng: jax.Array,
    *,
    sample: Callable[[jax.Array, jax.Array], jax.Array],
    max_new_tokens: int,
    eot_id: int | None,
    on_step: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> Generation:
    """Autoregressive decoding, traced once: sample a token per row, feed it back, repeat.

        token₀ = sample(logits after the prompt, key₀)
        logitsᵢ, cache = step(cache, tokenᵢ₋₁, its position)    i = 1 .. N - 1
        tokenᵢ = sample(logitsᵢ, keyᵢ),   keyᵢ = fold_in(rng, i)

    as one `lax.while_loop` that ends after N tokens or once every row has produced `eot_id` (a row
    that has stopped holds `eot_id` from then on).

    Args:
      step: `step(cache, tokens (B,), positions (B,)) -> (logits (B, V), cache)`, one token per row.
      cache: whatever `step` reads, holding the prompts.
      logits: (B, V) logits after each row's last prompt token.
      lengths: (B,) int32 prompt lengths (the position of token₀).
      rng: the generation's key.
      sample: `sample(logits (B, V), key) -> (B,) int32`.
      max_new_tokens: N.
      eot_id: end-of-text id, or None.
      on_step: optional `on_step(i, tokenᵢ) -> halt`, traced into the loop (microgpt_infer's engine
        streams tokens through it); a True halt ends the loop after step i.
    Returns:
      `Generation(tokens (B, N), num_tokens (B,))`.
    """
    B, N = logits.shape[0], max_new_tokens
    pad = 0 if eot_id is None else eot_id
    token = sample(logits, jax.random.fold_in(rng, 0))  # (B,)
    done = token == eot_id if eot_id is not None else jnp.zeros((B,), bool)  # (B,)
    num = jnp.where(done, 0, 1).astype(jnp.int32)  # (B,)
    out = jnp.full((B, N), pad, jnp.int32).at[:, 0].set(token)  # (B, N)
    halt = on_step(jnp.int32(0), token) if on_step else jnp.bool_(False)  # ()

    def keep_going(state):
        i, _, _, _, done, _, halt = state
        return (i < N) & ~jnp.all(done) & ~halt

    def next_token(state):
        i, out, cache, token, done, num, _ = state
        logits, cache = step(cache, token, lengths + i - 1)  # (B, V); token sits at lengths + i - 1
        new = jnp.where(done, pad, sample(logits, jax.random.fold_in(rng, i)))  # (B,)
        out = jax.lax.dynamic_update_slice(out, new[:, None], (0, i))  # (B, N)
        stopped = done | (new == eot_id) if eot_id is not None else done  # (B,)
        num = num + (~stopped).astype(jnp.int32)  # (B,)
        halt = on_step(i, new) if on_step else jnp.bool_(False)
        return i + 1, out, cache, new, stopped, num, halt

    state = (jnp.int32(1), out, cache, token, done, num, halt)
    _, out, _, _, _, num, _ = jax.lax.while_loop(keep_going, next_token, state)
    return Generation(tokens=out, num_tokens=num)
