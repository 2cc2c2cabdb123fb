"""forward and cross_entropy: causality, shapes, fused == math, bfloat16 tolerance, dropout, loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core import cross_entropy, forward, init_params
from tests.conftest import config_strategy

# bfloat16 matmul inputs keep 8 bits of mantissa: logits of a tiny random model move by < 2e-2.
BF16_LOGIT_ATOL = 2e-2


@settings(max_examples=5)
@given(config=config_strategy(st), data=st.data())
def test_changing_later_tokens_never_changes_earlier_logits(jit_forward, config, data):
    params = init_params(jax.random.key(0), config)
    T = 16
    tokens = np.asarray(data.draw(st.lists(st.integers(0, config.vocab_size - 1), min_size=T, max_size=T)))
    t = data.draw(st.integers(0, T - 2))
    changed = tokens.copy()
    changed[t + 1 :] = (changed[t + 1 :] + 1 + np.arange(T - t - 1)) % config.vocab_size
    a = jit_forward(params, jnp.asarray(tokens)[None], config)
    b = jit_forward(params, jnp.asarray(changed)[None], config)
    np.testing.assert_allclose(a[0, : t + 1], b[0, : t + 1], atol=1e-6)
    assert not np.allclose(a[0, t + 1 :], b[0, t + 1 :])


@settings(max_examples=6)
@given(
    config=config_strategy(st, attention="math"),
    batch=st.sampled_from([1, 3]),
    length=st.sampled_from([1, 7, 16]),
)
def test_logits_shape_and_dtype(jit_forward, config, batch, length):
    params = init_params(jax.random.key(0), config)
    tokens = jnp.zeros((batch, length), jnp.int32)
    logits = jit_forward(params, tokens, config)
    assert logits.shape == (batch, length, config.vocab_size)
    assert logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


@settings(max_examples=4)
@given(config=config_strategy(st, attention="math"))
def test_fused_attention_equals_math_attention(jit_forward, config):
    params = init_params(jax.random.key(1), config)
    tokens = jax.random.randint(jax.random.key(2), (2, 16), 0, config.vocab_size)
    math_logits = jit_forward(params, tokens, config)
    fused_logits = jit_forward(params, tokens, config.replace(attention="fused"))
    np.testing.assert_allclose(fused_logits, math_logits, atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32(jit_forward, tiny_config, tiny_params):
    tokens = jax.random.randint(jax.random.key(0), (4, 32), 0, tiny_config.vocab_size)
    f32 = jit_forward(tiny_params, tokens, tiny_config)
    bf16 = jit_forward(tiny_params, tokens, tiny_config.replace(compute_dtype="bfloat16"))
    assert bf16.dtype == jnp.float32  # logits stay float32
    np.testing.assert_allclose(bf16, f32, atol=BF16_LOGIT_ATOL)
    targets = jnp.roll(tokens, -1, axis=1)
    assert abs(float(cross_entropy(bf16, targets)) - float(cross_entropy(f32, targets))) < 1e-2


def test_dropout_only_in_training_with_a_key(tiny_config, tiny_params):
    config = tiny_config.replace(dropout=0.3)
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, config.vocab_size)
    clean = forward(tiny_params, tokens, config)
    np.testing.assert_array_equal(forward(tiny_params, tokens, config, rng=jax.random.key(1)), clean)
    np.testing.assert_array_equal(forward(tiny_params, tokens, config, train=True), clean)
    noisy = forward(tiny_params, tokens, config, rng=jax.random.key(1), train=True)
    again = forward(tiny_params, tokens, config, rng=jax.random.key(1), train=True)
    assert not np.allclose(noisy, clean)
    np.testing.assert_array_equal(noisy, again)


def test_blocks_run_under_one_scan(tiny_config, tiny_params):
    jaxpr = jax.make_jaxpr(lambda p, t: forward(p, t, tiny_config))(tiny_params, jnp.zeros((1, 4), jnp.int32))
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == tiny_config.n_layers


def test_sequences_longer_than_the_context_are_refused(tiny_config, tiny_params):
    with pytest.raises(ValueError, match="exceeds context_length 32"):
        forward(tiny_params, jnp.zeros((1, 33), jnp.int32), tiny_config)


def np_cross_entropy(logits, targets, mask=None):
    z = logits.astype(np.float64)
    log_probs = z - z.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    m = np.ones_like(nll) if mask is None else mask.astype(np.float64)
    return (nll * m).sum() / m.sum()


@given(
    shape=st.sampled_from([(1, 1, 5), (2, 3, 7), (3, 4, 50)]),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_equals_a_float64_reference(shape, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * scale).astype(np.float32)
    targets = rng.integers(0, shape[-1], shape[:2])
    mask = rng.random(shape[:2]) < 0.6
    mask.flat[0] = True
    # float32 log-sum-exp loses about eps32 * |logit| in absolute terms (visible when the loss is ~0).
    atol = 1e-6 + 4 * float(np.finfo(np.float32).eps) * float(np.abs(logits).max())
    assert float(cross_entropy(logits, targets)) == pytest.approx(
        np_cross_entropy(logits, targets), rel=1e-5, abs=atol
    )
    masked = float(cross_entropy(logits, targets, mask))
    assert masked == pytest.approx(np_cross_entropy(logits, targets, mask), rel=1e-5, abs=atol)


def test_cross_entropy_of_a_uniform_model_is_log_vocab():
    assert float(cross_entropy(jnp.zeros((2, 3, 64)), jnp.ones((2, 3), jnp.int32))) == pytest.approx(
        np.log(64)
    )
