"""Muon for the blocks' weight matrices (Jordan 2024; optax.contrib's `scale_by_muon`).

Each step, for every hidden matrix W (one per layer: the stacked (L, Din, Dout) leaves are L
matrices, each orthogonalised on its own):

    m_t = β m_{t-1} + (1 - β) g_t                              momentum, m_0 = 0
    m̂_t = β m_t / (1 - β^(t+1)) + (1 - β) g_t / (1 - β^t)      Nesterov, bias-corrected
    X_0 = m̂_t / (‖m̂_t‖_F + ε)                                  ε = 1e-8
    X_{k+1} = a X_k + b (X_k X_kᵀ) X_k + c (X_k X_kᵀ)² X_k     (a, b, c) = (3.4445, -4.7750, 2.0315)
    W ← W - η_t (√max(1, Dout / Din) · X_5 + λ W)

Five steps of the quintic Newton–Schulz iteration send every singular value σ of X_0 (at most 1
after the normalisation) through p(σ) = aσ + bσ³ + cσ⁵ five times: to about 0.7-1.2, not to exactly
1 (UΣ'Vᵀ rather than UVᵀ, which trains as well and takes fewer steps). √max(1, Dout/Din) makes
the update's RMS-to-RMS norm about 1 whatever the shape (Jordan's scaling, nanochat's
`max(1, rows / cols) ** 0.5`); λ is the run's weight decay, scaled by η as AdamW's is.

`muon_labels` sends exactly the blocks' projection matrices (attention's w_qkv and w_out, the MLP's
w_gate, w_in, w_out) to Muon; token and position embeddings, an untied head, norm scales and biases
go to AdamW, as in nanochat and modded-nanogpt. w_qkv is orthogonalised as one (D, Q) matrix per
layer, queries, keys and values together.

References:
  Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
  https://kellerjordan.github.io/posts/muon/ ; modded-nanogpt, https://github.com/KellerJordan/modded-nanogpt
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers, scale_by_muon

from microgpt_core.params import Params, flatten, unflatten

__all__ = ["MUON", "MUON_MATRICES", "NS_COEFFS", "NS_STEPS", "muon", "muon_labels", "scale_by_width"]

MUON = "muon"  # the label of the parameters Muon updates; the others are labelled "adamw"
# The blocks' projection matrices, (L, Din, Dout) each: what Muon updates.
MUON_MATRICES = frozenset({"w_qkv", "w_out", "w_gate", "w_in"})
NS_COEFFS = (3.4445, -4.7750, 2.0315)  # (a, b, c) of the quintic iteration (Jordan 2024)
NS_STEPS = 5
# Every Muon leaf is a stack of matrices (..., Din, Dout): the leading axes are batch axes, so each
# layer's matrix is orthogonalised (and its update scaled) on its own.
_PER_LAYER = MuonDimensionNumbers(reduction_axis=-2, output_axis=-1)


def muon_labels(params: Params) -> Any:
    """A pytree mirroring `params`: "muon" for the blocks' projection matrices, "adamw" elsewhere
    (embeddings, an untied head, norm scales, biases)."""
    flat = flatten(params)
    return unflatten({
        name: MUON if name.startswith("blocks.") and name.rsplit(".", 1)[1] in MUON_MATRICES else "adamw"
        for name in flat
    })  # fmt: skip


def _per_layer(updates: Any) -> Any:
    """The dimension numbers of every Muon leaf (the others are optax's masked nodes, kept as they are)."""
    return jax.tree.map(lambda _: _PER_LAYER, updates)


def scale_by_width() -> optax.GradientTransformation:
    """u ↦ √max(1, Dout / Din) · u for every (..., Din, Dout) leaf (stateless)."""

    def update(updates, state, params=None):
        del params
        scale = lambda u: u * jnp.sqrt(jnp.maximum(1.0, u.shape[-1] / u.shape[-2]))  # noqa: E731
        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def muon(
    learning_rate: optax.ScalarOrSchedule, *, momentum: float, weight_decay: float
) -> optax.GradientTransformation:
    """Muon over a pytree of stacked matrices (module docstring): Nesterov momentum, five quintic
    Newton–Schulz steps per layer's matrix, Jordan's width scaling, decoupled weight decay.

    Args:
      learning_rate: η, a number or an optax schedule of the step.
      momentum: β in [0, 1).
      weight_decay: λ (multiplied by η, as in AdamW and torch.optim.Muon).
    Returns:
      A `GradientTransformation`; its state is optax's `MuonState` (count, the momentum m shaped
      like the matrices, the Newton–Schulz coefficients).
    """
    return optax.chain(
        scale_by_muon(
            ns_coeffs=NS_COEFFS,
            ns_steps=NS_STEPS,
            beta=momentum,
            nesterov=True,
            weight_dimension_numbers=_per_layer,
        ),
        scale_by_width(),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
