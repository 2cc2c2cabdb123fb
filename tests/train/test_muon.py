"""Muon against its equations: the quintic Newton–Schulz iteration acts on each layer's singular
values as the scalar map p⁵ (so they land in its band, near 1), each layer of a stacked leaf on its
own; momentum, width scaling, decay and learning rate step by step against a NumPy transcription;
and the labels send exactly the blocks' projection matrices to Muon."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from microgpt_core import GPTConfig, init_params
from microgpt_core.params import flatten
from microgpt_train.muon import MUON, NS_COEFFS, NS_STEPS, muon, muon_labels

A, B, C = NS_COEFFS
# Layers of one stacked leaf at scales nine orders apart: a whole-stack normalisation would leave the
# small ones with no update at all.
SCALES = (1e-4, 1.0, 1e5)


def _p5(sigma: np.ndarray) -> np.ndarray:
    """The quintic map p(σ) = aσ + bσ³ + cσ⁵, applied NS_STEPS times."""
    for _ in range(NS_STEPS):
        sigma = A * sigma + B * sigma**3 + C * sigma**5
    return sigma


def _newton_schulz(g: np.ndarray) -> np.ndarray:
    """The iteration written out in float64 for one matrix, on its shorter side."""
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-8)
    for _ in range(NS_STEPS):
        gram = x @ x.T
        x = A * x + (B * gram + C * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


@pytest.fixture(scope="module")
def update():
    """A jitted update of `muon(lr=1, momentum=0.9, decay=0)`: one step returns -√max(1, Dout/Din) X_5."""
    optimizer = muon(1.0, momentum=0.9, weight_decay=0.0)
    return optimizer, jax.jit(optimizer.update)


def _stack(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.stack([s * rng.standard_normal(shape) for s in SCALES]).astype(np.float32)  # (L, Din, Dout)


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (48, 48)])
def test_each_layers_singular_values_go_through_the_quintic_map_into_its_band(update, shape):
    optimizer, step = update
    g = _stack(np.random.default_rng(0), shape)  # (L, Din, Dout)
    out, _ = step({"w": g}, optimizer.init({"w": g}), {"w": g})
    x5 = -np.asarray(out["w"], np.float64) / np.sqrt(max(1.0, shape[1] / shape[0]))  # (L, Din, Dout)
    for layer in range(len(SCALES)):
        g64 = g[layer].astype(np.float64)
        sigma0 = np.linalg.svd(g64, compute_uv=False) / np.linalg.norm(g64)  # X_0's, in (0, 1]
        sigma5 = np.linalg.svd(x5[layer], compute_uv=False)
        np.testing.assert_allclose(sigma5, np.sort(_p5(sigma0))[::-1], atol=2e-3, err_msg=f"layer {layer}")
        # p⁵ maps [2e-3, 1] into [0.6, 1.21]; only a singular value closer to 0 (a square Gaussian
        # matrix has one) is not lifted that far in five steps.
        lifted = sigma0 >= 2e-3
        assert lifted.all() or shape[0] == shape[1]
        assert np.sum((0.6 < sigma5) & (sigma5 < 1.21)) >= lifted.sum() >= len(sigma0) - 1


def test_a_stacked_leaf_steps_as_its_layers_would_one_by_one():
    rng = np.random.default_rng(1)
    optimizer = muon(0.1, momentum=0.95, weight_decay=0.5)
    params = {"w": (0.1 * rng.standard_normal((len(SCALES), 16, 40))).astype(np.float32)}  # (L, Din, Dout)
    layers = {f"w{i}": params["w"][i] for i in range(len(SCALES))}  # each (Din, Dout), a leaf of its own
    stacked_state, layer_state = optimizer.init(params), optimizer.init(layers)
    step = jax.jit(optimizer.update)
    for _ in range(3):
        g = _stack(rng, (16, 40))
        stacked, stacked_state = step({"w": g}, stacked_state, params)
        one_by_one, layer_state = step({f"w{i}": g[i] for i in range(len(SCALES))}, layer_state, layers)
        for i in range(len(SCALES)):
            np.testing.assert_allclose(stacked["w"][i], one_by_one[f"w{i}"], rtol=1e-5, atol=1e-7)
    sizes = [float(np.linalg.norm(stacked["w"][i])) for i in range(len(SCALES))]
    assert max(sizes) / min(sizes) < 1.5  # gradients 1e9 apart, updates of one size: normalised per layer


def _reference_muon(lr, beta, decay, params: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """Muon from the module docstring's equations in float64 for a (L, Din, Dout) stack."""
    p, m = params.astype(np.float64), np.zeros(params.shape)
    width = np.sqrt(max(1.0, params.shape[-1] / params.shape[-2]))
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        m = beta * m + (1 - beta) * g
        m_hat = beta * m / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta**t)
        x5 = np.stack([_newton_schulz(layer) for layer in m_hat])
        p = p - lr(t - 1) * (width * x5 + decay * p)
    return p


def test_steps_follow_momentum_newton_schulz_width_decay_and_the_schedule():
    rng = np.random.default_rng(2)
    lr = lambda step: 0.05 * (step + 1) / 4  # noqa: E731  (a warmup: each step its own rate)
    optimizer = muon(lr, momentum=0.8, weight_decay=0.3)
    params = {"w": (0.1 * rng.standard_normal((2, 24, 56))).astype(np.float32)}
    grads = [(s * rng.standard_normal((2, 24, 56))).astype(np.float32) for s in (1.0, 0.01, 30.0, 0.5)]
    state, step = optimizer.init(params), jax.jit(optimizer.update)
    ours = params
    for g in grads:
        updates, state = step({"w": g}, state, ours)
        ours = jax.tree.map(lambda p, u: p + u, ours, updates)
    expected = _reference_muon(lr, 0.8, 0.3, params["w"], grads)
    np.testing.assert_allclose(ours["w"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kind",
    [
        dict(),
        dict(tie_embeddings=False, positional="learned"),
        dict(mlp="swiglu", norm="rmsnorm", bias=False, qk_norm=True, positional="rope", n_kv_heads=1),
    ],
)
def test_muon_takes_the_blocks_projection_matrices_and_adamw_everything_else(kind):
    config = GPTConfig(vocab_size=64, context_length=16, d_model=32, n_layers=2, n_heads=2, **kind)
    params = flatten(jax.eval_shape(init_params, jax.random.PRNGKey(0), config))
    labels = flatten(muon_labels(params))
    assert labels.keys() == params.keys() and set(labels.values()) == {MUON, "adamw"}
    # The hidden matrices are exactly the blocks' leaves with two axes besides the layer axis.
    hidden = {n for n, x in params.items() if n.startswith("blocks.") and x.ndim == 3}
    assert {n for n, label in labels.items() if label == MUON} == hidden
    expected = {"blocks.attn.w_qkv", "blocks.attn.w_out", "blocks.mlp.w_in", "blocks.mlp.w_out"}
    assert hidden == expected | ({"blocks.mlp.w_gate"} if config.mlp == "swiglu" else set())
    adamw = {n for n, label in labels.items() if label == "adamw"}
    assert "embed.tokens" in adamw and ("head.w" in adamw) == (not config.tie_embeddings)
