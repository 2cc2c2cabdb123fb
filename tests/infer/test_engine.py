"""The engine equals the reference: `decode.decode_step` gives the logits and cache of
`model.forward_cached` (and so of `model.forward`), the XLA options change no result, and the
engine's `generate_tokens` gives core's tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core import forward, init_cache, init_params
from microgpt_core.sampling import generate_tokens as reference_generate
from microgpt_infer.engine import decode
from microgpt_infer.engine import generate_tokens as engine_generate
from microgpt_infer.engine.decode import bits, decode_step, decode_weights, join_cache, split_cache
from microgpt_infer.engine.options import compiler_options
from tests.conftest import config_strategy

T = 16


@pytest.fixture(scope="session")
def jit_decode_step():
    """`decode_step` with the decode weights taken inside, as the generation takes them."""

    def step(params, cache, tokens, positions, config):
        return decode_step(params, decode_weights(params, config), cache, tokens, positions, config)

    return jax.jit(step, static_argnames=("config",))


@settings(max_examples=3)
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
    for fast_half, reference_half in zip(join_cache(fast, config.compute_dtype), reference, strict=True):
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_split_cache_is_the_same_numbers(tiny_config, dtype):
    cache = init_cache(tiny_config, 2, 10)
    noise = lambda seed: jax.random.normal(jax.random.key(seed), cache.k.shape, dtype)  # noqa: E731
    cache = cache._replace(k=noise(1), v=noise(2))
    layers = split_cache(cache)
    assert len(layers.k) == tiny_config.n_layers and layers.k[0].shape == (2, 4, 10, 8)  # (B, H, S, Dh)
    assert layers.k[0].dtype == {"float32": np.uint32, "bfloat16": np.uint16}[dtype]  # the bits
    np.testing.assert_array_equal(np.stack(layers.k), bits(cache.k))
    back = join_cache(layers, dtype)
    assert back.k.dtype == dtype
    np.testing.assert_array_equal(back.k, cache.k)
    np.testing.assert_array_equal(back.v, cache.v)


def test_a_step_of_the_first_rows_over_a_window_leaves_the_rest(jit_forward_cached, tiny_config, tiny_params):
    # The slot engine steps the first rows of its caches over their first positions (its width and
    # window): those rows get the logits and writes of a step over them alone; the others stay.
    config, B, S = tiny_config, 4, 16
    tokens = jax.random.randint(jax.random.key(6), (B, S), 0, config.vocab_size)
    cache = init_cache(config, B, S)
    _, cache = jit_forward_cached(tiny_params, cache, tokens[:, :6], jnp.zeros(B, jnp.int32), config)
    weights = decode_weights(tiny_params, config)
    step = jax.jit(decode_step, static_argnames=("config", "window"))
    positions = jnp.array([6, 5], jnp.int32)  # two rows, each at most the window
    chunk = tokens[:2, 6:7]  # (2, 1)
    narrow, narrow_cache = step(tiny_params, weights, split_cache(cache), chunk, positions, config, window=8)
    alone = jax.tree.map(lambda a: a[:, :2], cache)  # (L, 2, Hkv, S, Dh): the two rows on their own
    want, want_cache = jit_forward_cached(tiny_params, alone, chunk, positions, config)
    np.testing.assert_allclose(narrow, want, atol=1e-5)
    got = join_cache(narrow_cache, config.compute_dtype)
    np.testing.assert_allclose(got.k[:, :2], want_cache.k, atol=1e-6)
    np.testing.assert_array_equal(got.k[:, 2:], cache.k[:, 2:])  # rows 2 and 3 untouched
    np.testing.assert_array_equal(got.v[:, 2:], cache.v[:, 2:])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_growing_windows_give_the_reference_steps(jit_forward, jit_forward_cached, tiny_config, dtype):
    """Rows at ragged positions stepped to the cache's end over windows (4, 9): each step attends the
    smallest window holding every row's earlier positions (4, 9, then the whole cache), with the
    reference's logits and cache."""
    config = tiny_config.replace(compute_dtype=dtype)
    params = init_params(jax.random.key(6), config)
    step = jax.jit(
        lambda p, c, t, s: decode_step(p, decode_weights(p, config), c, t, s, config, windows=(4, 9))
    )
    tokens = np.random.default_rng(6).integers(0, config.vocab_size, (3, T)).astype(np.int32)
    reference = init_cache(config, 3, T)
    _, reference = jit_forward_cached(params, reference, tokens[:, :3], jnp.zeros(3, jnp.int32), config)
    fast, positions = split_cache(reference), np.asarray([1, 3, 2])  # rows 0 and 2 rewrite slots
    while positions.max() < T:
        token, at = tokens[np.arange(3), positions][:, None], jnp.asarray(positions, jnp.int32)
        want, reference = jit_forward_cached(params, reference, token, at, config)
        got, fast = step(params, fast, token, at)
        np.testing.assert_allclose(got, want, atol=1e-5 if dtype == "float32" else 2e-2)
        positions += 1
    for fast_half, reference_half in zip(join_cache(fast, config.compute_dtype), reference, strict=True):
        np.testing.assert_allclose(fast_half, reference_half, atol=1e-6 if dtype == "float32" else 4e-3)
    with pytest.raises(ValueError, match="a window or windows"):
        decode_step(params, decode_weights(params, config), fast, token, at, config, window=8, windows=(4,))


def test_windows_are_chosen_where_the_cache_is_large_beside_the_weights():
    from microgpt_core import SEED_CONFIG

    params = init_params(jax.random.key(0), SEED_CONFIG)
    config = SEED_CONFIG.replace(context_length=16 + 256)
    assert decode.step_windows(params, config, 1, 16, 271) is None  # batch 1: the weights dominate
    assert decode.step_windows(params, config, 8, 16, 271) == (80, 144, 208)  # 16 + 255 * k / 4
    assert decode.step_windows(params, config, 8, 16, 20) is None  # a few new tokens: nothing to save


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compiler_options_change_no_result(tiny_config, tiny_params, dtype):
    config = tiny_config.replace(compute_dtype=dtype)
    tokens = jax.random.randint(jax.random.key(3), (2, 8), 0, config.vocab_size)
    plain = jax.jit(lambda p, t: forward(p, t, config))(tiny_params, tokens)
    tuned = jax.jit(lambda p, t: forward(p, t, config), compiler_options=compiler_options(config))(
        tiny_params, tokens
    )
    np.testing.assert_allclose(tuned, plain, atol=1e-5 if dtype == "float32" else 2e-2)


def spread(params, config):
    """`params` with logits spread apart (the embeddings x 40): a fresh model's logits are nearly
    equal, so rounding alone could flip a greedy choice; a trained model's are not."""
    embed = dict(params["embed"], tokens=params["embed"]["tokens"] * 40)
    out = dict(params, embed=embed)
    if not config.tie_embeddings:
        out["head"] = {"w": params["head"]["w"] * 40}
    return out


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    config=config_strategy(st),
    dtype=st.sampled_from(["float32", "bfloat16"]),
    lengths=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    sampled=st.booleans(),
    stop=st.booleans(),
    stream=st.booleans(),
    windowed=st.booleans(),
)
def test_the_engine_gives_the_reference_tokens(
    monkeypatch, config, dtype, lengths, sampled, stop, stream, windowed
):
    """For any configuration, either dtype, ragged prompts, greedy or sampled, with an end-of-text id
    or none, streamed or not, over growing windows of the cache or not: `engine.generate_tokens`
    returns core's `generate_tokens` tokens."""
    force_windows(monkeypatch, windowed)
    config = config.replace(compute_dtype=dtype)
    params = spread(init_params(jax.random.key(1), config), config)
    B, P = len(lengths), max(lengths)
    prompt = np.random.default_rng(B * 7 + P).integers(0, config.vocab_size, (B, P)).astype(np.int32)
    kwargs = dict(
        rng=jax.random.key(3), max_new_tokens=16 - P, temperature=0.8 if sampled else 0.0, top_k=None
    )
    want = reference_generate(params, config, prompt, np.asarray(lengths), **kwargs)
    if stop:  # the token row 0 makes at its third step ends a row
        kwargs["eot_id"] = int(want.tokens[0, min(2, want.tokens.shape[1] - 1)])
        want = reference_generate(params, config, prompt, np.asarray(lengths), **kwargs)
    seen = []
    if stream:
        kwargs["on_token"] = lambda step, tokens: seen.append(tokens.tolist())
    got = engine_generate(params, config, prompt, np.asarray(lengths), **kwargs)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.num_tokens, want.num_tokens)
    if stream:  # every step, in order, until every row has stopped
        np.testing.assert_array_equal(np.asarray(seen).T, np.asarray(want.tokens)[:, : len(seen)])


def force_windows(monkeypatch, on: bool) -> None:
    """The engine decodes over growing windows (`decode.step_windows`' choice for long generations
    of several rows) when `on`, over the whole cache when not, whatever its choice for these sizes."""
    choose = lambda params, config, rows, prompt, slots: (prompt + 2, prompt + 5) if on else None  # noqa: E731
    monkeypatch.setattr(decode, "step_windows", choose)


# Three models that between them take every value of every configuration option.
COVERING = {
    "gpt2": dict(positional="learned", norm="layernorm", mlp="gelu", gelu="tanh", bias=True,
                 tie_embeddings=True, attention="math", final_norm=True),
    "llama": dict(positional="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2, bias=False,
                  tie_embeddings=False, qk_norm=True, attention="fused", compute_dtype="bfloat16"),
    "seed": dict(positional="sinusoidal", embed_scale=True, final_norm=False, gelu="exact",
                 n_kv_heads=1, compute_dtype="bfloat16"),
}  # fmt: skip


@pytest.mark.parametrize("options", COVERING.values(), ids=COVERING.keys())
def test_every_option_gives_the_reference_tokens(monkeypatch, options):
    """Sampled, ragged, with an end-of-text id and streamed, over growing windows: the engine's
    tokens are core's."""
    from microgpt_core import GPTConfig

    force_windows(monkeypatch, True)

    config = GPTConfig(vocab_size=64, context_length=16, d_model=32, n_layers=2, n_heads=4, **options)
    params = spread(init_params(jax.random.key(2), config), config)
    prompt = np.random.default_rng(0).integers(0, 64, (3, 4)).astype(np.int32)
    lengths = np.asarray([4, 1, 3])
    kwargs = dict(rng=jax.random.key(4), max_new_tokens=12, temperature=0.7, top_k=20, top_p=0.9, min_p=0.05)
    kwargs |= dict(presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=1.2)
    free = reference_generate(params, config, prompt, lengths, **kwargs)
    kwargs["eot_id"] = int(free.tokens[1, 3])  # row 1 stops at its fourth token
    want = reference_generate(params, config, prompt, lengths, **kwargs)
    seen = []
    got = engine_generate(
        params, config, prompt, lengths, **kwargs, on_token=lambda i, t: seen.append(t.tolist())
    )
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.num_tokens, want.num_tokens)
    assert int(want.num_tokens[1]) <= 3
    np.testing.assert_array_equal(np.asarray(seen).T, np.asarray(want.tokens)[:, : len(seen)])
