"""The compiled step: gradient accumulation equals the large batch, donation, dropout keys, AdamW."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from microgpt_core import GPTConfig, forward, init_params
from microgpt_train import decay_mask, init_state, learning_rate_schedule, make_optimizer, make_train_step
from microgpt_train.config import preset
from microgpt_train.step import layer_unroll, loss_fn, make_eval_step, micro_batches, split_micro_batches

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


def test_micro_batches_bring_each_device_to_the_cpu_token_budget():
    assert jax.default_backend() == "cpu"
    bf16 = {"compute_dtype": "bfloat16"}  # 1,024 tokens per micro-batch; float32: 512
    assert micro_batches(16, 256, **bf16) == 4  # 4 rows x 256 = 1,024 tokens each
    assert micro_batches(16, 256) == 8  # float32: 2 rows each
    assert micro_batches(16, 256, grad_accum=2, **bf16) == 4  # each of the 2 split in 2
    assert micro_batches(16, 256, data_devices=2, **bf16) == 2  # 8 rows per device, in 2 of 4
    assert micro_batches(6, 256, **bf16) == 2  # 3 rows: 768 tokens
    assert micro_batches(4, 2048) == 4  # one row is over the budget already: one row each
    assert micro_batches(8, 16, grad_accum=4) == 4  # small batches stay as asked
    assert micro_batches(16, 256, compute_dtype="float64") == 8  # gradient checks: float32's


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_cpu_split_gives_the_unsplit_step(monkeypatch, dropout):
    """Split into micro-batches of 2 rows (32 tokens) or not at all: the same loss, gradient norm and
    update (dropout draws its masks per micro-batch, so with dropout only the loss stays close)."""
    import microgpt_train.step as step_module

    config = CONFIG.replace(dropout=dropout)
    run = preset("quickstart").merge({"model": config.to_dict(), "batch_size": 8, "sample_tokens": 8})
    optimizer = make_optimizer(run)
    results = []
    for budget in (10**9, 32):
        monkeypatch.setattr(step_module, "CPU_MICRO_TOKENS", {"float32": budget})
        state = init_state(jax.random.PRNGKey(0), config, optimizer)
        evaluated = make_eval_step(config)(state["params"], _batch(8, seed=1))
        results += [make_train_step(config, optimizer)(state, _batch(8)), evaluated]
    (whole, metrics), whole_eval, (split, split_metrics), split_eval = results
    np.testing.assert_allclose(split_eval, whole_eval, rtol=1e-6)
    np.testing.assert_allclose(split_metrics["loss"], metrics["loss"], rtol=1e-6 if dropout == 0 else 0.05)
    if dropout == 0:
        np.testing.assert_allclose(split_metrics["grad_norm"], metrics["grad_norm"], rtol=1e-5)
        for a, b in zip(jax.tree.leaves(split["params"]), jax.tree.leaves(whole["params"]), strict=True):
            np.testing.assert_allclose(a, b, atol=2e-6)


def test_layer_unroll_unrolls_up_to_twelve_layers_on_cpu():
    assert layer_unroll(CONFIG) is True
    assert layer_unroll(CONFIG.replace(n_layers=12)) is True
    assert layer_unroll(CONFIG.replace(n_layers=13)) == 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_unrolled_layer_loop_gives_the_same_loss_and_gradients(dtype):
    """`unroll=True` (what `layer_unroll` picks on CPU) against the rolled scan, dropout included:
    each block gets the same key either way."""
    from microgpt_core import cross_entropy, forward, init_params

    config = CONFIG.replace(compute_dtype=dtype, dropout=0.1)
    params = init_params(jax.random.key(0), config)
    tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, config.vocab_size)

    def loss(params, unroll):
        logits = forward(params, tokens[:, :-1], config, rng=jax.random.key(5), train=True, unroll=unroll)
        return cross_entropy(logits, tokens[:, 1:])

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (rolled, rolled_grads), (unrolled, unrolled_grads) = grad(params, 1), grad(params, True)
    tolerance = 1e-5 if dtype == "float32" else 1e-3
    np.testing.assert_allclose(unrolled, rolled, rtol=tolerance)
    for a, b in zip(jax.tree.leaves(unrolled_grads), jax.tree.leaves(rolled_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * 1e-2)


# ----------------------------------------------------------------------------- a loss mask (chat data)
def _masked(rows: int = 4, seed: int = 1) -> np.ndarray:
    """(rows, 2, T+1): random tokens, and in each row but the last a counted span in the middle."""
    tokens = np.asarray(_batch(rows, seed))
    mask = np.zeros_like(tokens)
    for r in range(rows - 1):  # the last row counts nothing
        mask[r, 4 + r : 10 + r] = 1
    return np.stack([tokens, mask], axis=1)


@functools.cache
def _params() -> dict:
    return init_params(jax.random.key(0), CONFIG)


_VALUE_AND_GRAD = jax.jit(jax.value_and_grad(loss_fn), static_argnums=(2, 4))  # compiled once


def _grads(batch: np.ndarray) -> tuple[jax.Array, dict]:
    return _VALUE_AND_GRAD(_params(), batch, CONFIG, None, False)


def test_the_masked_loss_is_the_mean_over_the_counted_targets():
    batch = _masked()
    logits = jax.jit(forward, static_argnums=2)(_params(), batch[:, 0, :-1], CONFIG)  # (B, T, V)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch[:, 0, 1:, None], -1)[..., 0]  # (B, T)
    weights = batch[:, 1, 1:]
    expected = float(jnp.sum(nll * weights) / weights.sum())
    assert float(_grads(batch)[0]) == pytest.approx(expected, rel=1e-6)


def test_tokens_outside_the_assistant_turns_do_not_change_the_gradient():
    """What no counted target is or sees changes nothing: every token of a row that counts nothing,
    and the tokens after a row's last counted target (a trailing user turn, the padding). A token
    inside a counted span does change it (so the comparison can fail)."""
    batch = _masked()
    loss, grads = _grads(batch)
    changed = batch.copy()
    rng = np.random.default_rng(0)
    changed[-1, 0] = rng.integers(0, CONFIG.vocab_size, changed.shape[-1])  # the row that counts nothing
    for r in range(len(batch) - 1):
        after = np.flatnonzero(batch[r, 1])[-1] + 1  # past the row's last counted token
        changed[r, 0, after:] = (batch[r, 0, after:] + 1 + rng.integers(0, 5, len(batch[r, 0, after:]))) % 64
    assert (changed != batch).sum() > 20
    loss2, grads2 = _grads(changed)
    assert float(loss2) == float(loss)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2), strict=True):
        np.testing.assert_array_equal(a, b)
    inside = batch.copy()
    inside[0, 0, 6] = (inside[0, 0, 6] + 1) % CONFIG.vocab_size
    assert not np.array_equal(_grads(inside)[1]["embed"]["tokens"], grads["embed"]["tokens"])


def test_masked_micro_batches_give_the_batch_loss_and_gradient():
    """However the counted targets fall into micro-batches (3 rows of 4 count, unequally), the
    accumulated loss and gradient are the whole batch's."""
    run = preset("quickstart").merge({"model": CONFIG.to_dict(), "batch_size": 4, "sample_tokens": 8})
    optimizer = make_optimizer(run)
    batch = _masked()
    state = init_state(jax.random.PRNGKey(0), CONFIG, optimizer, params=jax.tree.map(jnp.copy, _params()))
    _, metrics = make_train_step(CONFIG, optimizer, grad_accum=2)(state, jnp.asarray(batch))
    loss, grads = _grads(batch)
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
    assert float(metrics["grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-5)
