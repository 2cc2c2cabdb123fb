"""The optimiser: AdamW, or Muon plus AdamW, with warmup + cosine decay and global-norm clipping (optax).

    lr(s) = lr_max · s / W                                         for s < W   (linear warmup)
    lr(s) = lr_min + ½ (lr_max - lr_min) (1 + cos(π (s - W) / (S - W)))   for W <= s <= S

with S = max_steps, so the schedule depends only on the run config, never on where a run stopped
(a resumed run follows exactly the same learning rates). Weight decay (Loshchilov and Hutter 2019)
applies to matrices only: never to norm scales, biases or embeddings.

With ``optimizer = "muon"`` the blocks' projection matrices take Muon (`muon.py`) at
`muon_learning_rate` and everything else AdamW at `learning_rate`, as nanochat splits them; both
follow the same schedule shape (lr(s) / lr_max), after one clipping of the whole gradient.
"""

from __future__ import annotations

from typing import Any

import optax

from microgpt_core.params import Params, flatten, unflatten
from microgpt_train.config import RunConfig
from microgpt_train.muon import MUON, muon, muon_labels

__all__ = ["decay_mask", "learning_rate_schedule", "make_optimizer"]

# Parameters that take weight decay: the projection matrices of attention, the MLP and an untied head.
_DECAYED = {"w_qkv", "w_out", "w_gate", "w_in", "w"}


def decay_mask(params: Params) -> Any:
    """A pytree of bools mirroring `params`: True where AdamW applies weight decay."""
    flat = flatten(params)
    return unflatten({name: name.rsplit(".", 1)[1] in _DECAYED for name in flat})


def learning_rate_schedule(config: RunConfig, peak: float | None = None) -> optax.Schedule:
    """Linear warmup to `peak` (default `learning_rate`), then cosine decay to `min_lr_ratio * peak`
    at max_steps."""
    peak = config.learning_rate if peak is None else peak
    warmup = config.warmup_steps
    if warmup >= config.max_steps:
        return optax.linear_schedule(0.0, peak, max(warmup, 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=config.max_steps,
        end_value=peak * config.min_lr_ratio,
    )


def make_optimizer(config: RunConfig) -> optax.GradientTransformation:
    """clip_by_global_norm(grad_clip) -> AdamW(schedule, b1, b2, weight_decay on matrices only); with
    ``optimizer = "muon"`` the blocks' matrices take Muon(muon schedule, muon_momentum, weight_decay)
    instead (`optax.partition` by `muon_labels`), the rest the same AdamW."""
    parts = []
    if config.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    adamw = optax.adamw(
        learning_rate_schedule(config),
        b1=config.beta1,
        b2=config.beta2,
        weight_decay=config.weight_decay,
        mask=decay_mask,
    )
    if config.optimizer == "muon":
        matrices = muon(
            learning_rate_schedule(config, config.muon_learning_rate),
            momentum=config.muon_momentum,
            weight_decay=config.weight_decay,
        )
        adamw = optax.partition({MUON: matrices, "adamw": adamw}, muon_labels)
    parts.append(adamw)
    return optax.chain(*parts)
