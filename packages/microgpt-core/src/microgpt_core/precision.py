"""Mixed precision: the one matrix product every layer uses (`layers.matmul`), forward and backward.

    y  = x w        x and w rounded to the compute dtype c, products accumulated in float32
    dx = dy wᵀ      the backward products the same way: dy rounded to c, accumulated in float32,
    dw = xᵀ dy      returned in float32

as in Micikevicius et al. 2018, "Mixed precision training": parameters, activations between the
products and all gradients stay float32; only the inputs of each product are rounded.

The backward rule is written out as these two products (`jax.custom_vjp`) for c = bfloat16 and
float32:
  * bfloat16: JAX's own gradient of "cast to c, then multiply" multiplies the float32 dy by the
    other operand in c, a mixed product that XLA's CPU backend runs at float32 speed (half the
    bfloat16 rate where the CPU has AVX512-BF16 or AMX), and then rounds dx and dw to c on their way
    back through the casts;
  * float32: the same numbers as JAX's own gradient (tests/core/test_precision.py), which computes
    dw as (dyᵀ x)ᵀ; XLA's CPU backend runs that transposed product over copies of its operands,
    which made a float32 train step at the seed configuration about 8% slower (bench/README.md).
Forward-mode differentiation (`jax.jvp`) does not pass a `jax.custom_vjp`; reverse mode, and
gradients of gradients, do. For c = float64 (gradient checks) the product is plain `jnp.einsum` and
every derivative JAX's own.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["accumulation_dtype", "matmul"]


def accumulation_dtype(dtype: Any) -> Any:
    """float32, or wider when `dtype` is wider (float64 gradient checks)."""
    return jnp.promote_types(dtype, jnp.float32)


def matmul(spec: str, x: jax.Array, w: jax.Array, compute_dtype: Any) -> jax.Array:
    """`jnp.einsum(spec, x, w)` with both inputs in `compute_dtype` and a float32 (or wider) result;
    its gradient takes the same precision (module docstring)."""
    dtype = jnp.dtype(compute_dtype)
    if dtype == jnp.float64 or not _transposable(spec):
        return _product(spec, x, w, dtype)
    return _mixed(spec, dtype, x, w)


def _product(spec: str, a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
    return jnp.einsum(
        spec, a.astype(dtype), b.astype(dtype), preferred_element_type=accumulation_dtype(dtype)
    )


def _transposable(spec: str) -> bool:
    """Whether "xs,ws->out" has the two transposed products below: every index of each input is in
    the other input or the output, and no input repeats an index."""
    if spec.count("->") != 1 or spec.count(",") != 1:
        return False
    inputs, out = spec.replace("...", "…").split("->")
    xs, ws = inputs.split(",")
    return (
        all(len(set(s)) == len(s) for s in (xs, ws)) and set(xs) <= set(ws + out) and set(ws) <= set(xs + out)
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _mixed(spec: str, dtype: np.dtype, x: jax.Array, w: jax.Array) -> jax.Array:
    return _product(spec, x, w, dtype)


def _mixed_fwd(spec: str, dtype: np.dtype, x: jax.Array, w: jax.Array):
    # The inputs are kept rounded (half the memory); zero-size arrays carry their dtypes.
    residuals = (x.astype(dtype), w.astype(dtype), jnp.zeros(0, x.dtype), jnp.zeros(0, w.dtype))
    return _product(spec, x, w, dtype), residuals


def _mixed_bwd(spec: str, dtype: np.dtype, residuals, dy: jax.Array):
    x, w, x_dtype, w_dtype = residuals
    inputs, out = spec.split("->")
    xs, ws = inputs.split(",")
    dx = _product(f"{out},{ws}->{xs}", dy, w, dtype)  # dy wᵀ
    dw = _product(f"{xs},{out}->{ws}", x, dy, dtype)  # xᵀ dy
    return dx.astype(x_dtype.dtype), dw.astype(w_dtype.dtype)


_mixed.defvjp(_mixed_fwd, _mixed_bwd)
