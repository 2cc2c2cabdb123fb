"""The train state and the compiled train and eval steps.

State: ``{"params", "opt_state", "step" (int32 scalar), "rng" (the run's base key data, uint32 (2,))}``.
Dropout for micro-batch a of step s uses ``fold_in(fold_in(rng, s), a)``, so the randomness depends
only on (seed, step): a resumed run draws exactly what an unbroken one draws.

One step over a global batch of B rows in A micro-batches (gradient accumulation):

    g = (1/A) Σ_a ∇θ ℓ(θ; rows a, A + a, 2A + a, ...),     θ, opt = AdamW(θ, opt, g)

Micro-batch a takes every A-th row (a strided split), so each micro-batch stays spread over all
devices of the ``data`` axis. With equal micro-batch sizes the mean of the micro-batch losses equals
the loss of the whole batch, and so does the gradient (to float rounding).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from microgpt_core import GPTConfig, cross_entropy, forward, init_params
from microgpt_core.fastpath import compiler_options, layer_unroll

__all__ = ["init_state", "loss_fn", "make_eval_step", "make_train_step", "split_micro_batches"]


def loss_fn(
    params: Any, batch: jax.Array, config: GPTConfig, rng: jax.Array | None, train: bool
) -> jax.Array:
    """Next-token cross-entropy of a (B, T+1) window batch: inputs w[:, :-1], targets w[:, 1:]."""
    inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T) each
    logits = forward(params, inputs, config, rng=rng, train=train, unroll=layer_unroll(config))  # (B, T, V)
    return cross_entropy(logits, targets)


def split_micro_batches(batch: jax.Array, grad_accum: int) -> jax.Array:
    """(B, T+1) -> (A, B/A, T+1), micro-batch a = rows a, A + a, 2A + a, ... (a strided split)."""
    B = batch.shape[0]
    return batch.reshape(B // grad_accum, grad_accum, batch.shape[1]).swapaxes(0, 1)  # (A, B/A, T+1)


def init_state(rng: jax.Array, config: GPTConfig, optimizer: optax.GradientTransformation) -> dict:
    """A fresh train state; `rng` (a raw uint32 key) seeds init and, folded with the step, dropout."""
    init_key, run_key = jax.random.split(rng)
    params = init_params(init_key, config)
    return {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": run_key,
    }


def make_train_step(
    config: GPTConfig,
    optimizer: optax.GradientTransformation,
    *,
    grad_accum: int = 1,
    state_sharding: Any = None,
    batch_sharding: Any = None,
):
    """`train_step(state, batch) -> (state, metrics)`, jitted, with the state's buffers donated.

    metrics: ``{"loss", "grad_norm"}`` float32 scalars (loss is the mean over micro-batches, before
    the update; grad_norm is the global norm of the averaged gradient, before clipping).
    """
    grad_fn = jax.value_and_grad(loss_fn)

    def step(state: dict, batch: jax.Array) -> tuple[dict, dict]:
        params = state["params"]
        step_key = jax.random.fold_in(state["rng"], state["step"])
        micro = split_micro_batches(batch, grad_accum)  # (A, B/A, T+1)
        if batch_sharding is not None:
            micro = jax.lax.with_sharding_constraint(
                micro,
                jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec(None, "data")),
            )

        def accumulate(carry, inputs):
            loss_sum, grad_sum = carry
            index, rows = inputs
            loss, grads = grad_fn(params, rows, config, jax.random.fold_in(step_key, index), True)
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            return (loss_sum + loss, grad_sum), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        if grad_accum == 1:
            (loss, grads), _ = accumulate((jnp.zeros((), jnp.float32), zeros), (0, micro[0]))
        else:
            (loss, grads), _ = jax.lax.scan(
                accumulate, (jnp.zeros((), jnp.float32), zeros), (jnp.arange(grad_accum), micro)
            )
            loss, grads = loss / grad_accum, jax.tree.map(lambda g: g / grad_accum, grads)
        if state_sharding is not None:
            grads = jax.lax.with_sharding_constraint(grads, state_sharding["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    kwargs: dict[str, Any] = {"donate_argnums": (0,), "compiler_options": compiler_options(config)}
    if state_sharding is not None:
        kwargs["in_shardings"] = (state_sharding, batch_sharding)
        kwargs["out_shardings"] = (state_sharding, None)
    return jax.jit(step, **kwargs)


def make_eval_step(config: GPTConfig):
    """`eval_step(params, batch) -> (sum of token losses, number of tokens)` without dropout, jitted."""

    @functools.partial(jax.jit, compiler_options=compiler_options(config))
    def eval_step(params: Any, batch: jax.Array) -> tuple[jax.Array, jax.Array]:
        loss = loss_fn(params, batch, config, None, False)
        tokens = batch.shape[0] * (batch.shape[1] - 1)
        return loss * tokens, jnp.asarray(tokens, jnp.float32)

    return eval_step
