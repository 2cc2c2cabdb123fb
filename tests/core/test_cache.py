"""KV cache: prefill plus one-token decoding equals the full forward, rows of different lengths in a batch,
with the cache in either form (stacked, as prefill uses it; per layer, as the decode loop carries it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core import KVCache, init_cache, init_params
from microgpt_core.cache import decode_weights, split_cache, stack_cache
from microgpt_core.layers import Transposed
from tests.conftest import config_strategy

T = 16


@settings(max_examples=5)
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

    # Decode the rest one token per step, each row at its own position, with both cache forms.
    caches = {"stacked": cache, "per layer": split_cache(cache)}
    positions = lengths.copy()
    while positions.min() < T:
        step = np.minimum(positions, T - 1)
        token = tokens[np.arange(B), step][:, None]
        for form, cache in caches.items():
            step_positions = jnp.asarray(step, jnp.int32)
            logits, caches[form] = jit_forward_cached(params, cache, token, step_positions, config)
            logits = np.asarray(logits)
            for b in range(B):
                if positions[b] < T:
                    np.testing.assert_allclose(logits[b, 0], full[b, positions[b]], atol=1e-4, err_msg=form)
        positions += 1
    stacked = stack_cache(caches["per layer"])
    np.testing.assert_allclose(stacked.k, caches["stacked"].k, atol=1e-5)
    np.testing.assert_allclose(stacked.v, caches["stacked"].v, atol=1e-5)


@pytest.mark.parametrize("form", [lambda c: c, split_cache], ids=["stacked", "per-layer"])
def test_chunked_prefill_equals_the_full_forward(
    jit_forward, jit_forward_cached, tiny_config, tiny_params, form
):
    tokens = jax.random.randint(jax.random.key(5), (2, 20), 0, tiny_config.vocab_size)
    full = jit_forward(tiny_params, tokens, tiny_config)
    cache = form(init_cache(tiny_config, 2, 20))
    first, cache = jit_forward_cached(tiny_params, cache, tokens[:, :8], jnp.zeros(2, jnp.int32), tiny_config)
    rest, _ = jit_forward_cached(tiny_params, cache, tokens[:, 8:], jnp.full(2, 8, jnp.int32), tiny_config)
    np.testing.assert_allclose(jnp.concatenate([first, rest], axis=1), full, atol=1e-4)


def test_cache_holds_the_keys_written_and_nothing_else(jit_forward_cached, tiny_config, tiny_params):
    cache = init_cache(tiny_config, 2, 10)
    assert isinstance(cache, KVCache)
    assert cache.k.shape == (2, 2, 4, 10, 8)  # (L, B, H, S, Dh)
    tokens = jnp.ones((2, 1), jnp.int32)
    _, cache = jit_forward_cached(tiny_params, cache, tokens, jnp.array([3, 7], jnp.int32), tiny_config)
    written = np.abs(np.asarray(cache.k)).sum(axis=(0, 2, 4))  # (B, S)
    assert set(np.flatnonzero(written[0])) == {3} and set(np.flatnonzero(written[1])) == {7}


def test_per_layer_cache_holds_the_keys_written_and_nothing_else(
    jit_forward_cached, tiny_config, tiny_params
):
    cache = split_cache(init_cache(tiny_config, 2, 10))
    assert len(cache.k) == len(cache.v) == 2 and cache.k[0].shape == (2, 4, 10, 8)  # L x (B, H, S, Dh)
    tokens = jnp.ones((2, 1), jnp.int32)
    _, cache = jit_forward_cached(tiny_params, cache, tokens, jnp.array([3, 7], jnp.int32), tiny_config)
    assert isinstance(cache.k, tuple) and len(cache.k) == 2  # the form is kept
    written = np.abs(np.asarray(stack_cache(cache).v)).sum(axis=(0, 2, 4))  # (B, S)
    assert set(np.flatnonzero(written[0])) == {3} and set(np.flatnonzero(written[1])) == {7}


def test_init_cache_rejects_lengths_beyond_the_context(tiny_config):
    with pytest.raises(ValueError, match=r"max_len must be in \[1, context_length=32\], got 33"):
        init_cache(tiny_config, 1, 33)
    with pytest.raises(ValueError, match="got 0"):
        init_cache(tiny_config, 1, 0)


def _as_stored(w) -> np.ndarray:
    """The (Din, Dout) matrix a decode weight stands for."""
    return np.asarray(w.t).T if isinstance(w, Transposed) else np.asarray(w)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("batch", [1, 2])
def test_decode_weights_hold_the_parameters_in_another_order(tiny_config, batch, tie):
    config = tiny_config.replace(tie_embeddings=tie)
    params = init_params(jax.random.key(0), config)
    weights = decode_weights(params, config, batch)
    assert len(weights.layers) == config.n_layers
    for i, layer in enumerate(weights.layers):
        held = jax.tree_util.tree_leaves(
            jax.tree_util.tree_map(_as_stored, layer, is_leaf=lambda w: isinstance(w, Transposed))
        )
        stored = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, i=i: a[i], params["blocks"]))
        assert len(held) == len(stored)
        for h, s in zip(held, stored, strict=True):
            np.testing.assert_array_equal(h, s)  # the same numbers, exactly
    head = params["embed"]["tokens"].T if tie else params["head"]["w"]  # (D, V)
    np.testing.assert_array_equal(_as_stored(weights.head), head)
    if jax.default_backend() == "cpu":  # the layouts measured fastest there (bench/decode_layout.py)
        assert not isinstance(weights.head, Transposed)  # (D, V), a tied E copied
        for layer in weights.layers:
            assert isinstance(layer["attn"]["w_out"], Transposed) == (batch == 1)
            assert isinstance(layer["mlp"]["w_out"], Transposed) == (batch == 1)
            assert not isinstance(layer["mlp"]["w_in"], Transposed)


@pytest.mark.parametrize("batch", [1, 3])
def test_decoding_with_decode_weights_equals_decoding_with_the_parameters(
    jit_forward_cached, tiny_config, tiny_params, batch
):
    tokens = jax.random.randint(jax.random.key(7), (batch, 6), 0, tiny_config.vocab_size)
    cache = split_cache(init_cache(tiny_config, batch, 8))
    _, cache = jit_forward_cached(tiny_params, cache, tokens[:, :5], jnp.zeros(batch, jnp.int32), tiny_config)
    positions = jnp.full(batch, 5, jnp.int32)
    weights = decode_weights(tiny_params, tiny_config, batch)
    plain, plain_cache = jit_forward_cached(tiny_params, cache, tokens[:, 5:], positions, tiny_config)
    laid_out, laid_out_cache = jit_forward_cached(
        tiny_params, cache, tokens[:, 5:], positions, tiny_config, weights=weights
    )
    np.testing.assert_allclose(laid_out, plain, atol=1e-5)
    np.testing.assert_allclose(stack_cache(laid_out_cache).k, stack_cache(plain_cache).k, atol=1e-6)
