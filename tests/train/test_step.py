"""The compiled step: gradient accumulation equals the large batch, donation, dropout keys, AdamW."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from microgpt_core import GPTConfig
from microgpt_train import decay_mask, init_state, learning_rate_schedule, make_optimizer, make_train_step
from microgpt_train.config import preset
from microgpt_train.step import loss_fn, split_micro_batches

CONFIG = GPTConfig(vocab_size=64, context_length=16, d_model=32, n_layers=2, n_heads=2)


def _batch(rows: int, seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (rows, CONFIG.context_length + 1), 0, CONFIG.vocab_size)


def test_split_micro_batches_is_strided():
    batch = jnp.arange(8)[:, None] * jnp.ones((1, 3), jnp.int32)
    micro = split_micro_batches(batch, 4)
    assert micro.shape == (4, 2, 3)
    np.testing.assert_array_equal(micro[1, :, 0], [1, 5])


def test_grad_accum_equals_the_large_batch():
    run = preset("quickstart").merge({"model": CONFIG.to_dict(), "batch_size": 8, "sample_tokens": 8})
    optimizer = make_optimizer(run)
    batch = _batch(8)
    results = []
    for accum in (1, 4):
        state = init_state(jax.random.PRNGKey(0), CONFIG, optimizer)
        step = make_train_step(CONFIG, optimizer, grad_accum=accum)
        state, metrics = step(state, batch)
        results.append((state, metrics))
    (s1, m1), (s4, m4) = results
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s4["params"]), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_step_donates_and_keeps_shapes_and_dtypes():
    run = preset("quickstart").merge({"model": CONFIG.to_dict(), "sample_tokens": 8})
    optimizer = make_optimizer(run)
    state = init_state(jax.random.PRNGKey(0), CONFIG, optimizer)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    old = state["params"]["blocks"]["attn"]["w_qkv"]
    new, metrics = make_train_step(CONFIG, optimizer)(state, _batch(4))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), new) == shapes
    assert old.is_deleted()  # donated
    assert int(new["step"]) == 1
    assert np.isfinite(float(metrics["loss"]))


def test_dropout_depends_on_the_step_only():
    config = CONFIG.replace(dropout=0.5)
    params = init_state(jax.random.PRNGKey(0), config, optax.sgd(0.1))["params"]
    batch = _batch(2)
    a = loss_fn(params, batch, config, jax.random.fold_in(jax.random.PRNGKey(1), 3), True)
    b = loss_fn(params, batch, config, jax.random.fold_in(jax.random.PRNGKey(1), 3), True)
    c = loss_fn(params, batch, config, jax.random.fold_in(jax.random.PRNGKey(1), 4), True)
    assert float(a) == float(b) != float(c)


def test_no_weight_decay_on_norms_biases_embeddings():
    params = init_state(jax.random.PRNGKey(0), CONFIG.replace(tie_embeddings=False), optax.sgd(0.1))["params"]
    mask = decay_mask(params)
    assert mask["blocks"]["attn"]["w_qkv"] and mask["blocks"]["mlp"]["w_out"] and mask["head"]["w"]
    assert not mask["embed"]["tokens"] and not mask["embed"]["positions"]
    assert not mask["blocks"]["ln1"]["scale"] and not mask["blocks"]["attn"]["b_qkv"]
    assert not mask["final_norm"]["bias"]


@pytest.mark.parametrize("steps", [50, 200])
def test_schedule_follows_max_steps(steps):
    run = preset("quickstart").merge({"max_steps": steps, "warmup_steps": 10, "learning_rate": 1e-3})
    schedule = learning_rate_schedule(run)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(10)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(steps)), 1e-4, rtol=1e-5)
    assert float(schedule(steps // 2 + 5)) < 1e-3
