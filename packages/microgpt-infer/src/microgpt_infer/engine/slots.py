"""The slot engine's two device programs: prefill a request into a slot, and one decode step for all.

The engine (batching.py) keeps N decode slots on the device, each able to hold one request of up to
`max_len` positions. Everything here has fixed shapes, so each program compiles once (the prefill
once per prompt bucket width P), whatever the requests:

    admit(slot, prompt (1, P), length, seed, settings)     prefill one request, batch 1, with core's
        logits, cache = sampling.prefill(prompt)           reference `forward_cached` (cache P long);
        caches[:, slot, :, :P] = cache                     insert its keys and values into the slot;
        token₀ = choose(logits, fold_in(key(seed), 0))     sample its first token
    step()                                                 every slot, busy or idle, one token on:
        logits, caches = decode.decode_step(tokens, positions)
        tokenᵢ = choose(logits, fold_in(key_s, i))         i = the slot's own step index

`choose` penalises each row by its own counts and prompt mask, then samples each row with its own
key and settings (`sampling.penalize`, `sample_rows`, `top_logprobs`): row s of a step reads and
writes only row s, so a request's tokens do not depend on which slot it holds, nor on what the other
slots hold. Idle slots ride along; their results are ignored, and their stale cache entries stay
masked (a slot's keys past its position are never attended) until an admission overwrites them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from microgpt_core import sampling
from microgpt_core.cache import init_cache
from microgpt_core.config import GPTConfig
from microgpt_core.params import Params
from microgpt_infer.engine import decode
from microgpt_infer.engine.options import compiler_options

__all__ = ["Draw", "Programs", "Settings", "Slots", "choose", "init_slots", "programs"]


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


class Slots(NamedTuple):
    """The engine's device state: N slots of up to S = max_len positions.

    Attributes:
      caches: per-layer keys and values (`decode.LayerCaches`), L arrays (N, Hkv, S, Dh) each.
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
    """
    s = settings
    z = sampling.penalize(
        logits, counts, in_prompt, presence=s.presence, frequency=s.frequency, repetition=s.repetition
    )  # (B, V)
    row_keys = jax.vmap(jax.random.fold_in)(keys, steps)  # (B,) one key per row and token
    tokens = sampling.sample_rows(z, row_keys, s.temperature, s.top_k, s.top_p, s.min_p)  # (B,)
    chosen, ids, values = sampling.top_logprobs(logits, tokens, top_k)  # (B,), (B, K), (B, K)
    counts = counts.at[jnp.arange(tokens.shape[0]), tokens].add(1)  # (B, V)
    return Draw(tokens.astype(jnp.int32), chosen, ids.astype(jnp.int32), values), counts


def admit(params: Params, slots: Slots, slot, prompt, length, seed, settings: Settings, *, config, top_k):
    """Prefills one request into slot `slot` and samples its first token (token 0).

    Args:
      params: model parameters.
      slots: the engine's `Slots` (donated: updated in place).
      slot: () int32 the free slot.
      prompt: (1, P) int32, the prompt right-padded to its bucket width P <= max_len.
      length: (1,) int32 its true length.
      seed: () uint32 the request's seed; its key is jax.random.key(seed).
      settings: `Settings` of () arrays.
    Returns:
      (the slots with the request in `slot`, its `Draw` of one row).
    """
    V, P = config.vocab_size, prompt.shape[1]
    logits, cache = sampling.prefill(params, config, prompt, length, 1)  # (1, V); cache P long
    at = (slot, 0, 0, 0)
    caches = decode.LayerCaches(
        k=tuple(jax.lax.dynamic_update_slice(c, cache.k[i], at) for i, c in enumerate(slots.caches.k)),
        v=tuple(jax.lax.dynamic_update_slice(c, cache.v[i], at) for i, c in enumerate(slots.caches.v)),
    )  # L x (N, Hkv, S, Dh): positions 0..P-1 of the slot replaced
    ids = jnp.where(jnp.arange(P) < length[0], prompt[0], V)  # (P,) padding -> V, dropped below
    in_prompt = jnp.zeros((1, V), bool).at[0, ids].set(True, mode="drop")  # (1, V)
    key = jax.random.key(seed)
    one = jax.tree.map(lambda a: a[None], settings)  # (1,) each
    draw, counts = choose(
        logits, key[None], jnp.zeros((1,), jnp.int32), one, jnp.zeros((1, V), jnp.int32), in_prompt,
        top_k=top_k,
    )  # fmt: skip
    put = lambda a, value: a.at[slot].set(value)  # noqa: E731
    slots = Slots(
        caches=caches,
        tokens=put(slots.tokens, draw.tokens[0]),
        positions=put(slots.positions, length[0]),  # token 0 sits right after the prompt
        steps=put(slots.steps, 1),
        keys=put(slots.keys, key),
        settings=jax.tree.map(put, slots.settings, settings),
        counts=put(slots.counts, counts[0]),
        in_prompt=put(slots.in_prompt, in_prompt[0]),
    )
    return slots, draw


def step(params: Params, weights: decode.DecodeWeights, slots: Slots, *, config, top_k):
    """One decode step of every slot: feed each slot's last token, sample its next one.

    Args:
      params: model parameters (the embeddings and final norm are read from here).
      weights: `decode.decode_weights(params, config)`, sliced once when the engine starts.
      slots: the engine's `Slots` (donated: updated in place).
    Returns:
      (the slots one token on, the `Draw` of every slot; idle slots' rows mean nothing).
    """
    S = slots.caches.k[0].shape[2]
    tokens = slots.tokens[:, None]  # (N, 1)
    logits, caches = decode.decode_step(params, weights, slots.caches, tokens, slots.positions, config)
    draw, counts = choose(
        logits[:, 0], slots.keys, slots.steps, slots.settings, slots.counts, slots.in_prompt, top_k=top_k
    )  # (N, V) logits in
    slots = slots._replace(
        caches=caches,
        tokens=draw.tokens,
        positions=jnp.minimum(slots.positions + 1, S - 1),  # idle slots stay inside the cache
        steps=slots.steps + 1,
        counts=counts,
    )
    return slots, draw


class Programs(NamedTuple):
    """The jitted programs of one model: `admit` (one compilation per prompt width), `step`, and
    `weights` (`decode.decode_weights`, run once per engine)."""

    admit: Callable[..., Any]
    step: Callable[..., Any]
    weights: Callable[..., Any]


def programs(config: GPTConfig) -> Programs:
    """The programs, compiled with the decode options for `config` on this backend (`options.py`);
    the slots are donated, so XLA updates the caches in place."""
    return _programs(tuple(sorted(compiler_options(config).items())))


@functools.cache
def _programs(options: tuple[tuple[str, Any], ...]) -> Programs:
    jit = functools.partial(
        jax.jit,
        static_argnames=("config", "top_k"),
        donate_argnames=("slots",),
        compiler_options=dict(options),
    )
    return Programs(
        admit=jit(admit),
        step=jit(step),
        weights=jax.jit(decode.decode_weights, static_argnames=("config",)),
    )
