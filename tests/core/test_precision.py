"""precision.matmul: bfloat16 products forward and backward with float32 accumulation, and gradients
that stay float32 and close to float32 training's; float32's written-out backward is autodiff's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from microgpt_core import GPTConfig, cross_entropy, forward, init_params
from microgpt_core.params import flatten
from microgpt_core.precision import _mixed, _transposable, matmul

# Every product spec the layers use, with small shapes: linear, tied and untied unembedding, attention.
SPECS = [
    ("...i,io->...o", (2, 3, 8), (8, 5)),
    ("btd,vd->btv", (2, 3, 8), (11, 8)),
    ("btd,dv->btv", (2, 3, 8), (8, 11)),
    ("bkgtd,bksd->bkgts", (2, 2, 2, 3, 4), (2, 2, 5, 4)),
    ("bkgts,bksd->bkgtd", (2, 2, 2, 3, 5), (2, 2, 5, 4)),
]


def _inputs(x_shape, w_shape, spec):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
    return x, w, jax.random.normal(kg, jnp.einsum(spec, x, w).shape)


@pytest.mark.parametrize(("spec", "x_shape", "w_shape"), SPECS)
def test_the_written_out_backward_is_autodiffs_in_float32(spec, x_shape, w_shape):
    x, w, g = _inputs(x_shape, w_shape, spec)
    reference = jax.grad(lambda x, w: (jnp.einsum(spec, x, w) * g).sum(), argnums=(0, 1))(x, w)
    written = jax.grad(lambda x, w: (_mixed(spec, jnp.dtype("float32"), x, w) * g).sum(), argnums=(0, 1))(
        x, w
    )
    for a, b in zip(reference, written, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("spec", "x_shape", "w_shape"), SPECS)
def test_bfloat16_products_round_only_their_inputs(spec, x_shape, w_shape):
    x, w, g = _inputs(x_shape, w_shape, spec)
    y = matmul(spec, x, w, "bfloat16")
    r = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731
    np.testing.assert_allclose(np.asarray(y), np.asarray(jnp.einsum(spec, r(x), r(w))), rtol=1e-5, atol=1e-5)
    dx, dw = jax.grad(lambda x, w: (matmul(spec, x, w, "bfloat16") * g).sum(), argnums=(0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.float32
    inputs, out = spec.split("->")
    xs, ws = inputs.split(",")
    expected_dx = jnp.einsum(f"{out},{ws}->{xs}", r(g), r(w))  # dy wᵀ of the rounded inputs, in float32
    expected_dw = jnp.einsum(f"{xs},{out}->{ws}", r(x), r(g))  # xᵀ dy
    np.testing.assert_allclose(np.asarray(dx), np.asarray(expected_dx), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(expected_dw), rtol=1e-5, atol=1e-5)


def test_specs_without_two_transposed_products_keep_autodiff():
    assert all(_transposable(spec) for spec, _, _ in SPECS)
    assert not _transposable("ij,jk->i")  # k is summed inside w alone
    assert not _transposable("ii,ij->j") and not _transposable("ij->ji")
    x, w = jnp.ones((2, 3)), jnp.ones((3, 4))
    dx = jax.grad(lambda x: matmul("ij,jk->i", x, w, "bfloat16").sum())(x)
    np.testing.assert_allclose(np.asarray(dx), 4.0)


def _dots(jaxpr) -> list:
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for param in eqn.params.values():  # the bodies of scan, pjit, remat, ...
            inner = getattr(param, "jaxpr", param)
            if inner is not None and hasattr(inner, "eqns"):
                found += _dots(inner)
    return found


CONFIG = GPTConfig(
    vocab_size=97, context_length=16, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, positional="rope",
    norm="rmsnorm", mlp="swiglu", bias=False,
)  # fmt: skip


def _grads(dtype: str):
    config = CONFIG.replace(compute_dtype=dtype)
    params = init_params(jax.random.key(0), config)
    tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, config.vocab_size)
    loss = lambda p: cross_entropy(forward(p, tokens[:, :-1], config), tokens[:, 1:])  # noqa: E731
    return jax.grad(loss), params


def test_a_bfloat16_models_backward_multiplies_only_bfloat16_and_its_gradients_stay_close():
    grad_bf16, params = _grads("bfloat16")
    dots = _dots(jax.make_jaxpr(grad_bf16)(params).jaxpr)
    assert len(dots) >= 3 * 7  # each of a layer's 7 products (scanned over layers) and its 2 transposes
    for eqn in dots:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
        assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
    grad_f32, _ = _grads("float32")
    bf16, f32 = flatten(jax.jit(grad_bf16)(params)), flatten(jax.jit(grad_f32)(params))
    for name, g in f32.items():
        assert bf16[name].dtype == jnp.float32, name
        error = float(jnp.linalg.norm(bf16[name] - g) / jnp.linalg.norm(g))
        assert error < 0.03, (name, error)  # bfloat16 has 8 bits of mantissa: about 0.4% per rounding


@pytest.mark.parametrize(("spec", "x_shape", "w_shape"), SPECS)
def test_float32_takes_the_written_out_products_and_float64_jaxs_own(spec, x_shape, w_shape):
    x, w, g = _inputs(x_shape, w_shape, spec)
    grad = jax.grad(lambda x, w: (matmul(spec, x, w, "float32") * g).sum(), argnums=(0, 1))
    dots = _dots(jax.make_jaxpr(grad)(x, w).jaxpr)
    assert len(dots) == 3  # y, then dx and dw
    # dw = xᵀ dy is one product that gives w's shape, not JAX's (dyᵀ x)ᵀ, which XLA's CPU backend
    # runs through copies of its operands.
    assert dots[-1].outvars[0].aval.shape == w.shape
    reference = jax.grad(lambda x, w: (jnp.einsum(spec, x, w) * g).sum(), argnums=(0, 1))(x, w)
    for a, b in zip(reference, grad(x, w), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)
    with jax.enable_x64(True):
        x64, w64 = x.astype(jnp.float64), w.astype(jnp.float64)
        jvp = jax.jvp(lambda x: matmul(spec, x, w64, "float64"), (x64,), (jnp.ones_like(x64),))[1]
        np.testing.assert_allclose(np.asarray(jvp), np.asarray(jnp.einsum(spec, jnp.ones_like(x64), w64)))
