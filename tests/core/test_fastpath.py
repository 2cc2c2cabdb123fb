"""The fast decode path equals the reference path: `fastpath.decode_step` gives the logits and cache of
`cache.forward_cached` (and so of `model.forward`), and the XLA options, the unrolled layer loop and
`keep_host_memory` change no result."""

import os
import platform
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core import cross_entropy, forward, init_cache, init_params
from microgpt_core.fastpath import (
    KEEP_HOST_MEMORY_ENV,
    compiler_options,
    decode_step,
    decode_weights,
    keep_host_memory,
    layer_unroll,
    split_cache,
)
from tests.conftest import config_strategy

T = 16


@pytest.fixture(scope="session")
def jit_decode_step():
    """`decode_step` with the decode weights taken inside, as the generation takes them."""

    def step(params, cache, tokens, positions, config):
        return decode_step(params, decode_weights(params, config), cache, tokens, positions, config)

    return jax.jit(step, static_argnames=("config",))


def stacked(layer_caches):
    return np.stack(layer_caches.k), np.stack(layer_caches.v)


@settings(max_examples=5)
@given(config=config_strategy(st), data=st.data())
def test_decode_steps_equal_the_reference_path(
    jit_forward, jit_forward_cached, jit_decode_step, config, data
):
    params = init_params(jax.random.key(0), config)
    B = 3
    tokens = np.random.default_rng(data.draw(st.integers(0, 99))).integers(0, config.vocab_size, (B, T))
    tokens = tokens.astype(np.int32)
    lengths = np.asarray(data.draw(st.lists(st.integers(1, T - 1), min_size=B, max_size=B)))
    full = np.asarray(jit_forward(params, tokens, config))  # (B, T, V)
    reference = init_cache(config, B, T)
    _, reference = jit_forward_cached(params, reference, tokens[:, : T - 1], jnp.zeros(B, jnp.int32), config)
    fast = split_cache(reference)

    positions = lengths.copy()  # each row decodes from its own prompt length
    while positions.min() < T:
        step = jnp.asarray(np.minimum(positions, T - 1), jnp.int32)
        token = tokens[np.arange(B), np.asarray(step)][:, None]  # (B, 1)
        want, reference = jit_forward_cached(params, reference, token, step, config)
        got, fast = jit_decode_step(params, fast, token, step, config)
        np.testing.assert_allclose(got, want, atol=1e-5)
        for b in np.flatnonzero(positions < T):
            np.testing.assert_allclose(np.asarray(got)[b, 0], full[b, positions[b]], atol=1e-4)
        positions += 1
    for fast_half, reference_half in zip(stacked(fast), reference, strict=True):
        np.testing.assert_allclose(fast_half, reference_half, atol=1e-6)


def test_a_chunk_of_several_tokens_equals_the_full_forward(
    jit_forward, jit_forward_cached, jit_decode_step, tiny_config, tiny_params
):
    # Rows at different positions, each attending its cache and the chunk causally (M₂ of the blocks).
    tokens = jax.random.randint(jax.random.key(5), (2, 20), 0, tiny_config.vocab_size)
    full = np.asarray(jit_forward(tiny_params, tokens, tiny_config))
    cache = init_cache(tiny_config, 2, 20)
    _, cache = jit_forward_cached(tiny_params, cache, tokens[:, :8], jnp.zeros(2, jnp.int32), tiny_config)
    starts = jnp.array([8, 5], jnp.int32)  # row 1 rewrites slots 5..11: stale slots are overwritten
    chunk = jnp.stack([tokens[0, 8:15], tokens[1, 5:12]])  # (2, 7)
    logits, _ = jit_decode_step(tiny_params, split_cache(cache), chunk, starts, tiny_config)
    np.testing.assert_allclose(logits[0], full[0, 8:15], atol=1e-4)
    np.testing.assert_allclose(logits[1], full[1, 5:12], atol=1e-4)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_decode_weights_hold_the_parameters(tiny_config, tie):
    config = tiny_config.replace(tie_embeddings=tie)
    params = init_params(jax.random.key(0), config)
    weights = decode_weights(params, config)
    assert len(weights.layers) == config.n_layers
    for i, layer in enumerate(weights.layers):
        want = jax.tree.map(lambda a, i=i: a[i], params["blocks"])
        assert jax.tree.structure(layer) == jax.tree.structure(want)
        for got, expected in zip(jax.tree.leaves(layer), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(got, expected)  # the same numbers, exactly
    head = params["embed"]["tokens"].T if tie else params["head"]["w"]  # (D, V)
    np.testing.assert_array_equal(weights.head, head)


def test_the_split_cache_is_the_same_numbers(tiny_config):
    cache = init_cache(tiny_config, 2, 10)
    cache = cache._replace(k=jax.random.normal(jax.random.key(1), cache.k.shape))
    layers = split_cache(cache)
    assert len(layers.k) == tiny_config.n_layers and layers.k[0].shape == (2, 4, 10, 8)  # (B, H, S, Dh)
    np.testing.assert_array_equal(np.stack(layers.k), cache.k)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("decode", [False, True], ids=["forward", "decode"])
def test_compiler_options_change_no_result(tiny_config, tiny_params, dtype, decode):
    config = tiny_config.replace(compute_dtype=dtype)
    tokens = jax.random.randint(jax.random.key(3), (2, 8), 0, config.vocab_size)
    plain = jax.jit(lambda p, t: forward(p, t, config))(tiny_params, tokens)
    options = compiler_options(config, decode=decode)
    tuned = jax.jit(lambda p, t: forward(p, t, config), compiler_options=options)(tiny_params, tokens)
    np.testing.assert_allclose(tuned, plain, atol=1e-5 if dtype == "float32" else 2e-2)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_unrolled_layer_loop_gives_the_same_loss_and_gradients(tiny_config, tiny_params, dtype):
    """`unroll=True` (what `layer_unroll` picks on CPU) against the rolled scan, dropout included:
    each block gets the same key either way."""
    config = tiny_config.replace(compute_dtype=dtype, dropout=0.1)
    tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, config.vocab_size)

    def loss(params, unroll):
        logits = forward(params, tokens[:, :-1], config, rng=jax.random.key(5), train=True, unroll=unroll)
        return cross_entropy(logits, tokens[:, 1:])

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (rolled, rolled_grads), (unrolled, unrolled_grads) = grad(tiny_params, 1), grad(tiny_params, True)
    tolerance = 1e-5 if dtype == "float32" else 1e-3
    np.testing.assert_allclose(unrolled, rolled, rtol=tolerance)
    for a, b in zip(jax.tree.leaves(unrolled_grads), jax.tree.leaves(rolled_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * 1e-2)


def test_layer_unroll_unrolls_up_to_twelve_layers_on_cpu(tiny_config):
    assert jax.default_backend() == "cpu"
    assert layer_unroll(tiny_config) is True
    assert layer_unroll(tiny_config.replace(n_layers=12)) is True
    assert layer_unroll(tiny_config.replace(n_layers=13)) == 1


# A 64 MB buffer inside one executable (as a train step's logits are): the page faults of the last 20
# of 80 calls. With the memory kept, the heap grows for the first few calls (more on a busy machine,
# where buffers are freed later) and then stops; without, every call faults every page.
_FAULTS = textwrap.dedent("""
    import resource, sys
    from microgpt_core.fastpath import keep_host_memory
    kept = keep_host_memory()
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x, z: jnp.sin(x[:, None] * x[None, :]) @ z)  # a (4096, 4096) float32 temporary
    x, z = jnp.linspace(0, 1, 4096), jnp.ones((4096, 8))
    for _ in range(60):
        f(x, z).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        f(x, z).block_until_ready()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(**env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_host_memory sets glibc's malloc")
def test_keep_host_memory_lets_a_second_call_reuse_the_first_calls_pages():
    """With it, most of 20 calls with a 64 MB temporary (16,384 pages of 4 KiB each) fault no page in
    again (glibc's default: every page of every call, 327,680); off with MICROGPT_KEEP_HOST_MEMORY=0."""
    kept, faults = _faults(**{KEEP_HOST_MEMORY_ENV: "1"})
    assert kept == "True" and faults < 5 * 16_384, faults
    kept, _ = _faults(**{KEEP_HOST_MEMORY_ENV: "0"})
    assert kept == "False"


def test_keep_host_memory_does_nothing_once_the_backends_exist():
    jax.devices()  # this test process has used JAX already
    assert keep_host_memory() is False


def test_keep_host_memory_refuses_a_setting_it_does_not_know(monkeypatch):
    monkeypatch.setenv(KEEP_HOST_MEMORY_ENV, "yes")
    with pytest.raises(ValueError, match="MICROGPT_KEEP_HOST_MEMORY must be 0 or 1, got 'yes'"):
        keep_host_memory()
