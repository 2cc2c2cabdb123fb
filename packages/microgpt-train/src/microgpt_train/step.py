"""The train state and the compiled train and eval steps.

State: ``{"params", "opt_state", "step" (int32 scalar), "rng" (the run's base key data, uint32 (2,))}``.
Dropout for micro-batch a of step s uses ``fold_in(fold_in(rng, s), a)``, so the randomness depends
only on (seed, step): a resumed run draws exactly what an unbroken one draws.

One step over a global batch of B rows in A micro-batches (gradient accumulation):

    g = (1/A) Σ_a ∇θ ℓ(θ; rows a, A + a, 2A + a, ...),     θ, opt = AdamW(θ, opt, g)

Micro-batch a takes every A-th row (a strided split), so each micro-batch stays spread over all
devices of the ``data`` axis. With equal micro-batch sizes the mean of the micro-batch losses equals
the loss of the whole batch, and so does the gradient (to float rounding).

A batch of shape (B, 2, T+1) carries a loss mask m after its tokens w (chat data,
`microgpt_data.masked_packing`): the loss is the mean over the counted targets only,

    ℓ = Σ_{b,t} m[b, t+1] · nll(w[b, t+1]) / Σ_{b,t} m[b, t+1],

and each micro-batch divides its sum by the whole batch's count (over A), so the accumulated loss and
gradient are the batch's, however the counted tokens fall into micro-batches.

Speed on CPU, the same numbers (tests/train/test_step.py):
  * each micro-batch is split further, to about `CPU_MICRO_TOKENS` tokens per device
    (`micro_batches`). XLA's CPU backend allocates an executable's buffers on every call, and the
    C library hands blocks this large out as fresh pages that the kernel must fault in and zero:
    at the seed configuration, a gigabyte of them per step (bench/README.md). A scan over small
    micro-batches reuses one micro-batch's buffers, so a step touches a tenth of that memory, and
    its working set stays in the caches. Only the dropout masks differ (each micro-batch draws its
    own), so a run is reproducible on one backend;
  * the blocks run one after another (`layer_unroll`), not as a loop.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from microgpt_core import GPTConfig, cross_entropy, forward, init_params
from microgpt_core.params import Params

__all__ = [
    "CPU_MICRO_TOKENS",
    "init_state",
    "layer_unroll",
    "loss_fn",
    "make_eval_step",
    "make_train_step",
    "micro_batches",
    "split_micro_batches",
]

# Tokens per device in one micro-batch on CPU, by compute dtype: the budgets that trained fastest at
# the seed configuration (bench/micro_batches.py; bench/README.md has the measurements).
CPU_MICRO_TOKENS = {"float32": 512, "bfloat16": 1024}
# Unrolled, compile time grows with depth: past this many layers the loop wins (bench/README.md).
_UNROLL_MAX_LAYERS = 12


def layer_unroll(config: GPTConfig) -> int | bool:
    """`unroll` for `model.forward` in training and evaluation: on CPU, the blocks one after another
    (True) up to 12 layers, else the loop (1); other backends keep the loop.

    A rolled loop stores what the backward pass needs of every block into stacked buffers that XLA
    first fills with zeros, then slices, converts and transposes again in the backward loop.
    Unrolled, each block's residuals are buffers of their own, and XLA fuses those conversions and
    transposes into the operations that make them.
    """
    if jax.default_backend() != "cpu" or config.n_layers > _UNROLL_MAX_LAYERS:
        return 1
    return True


def micro_batches(
    rows: int, seq_len: int, *, grad_accum: int = 1, data_devices: int = 1, compute_dtype: str = "float32"
) -> int:
    """How many micro-batches a step of `rows` rows runs: `grad_accum`, times the smallest split of
    each that brings it to at most `CPU_MICRO_TOKENS[compute_dtype]` tokens per device on CPU (every
    micro-batch keeping a multiple of `data_devices` rows). Other backends: `grad_accum`."""
    if jax.default_backend() != "cpu":
        return grad_accum
    budget = CPU_MICRO_TOKENS.get(compute_dtype, CPU_MICRO_TOKENS["float32"])
    per_device = rows // (grad_accum * data_devices)  # rows of one device in one micro-batch
    for split in range(1, per_device + 1):
        if per_device % split == 0 and per_device // split * seq_len <= budget:
            return grad_accum * split
    return grad_accum * per_device


def loss_fn(
    params: Params, batch: jax.Array, config: GPTConfig, rng: jax.Array | None, train: bool,
    denominator: jax.Array | None = None,
) -> jax.Array:  # fmt: skip
    """Next-token cross-entropy of a (B, T+1) window batch: inputs w[:, :-1], targets w[:, 1:].

    A (B, 2, T+1) batch holds windows w and a loss mask m (module docstring): the loss is
    Σ m[:, 1:] · nll / `denominator` (default: Σ m[:, 1:], the masked mean), over counted targets only.
    """
    tokens = batch[:, 0] if batch.ndim == 3 else batch  # (B, T+1)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
    logits = forward(params, inputs, config, rng=rng, train=train, unroll=layer_unroll(config))  # (B, T, V)
    if batch.ndim == 2:
        return cross_entropy(logits, targets)
    weights = batch[:, 1, 1:]  # (B, T)
    loss = cross_entropy(logits, targets, weights)  # Σ m·nll / max(Σ m, 1)
    if denominator is None:
        return loss
    return loss * jnp.maximum(jnp.sum(weights), 1).astype(jnp.float32) / denominator


def split_micro_batches(batch: jax.Array, grad_accum: int) -> jax.Array:
    """(B, ...) -> (A, B/A, ...), micro-batch a = rows a, A + a, 2A + a, ... (a strided split)."""
    B = batch.shape[0]
    return batch.reshape(B // grad_accum, grad_accum, *batch.shape[1:]).swapaxes(0, 1)  # (A, B/A, ...)


def init_state(
    rng: jax.Array,
    config: GPTConfig,
    optimizer: optax.GradientTransformation,
    *,
    params: Params | None = None,
) -> dict:
    """A fresh train state; `rng` (a raw uint32 key) seeds init and, folded with the step, dropout.

    `params`: the weights to start from (fine-tuning, `RunConfig.init_from`) instead of
    `init_params`; the dropout key is the same either way.
    """
    init_key, run_key = jax.random.split(rng)
    if params is None:
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

    A step runs `micro_batches(...)` micro-batches: `grad_accum` of them, or more on CPU (module
    docstring), whose mean loss and gradient are the batch's.

    metrics: ``{"loss", "grad_norm"}`` float32 scalars (loss is the mean over micro-batches, before
    the update; grad_norm is the global norm of the averaged gradient, before clipping).
    """
    grad_fn = jax.value_and_grad(loss_fn)
    devices = batch_sharding.mesh.shape["data"] if batch_sharding is not None else 1

    def step(state: dict, batch: jax.Array) -> tuple[dict, dict]:
        params = state["params"]
        step_key = jax.random.fold_in(state["rng"], state["step"])
        A = micro_batches(
            batch.shape[0], batch.shape[-1] - 1, grad_accum=grad_accum, data_devices=devices,
            compute_dtype=config.compute_dtype,
        )  # fmt: skip
        micro = split_micro_batches(batch, A)  # (A, B/A, [2,] T+1)
        # A masked batch: each micro-batch's share of the batch's count, so their mean is the batch's.
        share = None if batch.ndim == 2 else jnp.maximum(jnp.sum(batch[:, 1, 1:]), 1).astype(jnp.float32) / A
        if batch_sharding is not None:
            micro = jax.lax.with_sharding_constraint(
                micro,
                jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec(None, "data")),
            )

        def accumulate(carry, inputs):
            loss_sum, grad_sum = carry
            index, rows = inputs
            loss, grads = grad_fn(params, rows, config, jax.random.fold_in(step_key, index), True, share)
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            return (loss_sum + loss, grad_sum), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        if A == 1:
            (loss, grads), _ = accumulate((jnp.zeros((), jnp.float32), zeros), (0, micro[0]))
        else:
            (loss, grads), _ = jax.lax.scan(
                accumulate, (jnp.zeros((), jnp.float32), zeros), (jnp.arange(A), micro)
            )
            loss, grads = loss / A, jax.tree.map(lambda g: g / A, grads)
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

    kwargs: dict[str, Any] = {"donate_argnums": (0,)}
    if state_sharding is not None:
        kwargs["in_shardings"] = (state_sharding, batch_sharding)
        kwargs["out_shardings"] = (state_sharding, None)
    return jax.jit(step, **kwargs)


def make_eval_step(config: GPTConfig):
    """`eval_step(params, batch) -> (sum of token losses, number of tokens)` without dropout, jitted;
    on CPU over micro-batches, as the train step (the same sums, to float rounding). A masked batch
    (B, 2, T+1) gives the sum and number of the counted targets only."""

    @jax.jit
    def eval_step(params: Params, batch: jax.Array) -> tuple[jax.Array, jax.Array]:
        A = micro_batches(batch.shape[0], batch.shape[-1] - 1, compute_dtype=config.compute_dtype)
        rows = split_micro_batches(batch, A)  # (A, B/A, [2,] T+1)
        if batch.ndim == 3:  # sums over the counted targets: denominator 1
            one = jnp.ones((), jnp.float32)
            sums = jax.lax.map(lambda micro: loss_fn(params, micro, config, None, False, one), rows)  # (A,)
            return jnp.sum(sums), jnp.sum(batch[:, 1, 1:]).astype(jnp.float32)
        losses = jax.lax.map(lambda micro: loss_fn(params, micro, config, None, False), rows)  # (A,)
        tokens = batch.shape[0] * (batch.shape[1] - 1)
        return jnp.mean(losses) * tokens, jnp.asarray(tokens, jnp.float32)

    return eval_step
