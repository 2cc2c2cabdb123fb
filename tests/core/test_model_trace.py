"""trace and logit_lens: the forward pass observed, ablated and patched, over every configuration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from microgpt_core import init_params
from microgpt_core.layers import merge_heads, norm
from microgpt_core.model import ACTIVATIONS, activation_shapes, logit_lens, trace
from tests.conftest import config_strategy

ATOL = 2e-5
# One seed for every property here: they draw the same configurations, so each compiles once.
SEED = 20261205


@pytest.fixture(scope="session")
def jit_trace():
    return jax.jit(trace, static_argnames=("config",))


def _model(config, seed=0):
    params = init_params(jax.random.key(seed), config)
    tokens = jax.random.randint(jax.random.key(seed + 1), (2, 9), 0, config.vocab_size)
    return params, tokens


@seed(SEED)
@settings(max_examples=3)
@given(config=config_strategy(st))
def test_trace_gives_forwards_logits_and_every_activation(jit_forward, jit_trace, config):
    params, tokens = _model(config)
    logits, acts = jit_trace(params, tokens, config)
    np.testing.assert_allclose(logits, jit_forward(params, tokens, config), atol=ATOL)
    assert set(acts) == set(ACTIVATIONS)
    assert {name: a.shape for name, a in acts.items()} == activation_shapes(config, 2, 9)
    assert all(a.dtype == jnp.float32 for a in acts.values())


@seed(SEED)
@settings(max_examples=3)
@given(config=config_strategy(st))
def test_the_residual_stream_adds_up(jit_trace, config):
    params, tokens = _model(config)
    _, a = jit_trace(params, tokens, config)
    np.testing.assert_allclose(a["resid_pre"][0], a["embed"], atol=ATOL)
    np.testing.assert_allclose(a["resid_mid"], a["resid_pre"] + a["attn_out"], atol=ATOL)
    np.testing.assert_allclose(a["resid_post"], a["resid_mid"] + a["mlp_out"], atol=ATOL)
    np.testing.assert_allclose(a["resid_pre"][1:], a["resid_post"][:-1], atol=ATOL)
    last = a["resid_post"][-1]
    final = norm(params["final_norm"], last, config=config) if config.final_norm else last
    np.testing.assert_allclose(a["final"], final, atol=ATOL)
    blocks = params["blocks"]
    for layer in range(config.n_layers):
        attn = jax.tree.map(lambda w, i=layer: w[i], blocks["attn"])
        attn_out = merge_heads(attn, a["attn_z"][layer], config=config)
        np.testing.assert_allclose(attn_out, a["attn_out"][layer], atol=ATOL)
        mlp_out = a["mlp_hidden"][layer] @ blocks["mlp"]["w_out"][layer]
        if "b_out" in blocks["mlp"]:
            mlp_out = mlp_out + blocks["mlp"]["b_out"][layer]
        np.testing.assert_allclose(mlp_out, a["mlp_out"][layer], atol=ATOL)


@seed(SEED)
@settings(max_examples=3)
@given(config=config_strategy(st))
def test_attention_rows_are_causal_distributions(jit_trace, config):
    params, tokens = _model(config)
    pattern = np.asarray(jit_trace(params, tokens, config)[1]["attn_pattern"])  # (L, B, H, T, T)
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
    assert (pattern >= 0).all()
    assert (np.triu(pattern, k=1) == 0).all()


@seed(SEED)
@settings(max_examples=3)
@given(config=config_strategy(st), data=st.data())
def test_ablating_a_head_zeroes_it_and_equals_cutting_its_output_weights(jit_trace, config, data):
    params, tokens = _model(config)
    layer = data.draw(st.integers(0, config.n_layers - 1))
    head = data.draw(st.integers(0, config.n_heads - 1))
    _, clean = jit_trace(params, tokens, config)
    logits, ablated = jit_trace(params, tokens, config, ablate=((layer, head),))
    assert not np.asarray(ablated["attn_z"][layer, :, head]).any()
    for name in ("resid_pre", "attn_pattern", "resid_post"):
        np.testing.assert_array_equal(ablated[name][:layer], clean[name][:layer])
    # Zeroing the head's output equals zeroing the rows of W_out that read it: an independent route.
    Dh = config.head_dim
    w_out = params["blocks"]["attn"]["w_out"].at[layer, head * Dh : (head + 1) * Dh].set(0.0)
    cut = {**params, "blocks": {**params["blocks"], "attn": {**params["blocks"]["attn"], "w_out": w_out}}}
    np.testing.assert_allclose(logits, jit_trace(cut, tokens, config)[0], atol=ATOL)


@seed(SEED)
@settings(max_examples=3)
@given(config=config_strategy(st))
def test_patching_the_last_residual_gives_the_other_prompts_logits(jit_trace, config):
    params, tokens = _model(config)
    other = (tokens + 1) % config.vocab_size
    other_logits, other_acts = jit_trace(params, other, config)
    last = config.n_layers - 1
    patch = {"resid_post": (last, other_acts["resid_post"][last])}
    patched, acts = jit_trace(params, tokens, config, patch=patch)
    np.testing.assert_allclose(patched, other_logits, atol=ATOL)
    # Earlier layers are untouched; the patch is what later hook points see.
    clean = jit_trace(params, tokens, config)[1]
    np.testing.assert_array_equal(acts["resid_post"][:last], clean["resid_post"][:last])


def test_patching_a_middle_layer_runs_the_rest_on_the_patch(jit_trace, tiny_config, tiny_params):
    tokens = jnp.arange(12)[None] % tiny_config.vocab_size
    other = (tokens * 7 + 3) % tiny_config.vocab_size
    other_logits, other_acts = jit_trace(tiny_params, other, tiny_config)
    patch = {"resid_mid": (0, other_acts["resid_mid"][0])}
    logits, acts = jit_trace(tiny_params, tokens, tiny_config, patch=patch)
    np.testing.assert_allclose(acts["resid_mid"][0], other_acts["resid_mid"][0])
    # Layer 0's MLP reads resid_mid: from there on, everything is the other prompt's.
    np.testing.assert_allclose(acts["resid_post"], other_acts["resid_post"], atol=ATOL)
    np.testing.assert_allclose(logits, other_logits, atol=ATOL)
    swapped, _ = jit_trace(tiny_params, tokens, tiny_config, patch={"embed": (None, other_acts["embed"])})
    np.testing.assert_allclose(swapped, other_logits, atol=ATOL)


@seed(SEED)
@settings(max_examples=3)
@given(config=config_strategy(st))
def test_the_logit_lens_of_the_last_layer_is_the_logits(jit_trace, config):
    params, tokens = _model(config)
    logits, acts = jit_trace(params, tokens, config)
    lens = logit_lens(params, acts, config)
    assert lens.shape == (config.n_layers, 2, 9, config.vocab_size)
    np.testing.assert_allclose(lens[-1], logits, atol=ATOL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ablate": ((2, 0),)}, "ablate: layer 2 is outside 0..1"),
        ({"ablate": ((0, 4),)}, "ablate: head 4 is outside 0..3"),
        ({"patch": {"resid": (0, jnp.zeros((1, 5, 32)))}}, "unknown activation 'resid'"),
        ({"patch": {"resid_post": (5, jnp.zeros((1, 5, 32)))}}, "layer 5 is outside 0..1"),
        ({"patch": {"resid_post": (None, jnp.zeros((1, 5, 32)))}}, "layer None is outside"),
        ({"patch": {"embed": (0, jnp.zeros((1, 5, 32)))}}, "embed belongs to no layer"),
        (
            {"patch": {"attn_pattern": (0, jnp.zeros((1, 4, 5, 4)))}},
            r"\(1, 4, 5, 4\), expected \(1, 4, 5, 5\)",
        ),
        ({"patch": {"mlp_out": jnp.zeros((1, 5, 32))}}, "must be a \\(layer, array\\) pair"),
    ],
)
def test_bad_ablations_and_patches_are_refused_by_name(tiny_config, tiny_params, kwargs, message):
    with pytest.raises(ValueError, match=message):
        trace(tiny_params, jnp.zeros((1, 5), jnp.int32), tiny_config, **kwargs)


def test_a_text_longer_than_the_context_is_refused(tiny_config, tiny_params):
    with pytest.raises(ValueError, match="exceeds context_length 32"):
        trace(tiny_params, jnp.zeros((1, 33), jnp.int32), tiny_config)
