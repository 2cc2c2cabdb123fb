"""Each layer against a float64 numpy transcription of its equation, and its gradients by check_grads."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from microgpt_core import layers
from microgpt_core.model import cross_entropy

RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_layer_norm_matches_its_equation():
    x, scale, bias = randn(3, 5, 16) * 3 + 1, randn(16), randn(16)
    y = layers.layer_norm({"scale": scale, "bias": bias}, x, eps=1e-5)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-5) * scale + bias, atol=1e-5)
    no_bias = layers.layer_norm({"scale": scale}, x, eps=1e-5)
    np.testing.assert_allclose(no_bias, (x64 - mu) / np.sqrt(var + 1e-5) * scale, atol=1e-5)


def test_rms_norm_matches_its_equation():
    x, scale = randn(3, 5, 16) * 3 + 1, randn(16)
    y = layers.rms_norm({"scale": scale}, x, eps=1e-6)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6) * scale, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(c=st.floats(1e-2, 1e3), seed=st.integers(0, 2**16))
def test_rms_norm_is_invariant_to_scaling_its_input(c, seed):
    x = np.random.default_rng(seed).standard_normal((2, 16)) + 0.5
    params = {"scale": np.random.default_rng(seed + 1).standard_normal(16)}
    # ε = 0 makes the invariance exact; with ε > 0 it holds once mean(x²) dominates ε.
    np.testing.assert_allclose(
        layers.rms_norm(params, c * x, eps=1e-12), layers.rms_norm(params, x, eps=1e-12), rtol=1e-4, atol=1e-5
    )


def test_norm_follows_the_config(tiny_config):
    x, scale = randn(2, 16), randn(16)
    rms = layers.norm({"scale": scale}, x, config=tiny_config.replace(norm="rmsnorm"))
    np.testing.assert_array_equal(rms, layers.rms_norm({"scale": scale}, x, eps=tiny_config.norm_eps))
    ln = layers.norm({"scale": scale}, x, config=tiny_config)
    np.testing.assert_array_equal(ln, layers.layer_norm({"scale": scale}, x, eps=tiny_config.norm_eps))


@pytest.mark.parametrize("bias", [True, False])
def test_swiglu_mlp_matches_its_equation(tiny_config, bias):
    config = tiny_config.replace(mlp="swiglu", bias=bias)
    D, F = config.d_model, config.d_ff
    params = {"w_gate": randn(D, F), "w_in": randn(D, F), "w_out": randn(F, D)}
    if bias:
        params |= {"b_gate": randn(F), "b_in": randn(F), "b_out": randn(D)}
    x = randn(2, 3, D)
    x64 = x.astype(np.float64)
    gate = x64 @ params["w_gate"] + params.get("b_gate", 0.0)
    up = x64 @ params["w_in"] + params.get("b_in", 0.0)
    expected = (gate / (1 + np.exp(-gate)) * up) @ params["w_out"] + params.get("b_out", 0.0)
    np.testing.assert_allclose(layers.mlp(params, x, config=config), expected, rtol=1e-4, atol=1e-4)


def test_gelu_exact_and_tanh_match_their_equations():
    x = np.linspace(-5, 5, 101).astype(np.float32)
    erf = np.vectorize(math.erf)
    exact = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(layers.gelu(x, approximate=False), exact, atol=1e-6)
    np.testing.assert_allclose(layers.gelu(x, approximate=True), approx, atol=1e-6)


def test_sinusoidal_positions_match_vaswani():
    positions, D = np.arange(40), 16
    pe = np.asarray(layers.sinusoidal_positions(jnp.asarray(positions), D))
    i = np.arange(D // 2)
    angle = positions[:, None] / 10000 ** (2 * i / D)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(angle), atol=1e-5)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(angle), atol=1e-5)


def np_rotary(x, positions, theta):
    """RoPE transcribed from Su et al. 2021 with dimension i paired with i + Dh/2, in float64."""
    half = x.shape[-1] // 2
    omega = theta ** (-2.0 * np.arange(half) / x.shape[-1])
    angle = np.asarray(positions, np.float64)[..., None] * omega  # (..., T, Dh/2)
    cos, sin = np.cos(angle)[..., None, :, :], np.sin(angle)[..., None, :, :]
    x1, x2 = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
def test_rotary_matches_its_equation(theta):
    x = randn(2, 3, 9, 8)
    positions = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8], [40, 41, 42, 43, 44, 45, 46, 47, 48]])
    np.testing.assert_allclose(
        layers.rotary(x, positions, theta=theta), np_rotary(x, positions, theta), atol=1e-5
    )
    shared = layers.rotary(x, np.arange(9), theta=theta)  # (T,) positions serve every row alike
    np.testing.assert_allclose(shared, np_rotary(x, np.arange(9), theta), atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    head_dim=st.sampled_from([2, 8, 16]), theta=st.sampled_from([10.0, 1e4, 5e5]), seed=st.integers(0, 2**16)
)
def test_rotary_leaves_position_zero_unchanged_and_keeps_lengths(head_dim, theta, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2, 3, head_dim)).astype(np.float32)
    np.testing.assert_array_equal(layers.rotary(x, np.zeros(3, int), theta=theta), x)
    rotated = layers.rotary(x, np.array([1, 17, 250]), theta=theta)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(shift=st.integers(1, 2000), qk_norm=st.booleans(), seed=st.integers(0, 2**16))
def test_rope_attention_scores_depend_only_on_the_offset(tiny_config, shift, qk_norm, seed):
    """Shifting every query and key position by the same amount leaves Q Kᵀ unchanged."""
    config = tiny_config.replace(positional="rope", n_kv_heads=2, qk_norm=qk_norm, bias=False)
    rng = np.random.default_rng(seed)
    params = {"w_qkv": rng.standard_normal((32, config.qkv_dim)).astype(np.float32) * 0.3}
    if qk_norm:
        params |= {"q_norm": {"scale": randn(8)}, "k_norm": {"scale": randn(8)}}
    x = rng.standard_normal((1, 6, 32)).astype(np.float32)

    def scores(positions):
        q, k, _ = layers.qkv_heads(params, x, positions, config=config)  # (1, 4, 6, 8), (1, 2, 6, 8)
        return np.einsum("bkgtd,bksd->bkgts", np.asarray(q).reshape(1, 2, 2, 6, 8), k)

    base = scores(np.arange(6))
    np.testing.assert_allclose(scores(np.arange(6) + shift), base, rtol=1e-3, atol=2e-3 * np.abs(base).max())
    assert not np.allclose(scores(np.array([0, 2, 4, 6, 8, 10])), base, atol=1e-3)  # offsets do matter


def test_qkv_heads_split_groups_normalise_and_rotate(tiny_config):
    config = tiny_config.replace(n_kv_heads=2, qk_norm=True, positional="rope", rope_theta=500000.0)
    Dh = config.head_dim
    params = {
        "w_qkv": randn(32, config.qkv_dim),
        "b_qkv": randn(config.qkv_dim),
        "q_norm": {"scale": randn(Dh)},
        "k_norm": {"scale": randn(Dh)},
    }
    x, positions = randn(2, 5, 32), np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    q, k, v = layers.qkv_heads(params, x, positions, config=config)
    assert q.shape == (2, 4, 5, Dh) and k.shape == v.shape == (2, 2, 5, Dh)
    qkv = x.astype(np.float64) @ params["w_qkv"] + params["b_qkv"]  # [Q (4·Dh) | K (2·Dh) | V (2·Dh)]
    heads = lambda a, n: a.reshape(2, 5, n, Dh).transpose(0, 2, 1, 3)  # noqa: E731
    rms = lambda a, g: a / np.sqrt((a**2).mean(-1, keepdims=True) + config.norm_eps) * g  # noqa: E731
    q_ref = np_rotary(rms(heads(qkv[..., : 4 * Dh], 4), params["q_norm"]["scale"]), positions, 500000.0)
    k_ref = np_rotary(
        rms(heads(qkv[..., 4 * Dh : 6 * Dh], 2), params["k_norm"]["scale"]), positions, 500000.0
    )
    np.testing.assert_allclose(q, q_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(k, k_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(v, heads(qkv[..., 6 * Dh :], 2), rtol=1e-5, atol=1e-4)  # values: neither


def np_attention_per_head(q, k, v, mask, kv_head_of):
    """Attention head by head; query head h reads key/value head kv_head_of(h)."""
    out = np.zeros(q.shape)
    for h in range(q.shape[1]):
        g = kv_head_of(h)
        scores = np.einsum("btd,bsd->bts", q[:, h].astype(np.float64), k[:, g]) / math.sqrt(q.shape[-1])
        out[:, h] = np_softmax(np.where(mask, scores, -np.inf)) @ v[:, g]
    return out


@settings(max_examples=12, deadline=None)
@given(
    heads=st.sampled_from([(4, 4), (4, 2), (4, 1), (2, 1), (8, 2)]),
    kind=st.sampled_from(["math", "fused"]),
    seed=st.integers(0, 2**16),
)
def test_grouped_query_attention_is_multi_head_over_shared_key_value_heads(tiny_config, heads, kind, seed):
    """Query head h reads key/value head ⌊h / G⌋: with Hkv = H that is ordinary multi-head attention,
    with Hkv = 1 multi-query attention (every head reads the same keys and values), and in general it
    equals multi-head attention over the key/value heads repeated G times."""
    H, Hkv = heads
    config = tiny_config.replace(attention=kind)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, H, 5, 8)).astype(np.float32)
    k, v = (rng.standard_normal((2, Hkv, 7, 8)).astype(np.float32) for _ in range(2))
    mask = np.arange(7)[None, :] <= np.arange(5)[:, None] + 2  # (T, S): a causal mask two slots ahead
    out = np.asarray(layers.attention(q, k, v, mask[None, None], config=config))
    np.testing.assert_allclose(
        out, np_attention_per_head(q, k, v, mask, lambda h: h // (H // Hkv)), atol=1e-5
    )
    if Hkv == H:
        np.testing.assert_allclose(out, np_attention_per_head(q, k, v, mask, lambda h: h), atol=1e-5)
    if Hkv == 1:
        np.testing.assert_allclose(out, np_attention_per_head(q, k, v, mask, lambda h: 0), atol=1e-5)
    repeated = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
    mha = layers.attention(q, *repeated, mask[None, None], config=config)
    np.testing.assert_allclose(out, mha, atol=1e-6)


def test_attention_matches_its_definition(tiny_config):
    q, k, v = randn(2, 4, 6, 8), randn(2, 4, 6, 8), randn(2, 4, 6, 8)
    mask = np.tril(np.ones((6, 6), bool))[None]
    out = layers.attention(q, k, v, mask, config=tiny_config)
    scores = np.einsum("bhtd,bhsd->bhts", q.astype(np.float64), k) / math.sqrt(8)
    scores = np.where(mask, scores, -np.inf)
    np.testing.assert_allclose(out, np_softmax(scores) @ v, atol=1e-5)


def test_causal_self_attention_matches_a_per_head_loop(tiny_config, tiny_params):
    params = jax.tree_util.tree_map(lambda a: np.asarray(a[0], np.float64), tiny_params["blocks"]["attn"])
    params["b_qkv"] = randn(3 * 32).astype(np.float64) * 0.1
    x = randn(2, 7, 32)
    y, cache = layers.causal_self_attention(params, x, config=tiny_config)
    assert cache is None
    qkv = x @ params["w_qkv"] + params["b_qkv"]
    q, k, v = np.split(qkv, 3, axis=-1)
    heads = []
    for h in range(4):
        cols = slice(8 * h, 8 * (h + 1))
        scores = q[..., cols] @ k[..., cols].transpose(0, 2, 1) / math.sqrt(8)
        scores = np.where(np.tril(np.ones((7, 7), bool)), scores, -np.inf)
        heads.append(np_softmax(scores) @ v[..., cols])
    expected = np.concatenate(heads, axis=-1) @ params["w_out"] + params["b_out"]
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_mlp_and_linear_match_their_equations(tiny_config, tiny_params):
    p = jax.tree_util.tree_map(lambda a: np.asarray(a[0], np.float64), tiny_params["blocks"]["mlp"])
    p["b_in"] = randn(128).astype(np.float64)
    x = randn(2, 3, 32)
    h = x @ p["w_in"] + p["b_in"]
    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    np.testing.assert_allclose(layers.mlp(p, x, config=tiny_config), h @ p["w_out"] + p["b_out"], atol=1e-5)


def test_embed_scales_and_adds_positions(tiny_config, tiny_params):
    tokens = jnp.array([[1, 5, 7]])
    e = np.asarray(tiny_params["embed"]["tokens"])
    learned = layers.embed(tiny_params["embed"], tokens, jnp.arange(3), config=tiny_config)
    expected = e[[1, 5, 7]] + np.asarray(tiny_params["embed"]["positions"])[:3]
    np.testing.assert_allclose(learned[0], expected, atol=1e-6)
    config = tiny_config.replace(positional="sinusoidal", embed_scale=True)
    scaled = layers.embed(tiny_params["embed"], tokens, jnp.arange(3), config=config)
    pe = layers.sinusoidal_positions(jnp.arange(3), 32)
    np.testing.assert_allclose(scaled[0], e[[1, 5, 7]] * math.sqrt(32) + pe, atol=1e-5)
    rope = layers.embed(
        tiny_params["embed"], tokens, jnp.arange(3), config=tiny_config.replace(positional="rope")
    )
    np.testing.assert_array_equal(rope[0], e[[1, 5, 7]])  # rotary positions act inside attention


def test_dropout_is_inverted_and_off_without_a_key():
    x = jnp.ones((64, 64))
    assert layers.dropout(x, 0.5, None) is x
    y = np.asarray(layers.dropout(x, 0.25, jax.random.key(0)))
    assert set(np.unique(y).tolist()) <= {0.0, np.float32(1 / 0.75).item()}
    assert abs((y == 0).mean() - 0.25) < 0.03


# --- gradients: every layer's reverse-mode derivative against finite differences ---------------
def _check(f, *args):
    with jax.enable_x64(True):
        args64 = [jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), a) for a in args]
        check_grads(f, args64, order=1, modes=("rev",), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def grad_config(tiny_config):
    return tiny_config.replace(d_model=16, n_heads=2, d_ff=24, compute_dtype="float64")


def _layer(tiny_params, grad_config):
    from microgpt_core import init_params

    params = init_params(jax.random.key(1), grad_config)
    return jax.tree_util.tree_map(lambda a: np.asarray(a[0]) + 0.1 * randn(*a.shape[1:]), params["blocks"])


def test_layer_norm_gradients():
    _check(lambda p, x: layers.layer_norm(p, x, eps=1e-5), {"scale": randn(8), "bias": randn(8)}, randn(3, 8))
    _check(lambda p, x: layers.rms_norm(p, x, eps=1e-5), {"scale": randn(8)}, randn(3, 8))


def test_linear_and_gelu_gradients():
    _check(
        lambda x, w, b: layers.linear(x, w, b, compute_dtype=jnp.float64), randn(3, 8), randn(8, 5), randn(5)
    )
    _check(lambda x: layers.gelu(x, approximate=True), randn(20))
    _check(lambda x: layers.gelu(x, approximate=False), randn(20))


def test_attention_mlp_and_block_gradients(tiny_params, grad_config):
    block_params = _layer(tiny_params, grad_config)
    x = randn(2, 5, 16)
    _check(lambda p, x: layers.causal_self_attention(p, x, config=grad_config)[0], block_params["attn"], x)
    _check(lambda p, x: layers.mlp(p, x, config=grad_config), block_params["mlp"], x)
    _check(lambda p, x: layers.block(p, x, config=grad_config)[0], block_params, x)


@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_llama_style_block_gradients(tiny_params, grad_config, n_kv_heads):
    config = grad_config.replace(
        norm="rmsnorm", mlp="swiglu", bias=False, positional="rope", n_kv_heads=n_kv_heads, qk_norm=True
    )
    block_params = _layer(tiny_params, config)
    _check(lambda p, x: layers.block(p, x, config=config)[0], block_params, randn(2, 5, 16))


def test_embed_and_cross_entropy_gradients(grad_config):
    table = {"tokens": randn(11, 16), "positions": randn(5, 16)}
    tokens = jnp.array([[1, 2, 3, 9], [0, 10, 4, 4]])
    _check(lambda p: layers.embed(p, tokens, jnp.arange(4), config=grad_config), table)
    targets = jnp.array([[1, 0, 2], [3, 3, 0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    _check(lambda z: cross_entropy(z, targets, mask), randn(2, 3, 4))


def test_linear_is_x_w_plus_b():
    x, w, b = randn(2, 3, 8), randn(8, 5), randn(5)
    got = layers.linear(jnp.asarray(x, jnp.float32), w, b)  # (2, 3, 5)
    assert got.shape == (2, 3, 5)
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-5)  # float64 numpy


def test_one_block_serves_training_prefill_and_decoding(tiny_config, tiny_params):
    """The block over a whole sequence equals the block over a cache: a prefill of the first 5
    positions, then one position at a time, each row at its own position."""
    from microgpt_core.cache import KVCache

    params = jax.tree.map(lambda a: a[0], tiny_params["blocks"])  # layer 0
    x = jax.random.normal(jax.random.key(2), (2, 8, tiny_config.d_model))
    whole, _ = layers.block(params, x, config=tiny_config)
    shape = (2, tiny_config.n_kv_heads, 8, tiny_config.head_dim)  # (B, Hkv, S, Dh)
    cache = KVCache(k=jnp.zeros(shape), v=jnp.zeros(shape))
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    first, cache = layers.block(params, x[:, :5], config=tiny_config, positions=positions, cache=cache)
    np.testing.assert_allclose(first, whole[:, :5], atol=1e-5)
    for t in range(5, 8):
        out, cache = layers.block(
            params, x[:, t : t + 1], config=tiny_config, positions=jnp.full((2, 1), t), cache=cache
        )
        np.testing.assert_allclose(out[:, 0], whole[:, t], atol=1e-5)
