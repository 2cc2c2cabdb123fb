"""The slot engine's two device programs: prefill requests into slots, and one decode step for all.

The engine (batching.py) keeps N decode slots on the device, each able to hold one request of up to
`max_len` positions. Everything here has fixed shapes, so each program compiles once (the prefill
once per batch k and prompt bucket width P, the step once per width w and window W), whatever the
requests:

    admit(rows (k,), prompts (k, P), lengths, seeds, settings)    prefill k requests in one batch,
        logits, cache = sampling.prefill(prompts)          with core's reference `forward_cached`;
        caches[:, rows, :, :P] = cache                     insert their keys and values into the slots;
        token₀ = choose(logits, fold_in(key(seed), 0))     sample each one's first token
    step(w, W)                                             slots 0..w-1, busy or idle, one token on,
        logits, caches = decode.decode_step(tokens, positions, window=W)    attending positions < W;
        tokenᵢ = choose(logits, fold_in(key_s, i))         i = the slot's own step index

`choose` penalises each row by its own counts and prompt mask, then samples each row with its own
key and settings (`sampling.penalize`, `sample_rows`, `top_logprobs`): row s of a step reads and
writes only row s, so a request's tokens do not depend on which slot it holds, nor on what the other
slots hold. Idle slots ride along; their results are ignored, and their stale cache entries stay
masked (a slot's keys past its position are never attended) until an admission overwrites them.
Whether a row also computes the same numbers at every (w, W), and a request in an admission of k,
depends on the backend's kernels: shapes.py finds the shapes that do on this machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core import sampling
from microgpt_core.cache import init_cache
from microgpt_core.config import GPTConfig
from microgpt_core.params import Params
from microgpt_infer.engine import decode
from microgpt_infer.engine.options import compiler_options

__all__ = [
    "Draw",
    "Programs",
    "Settings",
    "Slots",
    "choose",
    "init_slots",
    "programs",
    "NEUTRAL",
]


class Settings(NamedTuple):
    """Sampling settings, one entry per row, (N,) each (or () for one request being admitted).

    top_k 0, top_p 1 and min_p 0 are off; presence 0, frequency 0 and repetition 1 are neutral.
    """

    temperature: jax.Array  # float32
    top_k: jax.Array  # int32
    top_p: jax.Array  # float32
    min_p: jax.Array  # float32
    presence: jax.Array  # float32
    frequency: jax.Array  # float32
    repetition: jax.Array  # float32


NEUTRAL = Settings(
    temperature=np.float32(0.0),
    top_k=np.int32(0),
    top_p=np.float32(1.0),
    min_p=np.float32(0.0),
    presence=np.float32(0.0),
    frequency=np.float32(0.0),
    repetition=np.float32(1.0),
)  # fmt: skip - greedy, no filter, no penalty: what idle and padding rows hold


class Slots(NamedTuple):
    """The engine's device state: N slots of up to S = max_len positions.

    Attributes:
      caches: per-layer keys and values (`decode.LayerCaches`, in bits), L arrays (N, Hkv, S, Dh).
      tokens: (N,) int32 each slot's last token, fed at the next step.
      positions: (N,) int32 the position of `tokens`.
      steps: (N,) int32 the index i of the next token to sample (its key is fold_in(key, i)).
      keys: (N,) typed keys, jax.random.key(seed) of each slot's request.
      settings: `Settings` of (N,) arrays.
      counts: (N, V) int32 how often each token was generated (presence and frequency penalties).
      in_prompt: (N, V) bool the prompt's tokens (with `counts` > 0: the repetition penalty's set).
    """

    caches: decode.LayerCaches
    tokens: jax.Array
    positions: jax.Array
    steps: jax.Array
    keys: jax.Array
    settings: Settings
    counts: jax.Array
    in_prompt: jax.Array


class Draw(NamedTuple):
    """What one program chose, per row (B = 1 for an admission, N for a step).

    Attributes:
      tokens: (B,) int32 the sampled tokens.
      logprobs: (B,) float32 their log-probabilities under the raw logits.
      top_ids: (B, K) int32 the K most likely tokens under the raw logits, best first.
      top_logprobs: (B, K) float32 their log-probabilities.
    """

    tokens: jax.Array
    logprobs: jax.Array
    top_ids: jax.Array
    top_logprobs: jax.Array


def init_slots(config: GPTConfig, slots: int, max_len: int) -> Slots:
    """N empty slots (all idle: position 0, neutral settings). Every array is a buffer of its own,
    since the programs donate them all."""
    V = config.vocab_size
    f32 = lambda value: jnp.full((slots,), value, jnp.float32)  # noqa: E731
    i32 = lambda: jnp.zeros((slots,), jnp.int32)  # noqa: E731
    settings = Settings(f32(0.0), i32(), f32(1.0), f32(0.0), f32(0.0), f32(0.0), f32(1.0))
    return Slots(
        caches=decode.split_cache(init_cache(config, slots, max_len)),  # L x (N, Hkv, S, Dh)
        tokens=i32(), positions=i32(), steps=i32(),
        keys=jax.random.split(jax.random.key(0), slots),  # (N,) replaced at admission
        settings=settings,
        counts=jnp.zeros((slots, V), jnp.int32),  # (N, V)
        in_prompt=jnp.zeros((slots, V), bool),  # (N, V)
    )  # fmt: skip


def choose(logits, keys, steps, settings: Settings, counts, in_prompt, *, top_k: int):
    """Each row's next token, its log-probability and the top-K alternatives; the counts updated.

        z' = penalize(z, counts, in_prompt)             presence, frequency, repetition per row
        token = sample_rows(z', fold_in(key, step))     temperature, top-k, top-p, min-p per row
        logprob = log softmax(z)[token]                 of the RAW logits z, as OpenAI reports them

    Args:
      logits: (B, V) raw logits z; keys: (B,) typed keys; steps: (B,) int32 token indices.
      settings: `Settings` of (B,) arrays; counts: (B, V) int32; in_prompt: (B, V) bool.
      top_k: K, how many alternatives to return (static).
    Returns:
      (`Draw`, counts (B, V) with each row's new token counted).

    A single row is chosen as the first of two copies of it: XLA's CPU backend reduces a (1, V)
    array in another order than a (B, V) one, so a lone row's log-probabilities would round
    differently from the same row's among others (shapes.py).
    """
    if logits.shape[0] == 1:
        twice = lambda a: jnp.concatenate([a, a])  # noqa: E731
        draw, counts = choose(
            *jax.tree.map(twice, (logits, keys, steps, settings, counts, in_prompt)), top_k=top_k
        )
        return jax.tree.map(lambda a: a[:1], draw), counts[:1]
    s = settings
    z = sampling.penalize(
        logits, counts, in_prompt, presence=s.presence, frequency=s.frequency, repetition=s.repetition
    )  # (B, V)
    row_keys = jax.vmap(jax.random.fold_in)(keys, steps)  # (B,) one key per row and token
    tokens = sampling.sample_rows(z, row_keys, s.temperature, s.top_k, s.top_p, s.min_p)  # (B,)
    chosen, ids, values = sampling.top_logprobs(logits, tokens, top_k)  # (B,), (B, K), (B, K)
    counts = counts.at[jnp.arange(tokens.shape[0]), tokens].add(1)  # (B, V)
    return Draw(tokens.astype(jnp.int32), chosen, ids.astype(jnp.int32), values), counts


def admit(params: Params, slots: Slots, rows, prompts, lengths, seeds, settings: Settings, *, config, top_k):
    """Prefills k requests into the slots `rows`, one batch, and samples each one's first token.

    Args:
      params: model parameters.
      slots: the engine's `Slots` (donated: updated in place).
      rows: (k,) int32 the free slots; a row whose slot is N (past the last) is padding: its
        results are dropped.
      prompts: (k, P) int32, the prompts right-padded to the bucket width P <= max_len.
      lengths: (k,) int32 their true lengths (>= 1).
      seeds: (k,) uint32 the requests' seeds; a request's key is jax.random.key(seed).
      settings: `Settings` of (k,) arrays.
    Returns:
      (the slots with each request in its slot, the `Draw` of the k rows).
    """
    (k, P), V = prompts.shape, config.vocab_size
    logits, cache = sampling.prefill(params, config, prompts, lengths, 1)  # (k, V); cache P long
    insert = lambda c, new: c.at[rows, :, :P].set(decode.bits(new), mode="drop")  # noqa: E731
    caches = decode.LayerCaches(
        k=tuple(map(insert, slots.caches.k, cache.k)), v=tuple(map(insert, slots.caches.v, cache.v))
    )  # L x (N, Hkv, S, Dh) bits: positions 0..P-1 of each admitted slot replaced
    ids = jnp.where(jnp.arange(P) < lengths[:, None], prompts, V)  # (k, P) padding -> V, dropped below
    in_prompt = jnp.zeros((k, V), bool).at[jnp.arange(k)[:, None], ids].set(True, mode="drop")  # (k, V)
    keys = jax.vmap(jax.random.key)(seeds)  # (k,)
    draw, counts = choose(
        logits, keys, jnp.zeros((k,), jnp.int32), settings, jnp.zeros((k, V), jnp.int32), in_prompt,
        top_k=top_k,
    )  # fmt: skip
    put = lambda a, value: a.at[rows].set(value, mode="drop")  # noqa: E731
    slots = Slots(
        caches=caches,
        tokens=put(slots.tokens, draw.tokens),
        positions=put(slots.positions, lengths),  # token 0 sits right after the prompt
        steps=put(slots.steps, jnp.ones((k,), jnp.int32)),
        keys=put(slots.keys, keys),
        settings=jax.tree.map(put, slots.settings, settings),
        counts=put(slots.counts, counts),
        in_prompt=put(slots.in_prompt, in_prompt),
    )
    return slots, draw


def step(
    params: Params, weights: decode.DecodeWeights, slots: Slots, *, config, top_k, width=None, window=None
):
    """One decode step of the first `width` slots over their first `window` positions: feed each
    slot's last token, sample its next one.

    Args:
      params: model parameters (the embeddings and final norm are read from here).
      weights: `decode.decode_weights(params, config)`, sliced once when the engine starts.
      slots: the engine's `Slots` (donated: updated in place).
      width: w, how many slots step (static; default all N). Slots >= w are left as they are.
      window: W, how many cache positions they attend (static; default all S): each stepped slot's
        position must be <= W.
    Returns:
      (the slots, the first w one token on; the `Draw` of the w slots, whose idle rows mean nothing).
    """
    N, S = slots.tokens.shape[0], slots.caches.k[0].shape[2]
    w = N if width is None else width
    first = lambda a: a[:w]  # noqa: E731 - the stepped rows
    put = lambda a, rows: jax.lax.dynamic_update_slice_in_dim(a, rows, 0, axis=0)  # noqa: E731
    positions = first(slots.positions)  # (w,)
    logits, caches = decode.decode_step(
        params, weights, slots.caches, first(slots.tokens)[:, None], positions, config, window=window
    )  # (w, 1, V) logits; the caches' rows < w written
    draw, counts = choose(
        logits[:, 0], first(slots.keys), first(slots.steps), jax.tree.map(first, slots.settings),
        first(slots.counts), first(slots.in_prompt), top_k=top_k,
    )  # fmt: skip
    slots = slots._replace(
        caches=caches,
        tokens=put(slots.tokens, draw.tokens),
        positions=put(slots.positions, jnp.minimum(positions + 1, S - 1)),  # idle slots stay inside
        steps=put(slots.steps, first(slots.steps) + 1),
        counts=put(slots.counts, counts),
    )
    return slots, draw


class Programs(NamedTuple):
    """The jitted programs of one model: `admit` (one compilation per prompt width), `step` (one per
    width and window), and, run once per engine, `cast` (`decode.cast_matrices`: the parameters
    `admit` reads) and `weights` (`decode.decode_weights`: those `step` reads)."""

    admit: Callable[..., Any]
    step: Callable[..., Any]
    cast: Callable[..., Any]
    weights: Callable[..., Any]


def programs(config: GPTConfig) -> Programs:
    """The programs, compiled with the decode options for `config` on this backend (`options.py`);
    the slots are donated, so XLA updates the caches in place."""
    return _programs(tuple(sorted(compiler_options(config).items())))


@functools.cache
def _programs(options: tuple[tuple[str, Any], ...]) -> Programs:
    jit = functools.partial(
        jax.jit,
        donate_argnames=("slots",),
        compiler_options=dict(options),
    )
    return Programs(
        admit=jit(admit, static_argnames=("config", "top_k")),
        step=jit(step, static_argnames=("config", "top_k", "width", "window")),
        cast=jax.jit(decode.cast_matrices, static_argnames=("config",)),
        weights=jax.jit(decode.decode_weights, static_argnames=("config",)),
    )
