"""KV cache (the reference path): prefill plus one-token decoding equals the full forward, with rows of
different lengths in a batch. tests/infer/test_engine.py tests the engine's decode step against it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core import KVCache, init_cache, init_params
from tests.conftest import config_strategy

T = 16


@settings(max_examples=3)
@given(config=config_strategy(st), data=st.data())
def test_prefill_then_decode_equals_the_full_forward(jit_forward, jit_forward_cached, config, data):
    params = init_params(jax.random.key(0), config)
    B = 3
    seed = data.draw(st.integers(0, 99))
    tokens = np.random.default_rng(seed).integers(0, config.vocab_size, (B, T), dtype=np.int32)
    lengths = np.asarray(data.draw(st.lists(st.integers(1, T - 1), min_size=B, max_size=B)))
    full = np.asarray(jit_forward(params, tokens, config))  # (B, T, V)

    # Prefill right-padded prompts of different lengths in one batch (padding is arbitrary tokens);
    # a fixed width P keeps the number of compiled shapes small.
    P = T - 1
    cache = init_cache(config, B, T)
    logits, cache = jit_forward_cached(params, cache, tokens[:, :P], jnp.zeros(B, jnp.int32), config)
    logits = np.asarray(logits)
    for b in range(B):
        np.testing.assert_allclose(logits[b, : lengths[b]], full[b, : lengths[b]], atol=1e-4)

    # Decode the rest one token per step, each row at its own position.
    positions = lengths.copy()
    while positions.min() < T:
        step = np.minimum(positions, T - 1)
        token = tokens[np.arange(B), step][:, None]
        logits, cache = jit_forward_cached(params, cache, token, jnp.asarray(step, jnp.int32), config)
        logits = np.asarray(logits)
        for b in range(B):
            if positions[b] < T:
                np.testing.assert_allclose(logits[b, 0], full[b, positions[b]], atol=1e-4)
        positions += 1


def test_chunked_prefill_equals_the_full_forward(jit_forward, jit_forward_cached, tiny_config, tiny_params):
    tokens = jax.random.randint(jax.random.key(5), (2, 20), 0, tiny_config.vocab_size)
    full = jit_forward(tiny_params, tokens, tiny_config)
    cache = init_cache(tiny_config, 2, 20)
    first, cache = jit_forward_cached(tiny_params, cache, tokens[:, :8], jnp.zeros(2, jnp.int32), tiny_config)
    rest, _ = jit_forward_cached(tiny_params, cache, tokens[:, 8:], jnp.full(2, 8, jnp.int32), tiny_config)
    np.testing.assert_allclose(jnp.concatenate([first, rest], axis=1), full, atol=1e-4)


def test_cache_holds_the_keys_written_and_nothing_else(jit_forward_cached, tiny_config, tiny_params):
    cache = init_cache(tiny_config, 2, 10)
    assert isinstance(cache, KVCache)
    assert cache.k.shape == (2, 2, 4, 10, 8)  # (L, B, Hkv, S, Dh)
    tokens = jnp.ones((2, 1), jnp.int32)
    _, cache = jit_forward_cached(tiny_params, cache, tokens, jnp.array([3, 7], jnp.int32), tiny_config)
    written = np.abs(np.asarray(cache.k)).sum(axis=(0, 2, 4))  # (B, S)
    assert set(np.flatnonzero(written[0])) == {3} and set(np.flatnonzero(written[1])) == {7}


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_the_cache_holds_the_key_value_heads_so_grouping_shrinks_it(tiny_config, n_kv_heads):
    config = tiny_config.replace(n_kv_heads=n_kv_heads)
    cache = init_cache(config, 3, 10)
    assert cache.k.shape == cache.v.shape == (2, 3, n_kv_heads, 10, 8)  # (L, B, Hkv, S, Dh)
    full = init_cache(tiny_config, 3, 10)
    assert full.k.nbytes == cache.k.nbytes * (4 // n_kv_heads)  # H / Hkv times smaller


def test_init_cache_rejects_lengths_beyond_the_context(tiny_config):
    with pytest.raises(ValueError, match=r"max_len must be in \[1, context_length=32\], got 33"):
        init_cache(tiny_config, 1, 33)
    with pytest.raises(ValueError, match="got 0"):
        init_cache(tiny_config, 1, 0)
