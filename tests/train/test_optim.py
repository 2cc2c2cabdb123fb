"""The optimiser against its equations: the schedule's warmup line and cosine curve, AdamW step by
step (bias correction, decoupled decay scaled by the learning rate, on matrices only) and global-norm
clipping, checked against a NumPy transcription of Loshchilov and Hutter (2019). With Muon, the
parameters it does not take get exactly AdamW's updates, and both parts follow the schedule
(Muon's own maths: test_muon.py)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from microgpt_core import GPTConfig, init_params
from microgpt_core.params import flatten
from microgpt_train import RunConfig, decay_mask, learning_rate_schedule, make_optimizer
from microgpt_train.muon import MUON, muon_labels

CONFIG = GPTConfig(vocab_size=64, context_length=16, d_model=16, n_layers=2, n_heads=2)


def _run(**changes) -> RunConfig:
    fields = dict(model=CONFIG, sample_tokens=4, max_steps=100, warmup_steps=10, learning_rate=1e-3)
    return RunConfig(**{**fields, **changes})


def test_warmup_is_a_line_from_zero_and_decay_a_half_cosine_to_the_floor():
    run = _run(max_steps=110, warmup_steps=10, learning_rate=2e-3, min_lr_ratio=0.25)
    lr = learning_rate_schedule(run)
    peak, floor = 2e-3, 0.25 * 2e-3
    for s in range(11):
        np.testing.assert_allclose(float(lr(s)), peak * s / 10, rtol=1e-6, atol=1e-12)
    for s in (10, 35, 60, 85, 110):  # a quarter, half, three quarters of the way through the decay
        expected = floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * (s - 10) / 100))
        np.testing.assert_allclose(float(lr(s)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(lr(60)), (peak + floor) / 2, rtol=1e-5)  # the midpoint of the cosine
    decay = [float(lr(s)) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert float(lr(500)) == pytest.approx(floor, rel=1e-5)  # past max_steps it stays at the floor


def test_no_warmup_starts_at_the_peak_and_warmup_past_the_end_never_decays():
    assert float(learning_rate_schedule(_run(warmup_steps=0))(0)) == pytest.approx(1e-3)
    lr = learning_rate_schedule(_run(max_steps=20, warmup_steps=40))
    assert float(lr(20)) == pytest.approx(0.5e-3)  # still climbing when the run ends
    assert float(lr(40)) == float(lr(80)) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "kind",
    [
        dict(),
        dict(tie_embeddings=False),
        dict(bias=False, positional="sinusoidal"),
        dict(mlp="swiglu", norm="rmsnorm"),
    ],
)
def test_decay_falls_on_the_projection_matrices_and_nothing_else(kind):
    params = jax.eval_shape(init_params, jax.random.PRNGKey(0), CONFIG.replace(**kind))
    flat, mask = flatten(params), flatten(decay_mask(params))
    assert mask.keys() == flat.keys()
    layer_axis = {name: name.startswith("blocks.") for name in flat}
    matrices = {n for n, x in flat.items() if x.ndim - layer_axis[n] == 2 and not n.startswith("embed.")}
    assert {n for n, decayed in mask.items() if decayed} == matrices
    assert all(type(v) is bool for v in mask.values())


def _reference_adamw(run: RunConfig, params: dict, grads: list[dict]) -> dict:
    """AdamW (decoupled weight decay, bias-corrected moments, eps 1e-8) after global-norm clipping,
    written from the equations in float64: the parameters after one update per gradient."""
    lr = learning_rate_schedule(run)
    mask = flatten(decay_mask(params))
    p = {n: np.asarray(x, np.float64) for n, x in flatten(params).items()}
    m = {n: np.zeros_like(x) for n, x in p.items()}
    v = {n: np.zeros_like(x) for n, x in p.items()}
    for t, g in enumerate(grads, start=1):
        g = {n: np.asarray(x, np.float64) for n, x in flatten(g).items()}
        norm = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
        if run.grad_clip > 0 and norm > run.grad_clip:
            g = {n: x * run.grad_clip / norm for n, x in g.items()}
        rate = float(lr(t - 1))  # the t-th update uses the schedule at step t - 1 (the first: step 0)
        for n in p:
            m[n] = run.beta1 * m[n] + (1 - run.beta1) * g[n]
            v[n] = run.beta2 * v[n] + (1 - run.beta2) * g[n] ** 2
            m_hat, v_hat = m[n] / (1 - run.beta1**t), v[n] / (1 - run.beta2**t)
            decay = run.weight_decay * p[n] if mask[n] else 0.0
            p[n] = p[n] - rate * (m_hat / (np.sqrt(v_hat) + 1e-8) + decay)
    return p


def _apply(run: RunConfig, params: dict, grads: list[dict]) -> dict:
    optimizer = make_optimizer(run)
    state = optimizer.init(params)

    @jax.jit
    def update(params, state, g):
        updates, state = optimizer.update(g, state, params)
        return jax.tree.map(lambda p, u: p + u, params, updates), state

    for g in grads:
        params, state = update(params, state, g)
    return {n: np.asarray(x) for n, x in flatten(params).items()}


def _random_like(config: GPTConfig, scale: float, rng: np.random.Generator) -> dict:
    """A float32 pytree shaped like the params of `config`, entries N(0, scale^2)."""
    shapes = jax.eval_shape(init_params, jax.random.PRNGKey(0), config)
    return jax.tree.map(lambda x: (scale * rng.standard_normal(x.shape)).astype(np.float32), shapes)


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_updates_follow_clipped_adamw_step_by_step(grad_clip):
    run = _run(
        max_steps=6, warmup_steps=2, learning_rate=0.05, weight_decay=0.3, beta1=0.8, beta2=0.9,
        grad_clip=grad_clip, min_lr_ratio=0.2,
    )  # fmt: skip
    config, rng = CONFIG.replace(tie_embeddings=False), np.random.default_rng(0)
    params = _random_like(config, 0.1, rng)
    # Global norms far apart (about 0.1 to 5000), so clipping at 0.5 changes the moments.
    grads = [_random_like(config, scale, rng) for scale in (30.0, 0.001, 3.0, 0.02, 50.0)]
    ours, expected = _apply(run, params, grads), _reference_adamw(run, params, grads)
    for name in expected:
        np.testing.assert_allclose(ours[name], expected[name], rtol=2e-5, atol=2e-7, err_msg=name)
    other = _reference_adamw(run.merge({"grad_clip": 0.5 - grad_clip}), params, grads)
    assert max(float(np.max(np.abs(other[n] - expected[n]))) for n in expected) > 1e-3  # clipping matters


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_with_zero_gradients_only_the_decayed_matrices_shrink_by_lr_times_decay(optimizer):
    run = _run(
        max_steps=10, warmup_steps=4, learning_rate=0.1, weight_decay=0.5, optimizer=optimizer,
        muon_learning_rate=0.04,
    )  # fmt: skip
    config = CONFIG.replace(tie_embeddings=False)
    params = _random_like(config, 0.1, np.random.default_rng(0))
    zeros = jax.tree.map(np.zeros_like, params)
    after = _apply(run, params, [zeros, zeros])  # the schedule's first two steps: 0, then a quarter
    decayed, labels = flatten(decay_mask(params)), flatten(muon_labels(params))
    for name, before in flatten(params).items():
        lr = 0.04 if optimizer == "muon" and labels[name] == MUON else 0.1
        factor = 1 - lr / 4 * 0.5 if decayed[name] else 1.0
        np.testing.assert_allclose(after[name], factor * np.asarray(before), rtol=1e-6, err_msg=name)


def test_muon_leaves_adamw_exactly_the_updates_of_every_parameter_it_does_not_take():
    config, rng = CONFIG.replace(tie_embeddings=False, mlp="swiglu"), np.random.default_rng(3)
    params = _random_like(config, 0.1, rng)
    grads = [_random_like(config, scale, rng) for scale in (30.0, 0.001, 3.0)]  # clipped, then not
    adamw, muon = (
        _apply(_run(max_steps=6, warmup_steps=1, grad_clip=0.5, optimizer=name), params, grads)
        for name in ("adamw", "muon")
    )
    labels = flatten(muon_labels(params))
    for name, label in labels.items():
        if label == MUON:
            assert np.max(np.abs(muon[name] - adamw[name])) > 1e-3, name
        else:
            np.testing.assert_allclose(muon[name], adamw[name], rtol=1e-6, atol=1e-9, err_msg=name)
