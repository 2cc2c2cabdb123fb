"""init_params / count_params: stacked blocks, DESIGN.md names and shapes, GPT-2 initialisation."""

import math

import jax
import numpy as np
import pytest

from microgpt_core import SEED_CONFIG as SEED
from microgpt_core import count_params, init_params, param_axes, param_shapes
from microgpt_core.params import flatten, unflatten


def test_seed_configuration_counts_about_5_3_million():
    # The original microGPT (kandarpa02/microGPT) reported 5.4M parameters for this configuration.
    params = jax.eval_shape(init_params, jax.random.key(0), SEED)
    assert count_params(params) == 5_256_192
    assert round(count_params(params) / 1e6, 1) == 5.3


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"positional": "sinusoidal"},
        {"bias": False},
        {"tie_embeddings": False},
        {"final_norm": False},
        {"norm": "rmsnorm"},
        {"mlp": "swiglu"},
        {"mlp": "swiglu", "bias": False},
        {"positional": "rope"},
        {"n_kv_heads": 2},
        {"n_kv_heads": 1, "bias": False},
        {"qk_norm": True},
        {
            "positional": "rope",
            "norm": "rmsnorm",
            "mlp": "swiglu",
            "bias": False,
            "n_kv_heads": 2,
            "qk_norm": True,
        },
    ],
)
def test_names_and_shapes_follow_the_design(tiny_config, changes):
    config = tiny_config.replace(**changes)
    params = jax.eval_shape(init_params, jax.random.key(0), config)
    flat = {name: leaf.shape for name, leaf in flatten(params).items()}
    assert flat == param_shapes(config)
    L, D, H, Hkv, Dh = config.n_layers, config.d_model, config.n_heads, config.n_kv_heads, config.head_dim
    assert flat["blocks.attn.w_qkv"] == (L, D, (H + 2 * Hkv) * Dh)  # (L, D, 3D) for multi-head
    assert flat["blocks.attn.w_out"] == (L, D, D)
    assert ("blocks.attn.b_qkv" in flat) == config.bias
    assert ("blocks.attn.q_norm.scale" in flat) == ("blocks.attn.k_norm.scale" in flat) == config.qk_norm
    if config.qk_norm:
        assert flat["blocks.attn.q_norm.scale"] == flat["blocks.attn.k_norm.scale"] == (L, Dh)
    assert ("embed.positions" in flat) == (config.positional == "learned")
    assert ("blocks.mlp.b_in" in flat) == config.bias
    assert ("head.w" in flat) == (not config.tie_embeddings)
    assert ("final_norm.scale" in flat) == config.final_norm
    assert ("blocks.mlp.w_gate" in flat) == (config.mlp == "swiglu")
    assert ("blocks.mlp.b_gate" in flat) == (config.mlp == "swiglu" and config.bias)
    assert ("blocks.ln1.bias" in flat) == (
        config.bias and config.norm == "layernorm"
    )  # RMSNorm: a scale only
    axes = flatten(param_axes(config))
    assert set(axes) == set(flat)
    assert all(len(axes[name]) == len(shape) for name, shape in flat.items())


def test_gpt2_initialisation_statistics(tiny_params, tiny_config):
    blocks = tiny_params["blocks"]
    L = tiny_config.n_layers
    assert np.std(np.asarray(tiny_params["embed"]["tokens"])) == pytest.approx(0.02, rel=0.1)
    assert np.std(np.asarray(blocks["attn"]["w_qkv"])) == pytest.approx(0.02, rel=0.1)
    residual = 0.02 / math.sqrt(2 * L)
    assert np.std(np.asarray(blocks["mlp"]["w_out"])) == pytest.approx(residual, rel=0.1)
    assert np.all(np.asarray(blocks["ln1"]["scale"]) == 1.0)
    assert np.all(np.asarray(blocks["attn"]["b_qkv"]) == 0.0)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree_util.tree_leaves(tiny_params))


def test_every_layer_gets_its_own_initial_weights(tiny_params):
    # The original microGPT initialised every layer from key=0, so all layers started identical.
    w = np.asarray(tiny_params["blocks"]["attn"]["w_qkv"])
    assert not np.allclose(w[0], w[1])


def test_init_is_deterministic_per_key(tiny_config):
    a = init_params(jax.random.key(3), tiny_config)
    b = init_params(jax.random.key(3), tiny_config)
    c = init_params(jax.random.key(4), tiny_config)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )
    assert not np.array_equal(a["embed"]["tokens"], c["embed"]["tokens"])


def test_flatten_unflatten_round_trip(tiny_params):
    flat = flatten(tiny_params)
    assert "blocks.attn.w_qkv" in flat
    assert jax.tree_util.tree_structure(unflatten(flat)) == jax.tree_util.tree_structure(tiny_params)
